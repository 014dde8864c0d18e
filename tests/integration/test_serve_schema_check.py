"""`rotabot serve` on PostgreSQL refuses to start on a database not at its schema, saying what
to run, instead of failing request by request (tables missing, or a migration not applied)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from storage.migrate import head_revision, schema_problem, upgrade

CATALOG = """\
version: 1
defaults: {channel: C0ROTATE, admins: [U0SECOPS]}
stores:
  files: {kind: file, path: SECRETS}
secrets:
  model-api-key:
    issuer: {kind: local}
    store: {name: files, path: ai/model-api-key}
    consumers:
      web: {owner: U0WEB, lane: prod, reload: hot}
"""


def serve(url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(CATALOG.replace("SECRETS", str(tmp_path / "secrets")))
    env = {
        **os.environ,
        "ROTABOT_CATALOG": str(catalog),
        "DATABASE_URL": url,
        "SLACK_BOT_TOKEN": "xoxb-schema-check",
        "SLACK_SIGNING_SECRET": "0123456789abcdef0123456789abcdef",
        "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never reached: it stops before
    }
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "serve", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )


def test_serve_refuses_an_unmigrated_postgres_database(postgres_url: str, tmp_path: Path) -> None:
    assert schema_problem(postgres_url) is not None
    done = serve(postgres_url, tmp_path)
    assert done.returncode == 2
    assert "run `rotabot db upgrade` first" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_refuses_a_database_one_migration_behind(postgres_url: str, tmp_path: Path) -> None:
    upgrade(postgres_url, "0003")
    problem = schema_problem(postgres_url)
    assert problem is not None and f"needs {head_revision()}" in problem
    done = serve(postgres_url, tmp_path)
    assert done.returncode == 2 and "rotabot db upgrade" in done.stderr
    upgrade(postgres_url)
    assert schema_problem(postgres_url) is None
