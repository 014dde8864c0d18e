"""The bot's own back-end credentials never leave the environment: a canary test.

Every credential rotabot needs for its back ends comes from an environment variable the catalog
names: the OpenBao token (VAULT_TOKEN), the Redis admin password (in REDIS_ADMIN_URL), the
PostgreSQL admin password (in PG_ADMIN_DSN) and the header tokens of the http issuer and of a
consumer's health check. Here each is a planted canary value, valid on a real server (the
OpenBao token is created with the canary as its id). The bot is built by bot/runtime/bootstrap.py
against the Slack stand-in (which treats any call carrying a canary as a violation) and runs
rotations that fail on the way: a health check whose consumer echoes the header it was sent, a
provider that echoes the Authorization header in its 500s, a token that may not destroy
versions, an admin password changed under the bot. Then the captured DEBUG logs (every
library's, not only ours), every recorded Slack call, the SQLite dump and the text of every
exception are searched: zero hits. (The `rotabot serve` process log is searched the same way in
tests/e2e/test_backends_rotation.py, whose bot runs on canary admin credentials too.)
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sqlite3
import traceback
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import hvac
import psycopg
import pytest
from harness.backends import (
    bao_rules,
    bao_token,
    catalog_backends,
    drop_pg_roles,
    first_pg_credential,
    redis_acl_user,
)
from harness.loopback import Loopback, QuietHandler
from harness.serve import ADMIN, catalog_head
from psycopg import sql
from servers import OpenBaoServer, PostgresServer, RedisServer

from bot.domain.clock import FixedClock
from bot.domain.lifecycle import Phase, StepState
from bot.runtime.bootstrap import Container, build
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin.server import StandinServer
from bot.sandbox.slack_standin.state import StandinState

pytestmark = [pytest.mark.redis, pytest.mark.openbao, pytest.mark.postgres]

OWNER = "U0BOB"


class Echoing:
    """A careless HTTP peer on loopback: its failures echo the Authorization header it got.

    ``POST /v1/keys`` mints a provider key (the http issuer's create); ``DELETE /v1/keys/..``
    always fails with a 500 quoting the header; ``GET /healthz`` (a consumer's health check)
    answers 401 quoting the header until ``healthy`` is set."""

    def __init__(self) -> None:
        self.healthy = False
        peer = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.reply(200, {"id": f"key_{secrets.token_hex(3)}",
                                 "secret": f"sk-{secrets.token_hex(12)}"})

            def do_DELETE(self) -> None:
                self.reply(500, {"error": "internal",
                                 "debug": f"Authorization: {self.headers.get('Authorization')}"})

            def do_GET(self) -> None:
                if peer.healthy:
                    self.reply(200, {"credential_version": "2"})
                else:
                    self.reply(401, {"error": "bad credential",
                                     "got": self.headers.get("Authorization")})

        self.server = Loopback(Handler)

    @property
    def url(self) -> str:
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def echoing() -> Iterator[Echoing]:
    peer = Echoing()
    yield peer
    peer.stop()


CATALOG = (catalog_head(observe="1h", lanes=("dev",))
           + catalog_backends("{bao_url}", redis=True, pg_base_role="{base_role}") + """\
  provider:
    kind: http
    create:
      url: "{peer}/v1/keys"
      headers_env: {{Authorization: PROVIDER_AUTH}}
      key_id_path: id
      secret_path: secret
    revoke:
      url: "{peer}/v1/keys/{{key_id}}"
      headers_env: {{Authorization: PROVIDER_AUTH}}
secrets:
  cache-password:
    issuer: {{name: cache, user: {redis_user}}}
    store: {{name: bao, path: {prefix}/cache}}
    consumers:
      retriever:
        owner: {owner}
        lane: dev
        reload: restart
        rollback: pin the previous version
        health_check:
          url: "{peer}/healthz"
          headers_env: {{Authorization: HEALTH_AUTH}}
          version_field: credential_version
  warehouse-login:
    issuer: {{name: warehouse}}
    store: {{name: bao, path: {prefix}/warehouse}}
    consumers:
      ingest: {{owner: {owner}, lane: dev, reload: restart, rollback: pin the previous}}
  model-api-key:
    issuer: {{name: provider}}
    store: {{name: bao, path: {prefix}/model}}
    consumers:
      inference: {{owner: {owner}, lane: dev, reload: hot, rollback: pin the previous}}
""")


def workspace(canaries: list[str]) -> StandinState:
    state = StandinState(team_id="T0CANARY", team_name="canary")
    for uid, name in [(ADMIN, "ada"), (OWNER, "bob")]:
        state.add_user(uid, name, real_name=name.title(), is_admin=uid == ADMIN)
    state.add_channel("C0ROTATE", "rotations", members=[ADMIN, OWNER])
    state.add_channel("C0INCIDENT", "incidents", members=[ADMIN, OWNER])
    for value in canaries:
        state.forbid(value)
    return state


def exception_texts(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def test_back_end_credentials_never_reach_logs_slack_database_or_exceptions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
    redis_url: str, redis_server: RedisServer, openbao_server: OpenBaoServer,
    postgres_server: PostgresServer, echoing: Echoing,
) -> None:
    tag = secrets.token_hex(6)
    vault_token = f"canary-vault-{tag}"
    redis_password = f"canary-redis-{tag}"
    pg_password = f"canary-pg-{tag}"
    provider_auth = f"Bearer canary-provider-{tag}"
    health_auth = f"Bearer canary-health-{tag}"
    canaries = [vault_token, redis_password, pg_password, provider_auth, health_auth]
    # The bare token parts too: a leak need not keep the "Bearer " prefix.
    needles = [*canaries, f"canary-provider-{tag}", f"canary-health-{tag}"]

    # --- real credentials with canary values, on the real servers --------------------------
    root = hvac.Client(url=openbao_server.url, token=openbao_server.token)
    prefix = f"canary/{uuid.uuid4().hex[:10]}"
    # Everything on our paths except destroying versions: revocation will fail halfway.
    bao_token(root, f"canary-{tag}", bao_rules(f"{prefix}/*"), token_id=vault_token)

    redis_admin_user = f"canary_admin_{tag}"
    redis_user = f"cache_{tag}"
    redis_acl_user(redis_url, redis_admin_user, redis_password)
    redis_acl_user(redis_url, redis_user, "initial-cache-password")
    root.secrets.kv.v2.create_or_update_secret(
        path=f"{prefix}/cache",
        secret={"username": redis_user, "password": "initial-cache-password"})

    pg_admin = f"canary_admin_{tag}"
    base_role = f"cw_{tag}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
            sql.Identifier(pg_admin), sql.Literal(pg_password)))
        conn.execute(sql.SQL("GRANT pg_read_all_stats, pg_signal_backend TO {}").format(
            sql.Identifier(pg_admin)))
    pg_dsn = (f"host={postgres_server.host} port={postgres_server.port} dbname=postgres "
              f"user={pg_admin} password={pg_password} connect_timeout=10")
    root.secrets.kv.v2.create_or_update_secret(path=f"{prefix}/warehouse",
                                               secret=first_pg_credential(pg_dsn, base_role))

    # --- the bot, built by the composition root, credentials from the environment ----------
    redis_admin_url = (f"redis://{redis_admin_user}:{redis_password}@{redis_server.host}:"
                       f"{redis_server.port}/0")
    for name, value in [("VAULT_TOKEN", vault_token), ("REDIS_ADMIN_URL", redis_admin_url),
                        ("PG_ADMIN_DSN", pg_dsn), ("PROVIDER_AUTH", provider_auth),
                        ("HEALTH_AUTH", health_auth)]:
        monkeypatch.setenv(name, value)
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(CATALOG.format(
        owner=OWNER, bao_url=openbao_server.url, base_role=base_role,
        peer=echoing.url, redis_user=redis_user, prefix=prefix))
    # The catalog itself names variables only.
    assert not any(n in catalog.read_text() for n in needles)

    standin = StandinServer(workspace(canaries)).start()
    db_path = tmp_path / "rotabot.db"
    clock = FixedClock()
    caplog.set_level(logging.DEBUG)  # every logger, libraries included
    raised: list[BaseException] = []

    def attempt(action: Callable[[], object]) -> object:
        try:
            return action()
        except Exception as exc:
            raised.append(exc)
            return exc

    try:
        c: Container = build(Settings(
            catalog_path=str(catalog), database_url=f"sqlite:///{db_path}",
            slack_api_url=standin.base_url, slack_bot_token="xoxb-canary-" + tag,
            slack_signing_secret=secrets.token_hex(16)), clock=clock)
        s = c.service

        # redis-acl in OpenBao: a failing health check, then revoke fails halfway.
        r = s.start("cache-password", actor=ADMIN)
        assert r.phase is Phase.DISTRIBUTING and r.id is not None
        s.step(r.id, "retriever", StepState.DISTRIBUTED, actor=OWNER)
        refused = attempt(lambda: s.step(r.id, "retriever", StepState.VALIDATED, actor=OWNER))
        assert "health check failed" in str(refused) and "authentication" in str(refused)
        echoing.healthy = True
        s.step(r.id, "retriever", StepState.VALIDATED, actor=OWNER)
        s.switch(r.id, actor=ADMIN)
        s.step(r.id, "retriever", StepState.SIGNED_OFF, actor=OWNER)
        clock.advance(timedelta(hours=2))
        assert s.tick(r.id).phase is Phase.REVOCABLE
        failed = s.revoke(r.id, actor=ADMIN)
        assert failed.phase is Phase.FAILED and "lacks permission" in (failed.failure_reason or "")

        # postgres-role: the admin password changes under the bot; cancel fails.
        w = s.start("warehouse-login", actor=ADMIN)
        assert w.phase is Phase.DISTRIBUTING and w.id is not None
        with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(pg_admin), sql.Literal(secrets.token_hex(8))))
        cancelled = s.cancel(w.id, actor=ADMIN)
        assert cancelled.phase is Phase.FAILED

        # http issuer: a key is minted; taking it back fails with 500s that echo the header.
        m = s.start("model-api-key", actor=ADMIN)
        assert m.phase is Phase.DISTRIBUTING and m.id is not None
        gone = s.cancel(m.id, actor=ADMIN)
        assert gone.phase is Phase.FAILED and "HTTP 500" in (gone.failure_reason or "")
        attempt(lambda: s.revoke(m.id, actor=ADMIN))  # refused: not switched
        attempt(lambda: s.usage_of_old(s.get(w.id)))
        c.notifier.flush()

        # --- the search: zero hits anywhere -------------------------------------------------
        calls = standin.state.calls
        assert calls, "the bot talked to Slack"
        assert standin.state.violations == []
        places = {
            "captured logs": caplog.text + "\n".join(
                f"{r.getMessage()} {r.__dict__}" for r in caplog.records),
            "Slack calls": json.dumps([(c.method, c.args) for c in calls], default=str),
            "database": "\n".join(sqlite3.connect(db_path).iterdump()),
            "exceptions": "\n".join(exception_texts(e) for e in raised),
            "failure reasons": "\n".join(
                x.failure_reason or "" for x in (failed, cancelled, gone)),
        }
        for where, text in places.items():
            hits = [n for n in needles if n in text]
            assert hits == [], f"{where} contain {hits}"
        # The search looked at real text: the failures are in it, by name.
        assert re.search(r"secret/destroy/", places["database"])
        assert "health check" in places["exceptions"]
        assert "DEBUG" in caplog.text or any(r.levelno == logging.DEBUG for r in caplog.records)
    finally:
        standin.stop()
        drop_pg_roles(postgres_server.dsn, base_role, pg_admin)
