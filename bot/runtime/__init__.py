"""The process: settings, the composition root, the ASGI server, the CLI, metrics and logs."""
