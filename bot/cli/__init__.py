"""The `rotabot` command: serve, sandbox, catalog, db and audit. It sits above the runtime and
the sandbox, the two things it starts."""
