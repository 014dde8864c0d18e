"""The rotation domain: plain Python, no Slack, SQL, HTTP or Vault; imports only itself."""
