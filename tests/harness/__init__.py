"""Test harness shared by tests/e2e, tests/reliability, tests/security, tests/integration and
benchmarks/ (pytest puts tests/ on sys.path, so this package imports as `harness`).

* harness.serve: `rotabot serve` as a process against the Slack stand-in (the workspace, the
  catalog's defaults, the environment, start, wait, stop) and signed ``POST /alerts`` headers.
* harness.backends: real back ends (Redis ACL users, OpenBao tokens and KV versions,
  PostgreSQL role pairs) and the local file store / local issuer registry.
* harness.loopback: small HTTP peers on loopback (consumers, providers) run in a thread.
"""
