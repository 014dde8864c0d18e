"""Rotations through `rotabot serve` on real back ends, checked on the servers themselves.

A `redis-acl` secret stored in OpenBao (`vault-kv2`) goes from `/rotate start` to revoke by
signed Slack requests only; at each phase the test asks Redis who may AUTH and reads the
rotabot labels from OpenBao's custom_metadata with its own root client. A consumer's health
check runs on Validated against a loopback consumer stand-in. The postgres-role variant shows
usage evidence holding the gate: an open session of the old role blocks revocation.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import hvac
import psycopg
import pytest
from conftest import BotConfig
from e2e_helpers import (
    click_parent,
    click_step,
    has_button,
    prompt_for,
    wait_ephemeral,
    wait_parent,
)
from harness.backends import (
    RedisInBao,
    catalog_backends,
    drop_pg_roles,
    first_pg_credential,
    give_bot_canary_credentials,
    pg_dsn,
    pg_login_ok,
    redis_in_bao,
)
from harness.loopback import Loopback, QuietHandler
from harness.serve import catalog_head

from handlers.ids import Action

pytestmark = [pytest.mark.openbao]

# conftest.Bot, under the name the fixture gives it.
Bot = Any


class ConsumerStandin:
    """A consumer's deep health endpoint on loopback: answers what the test sets."""

    def __init__(self) -> None:
        self.status = 200
        self.body: dict[str, object] = {"status": "ok"}
        self.hits = 0
        standin = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                standin.hits += 1
                self.reply(standin.status, standin.body)

        self.server = Loopback(Handler)

    @property
    def url(self) -> str:
        return self.server.url + "/healthz/deep"

    def wait_for_hits(self, n: int, timeout: float = 20, required: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while self.hits < n:
            if time.monotonic() > deadline:
                assert not required, f"the consumer was checked {self.hits} times"
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def consumer_standin() -> Iterator[ConsumerStandin]:
    standin = ConsumerStandin()
    yield standin
    standin.stop()


# --- redis-acl in OpenBao ----------------------------------------------------------------


REDIS_CATALOG = catalog_head(observe="3s") + catalog_backends("{bao_url}", redis=True) + """\
secrets:
  cache-password:
    description: Redis password of the retrieval cache
    issuer: {{name: cache, user: {user}}}
    store: {{name: bao, path: {path}}}
    consumers:
      retriever:
        owner: U0BOB
        lane: dev
        reload: restart
        health_check: {{url: "{health_url}", version_field: credential.version}}
        rollback: Restart with the previous store version pinned
      inference-api:
        owner: U0ALICE
        lane: prod
        reload: hot
        rollback: Pin the previous store version
"""


@pytest.fixture
def redis_world(redis_url: str, redis_server: Any, openbao_server: Any) -> RedisInBao:
    # As a person put it there before rotabot: one unlabelled version, adopted as current.
    return redis_in_bao(redis_url, redis_server.host, redis_server.port, openbao_server.url,
                        openbao_server.token, f"e2e/{uuid.uuid4().hex[:10]}/cache")


@pytest.mark.redis
def test_redis_acl_secret_in_openbao_from_start_to_revoke(
    bot: Bot, redis_world: RedisInBao, consumer_standin: ConsumerStandin
) -> None:
    w = redis_world
    assert w.labels() == {}
    bot.slack.command("U0ADMIN", "C0ROTATE", "start cache-password")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    wait_parent(bot, "distributing")

    # Prepared: the new password staged beside the secret (rotabot-pending/<path>), labelled
    # pending; a normal read of the secret's path still returns the adopted current one.
    assert w.labels() == {"rotabot-current": "1", "rotabot-pending": "staged-1"}
    new_password = w.password("staged-1")
    assert w.password() == w.initial
    bot.state.forbid(new_password)
    assert new_password != w.initial
    # Overlap: both passwords authenticate on Redis.
    assert w.auth_ok(w.initial) and w.auth_ok(new_password)

    click_step(bot, "U0BOB", "retriever", "Distributed")
    # The timer's scheduled check (bot/services/health_schedule.py, interval set to a day here) runs
    # once, within a tick or two of the start: let it pass while the consumer is healthy, so
    # it cannot open an alert of its own while the consumer fails below.
    consumer_standin.wait_for_hits(1, timeout=6, required=False)
    hits = consumer_standin.hits
    # The consumer still fails on its real dependency path: Validated is refused, in words.
    consumer_standin.status = 401
    consumer_standin.body = {"error": "invalid_password"}
    prompt = prompt_for(bot, "retriever", "Validated")
    bot.slack.click("U0BOB", channel="C0ROTATE", message_ts=prompt.ts,
                    action_id=Action.STEP.value)
    refusal = wait_ephemeral(bot, "U0BOB", "health check failed")
    assert "authentication" in refusal.text
    assert "A-1 is open and blocks revocation" in refusal.text
    wait_parent(bot, "retriever` health: retriever (dev): HTTP 401")
    status = sqlite3.connect(bot.db_path).execute(
        "select state from consumer_steps where name = 'retriever'").fetchone()
    assert status == ("distributed",)

    # Fixed: the check passes and its reported version is the step's evidence.
    consumer_standin.status = 200
    consumer_standin.body = {"credential": {"version": 2}}
    click_step(bot, "U0BOB", "retriever", "Validated")
    wait_parent(bot, "retriever reports version 2")
    note = sqlite3.connect(bot.db_path).execute(
        "select state, note from consumer_steps where name = 'retriever'").fetchone()
    assert note == ("validated", "retriever reports version 2")
    # Each Validated click checked the consumer (the scheduled check may add its own).
    assert consumer_standin.hits >= hits + 2

    click_step(bot, "U0ALICE", "inference-api", "Distributed")
    click_step(bot, "U0ALICE", "inference-api", "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    click_parent(bot, Action.SWITCH)
    wait_parent(bot, "observing")
    # The switch copied it onto the secret's path as version 2 (what unpinned readers get).
    assert w.labels() == {
        "rotabot-current": "2", "rotabot-previous": "1", "rotabot-promoted": "staged-1"}
    assert w.password() == new_password
    assert w.auth_ok(w.initial) and w.auth_ok(new_password)
    # Usage evidence of the old credential is shown once switched.
    wait_parent(bot, "Redis cannot tell which password a connection used")

    for consumer, owner in [("retriever", "U0BOB"), ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Sign off")
    # The passing check resolved the alert its failing run opened: only the window remains.
    wait_parent(bot, "ready to revoke", timeout=20)
    click_parent(bot, Action.REVOKE)
    wait_parent(bot, "done: the old credential is revoked")

    # Revoked: only the new password authenticates; the old KV version is destroyed.
    assert not w.auth_ok(w.initial)
    assert w.auth_ok(new_password)
    assert w.labels() == {
        "rotabot-current": "2", "rotabot-revoked": "1", "rotabot-promoted": "staged-1"}
    versions = w.versions()
    assert versions["1"]["destroyed"] is True and versions["2"]["destroyed"] is False
    assert w.password(2) == new_password

    # No value reached Slack, the log or the database.
    assert bot.state.violations == []
    dump = "\n".join(sqlite3.connect(bot.db_path).iterdump())
    calls = json.dumps([c.args for c in bot.state.calls], default=str)
    log = bot.log_text()
    assert '"level": "debug"' in log  # the serve log was verbose, libraries included
    for value in (w.initial, new_password, w.vault_token, w.redis_admin_password):
        assert value not in dump and value not in log and value not in calls
    alerts = sqlite3.connect(bot.db_path).execute(
        "select consumer, failure_class, status from alerts").fetchall()
    assert alerts == [("retriever", "authentication", "resolved")]


# --- postgres-role in OpenBao: usage evidence at the gate --------------------------------


PG_CATALOG = (catalog_head(observe="2s") + catalog_backends("{bao_url}", pg_base_role="{base}")
              + """\
secrets:
  warehouse-login:
    issuer: {{name: warehouse}}
    store: {{name: bao, path: {path}}}
    consumers:
      ingest-worker:
        owner: U0BOB
        lane: dev
        reload: restart
        rollback: Restart with the previous store version pinned
""")


@dataclass
class PgWorld:
    base: str
    path: str
    host: str
    port: int
    bao: hvac.Client

    def dsn(self, user: str, password: str, app: str) -> str:
        return pg_dsn(self.host, self.port, user, password, app)

    def login_ok(self, user: str, password: str) -> bool:
        return pg_login_ok(self.host, self.port, user, password)

    def credential(self, version: int, *, staged: bool = False) -> tuple[str, str]:
        path = f"rotabot-pending/{self.path}" if staged else self.path
        data = self.bao.secrets.kv.v2.read_secret_version(
            path=path, version=version, raise_on_deleted_version=True)["data"]["data"]
        return str(data["username"]), str(data["password"])


@pytest.fixture
def pg_world(postgres_server: Any, openbao_server: Any) -> Iterator[PgWorld]:
    base = f"wh_{secrets.token_hex(3)}"
    first = first_pg_credential(postgres_server.dsn, base)
    bao = hvac.Client(url=openbao_server.url, token=openbao_server.token)
    path = f"e2e/{uuid.uuid4().hex[:10]}/warehouse"
    bao.secrets.kv.v2.create_or_update_secret(path=path, secret=first)
    yield PgWorld(base, path, postgres_server.host, postgres_server.port, bao)
    drop_pg_roles(postgres_server.dsn, base)


@pytest.mark.postgres
@pytest.mark.parametrize("bot_config", ["postgres-role"], indirect=True)
def test_postgres_role_open_session_of_old_role_holds_the_gate(bot: Bot, pg_world: PgWorld) -> None:
    w = pg_world
    old_user, old_password = w.credential(1)
    assert old_user == f"{w.base}_a"
    bot.state.forbid(old_password)

    bot.slack.command("U0ADMIN", "C0ROTATE", "start warehouse-login")
    wait_parent(bot, "distributing")
    new_user, new_password = w.credential(1, staged=True)
    bot.state.forbid(new_password)
    assert new_user == f"{w.base}_b"
    assert w.login_ok(old_user, old_password) and w.login_ok(new_user, new_password)

    click_step(bot, "U0BOB", "ingest-worker", "Distributed")
    click_step(bot, "U0BOB", "ingest-worker", "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    # A worker that never moved: an open session as the old role.
    straggler = psycopg.connect(w.dsn(old_user, old_password, app="ingest-worker"))
    try:
        click_parent(bot, Action.SWITCH)
        click_step(bot, "U0BOB", "ingest-worker", "Sign off")
        expected = f"1 session still uses {old_user} (ingest-worker, 127.0.0.1)"
        # After the window the gate stays closed, and the message says why.
        text = wait_parent(bot, f"the old credential is still in use: {expected}", timeout=20)
        assert "ready to revoke" not in text
        bot.slack.command("U0ADMIN", "C0ROTATE", "revoke R-1")
        refusal = wait_ephemeral(bot, "U0ADMIN", "cannot be revoked yet")
        assert expected in refusal.text
        assert w.login_ok(old_user, old_password)
    finally:
        straggler.close()

    # The worker moved: the evidence clears, the gate opens, revoke goes through.
    wait_parent(bot, "ready to revoke", timeout=20)
    click_parent(bot, Action.REVOKE)
    wait_parent(bot, "done: the old credential is revoked")
    assert not w.login_ok(old_user, old_password)
    assert w.login_ok(new_user, new_password)
    assert bot.state.violations == []
    assert old_password not in bot.log_text() and new_password not in bot.log_text()


# --- the bot each test gets ----------------------------------------------------------------


@pytest.fixture
def bot_config(request: pytest.FixtureRequest, openbao_server: Any) -> BotConfig:
    """Overrides the harness default: a catalog on these real servers (redis-acl unless the
    test asks for postgres-role), their admin credentials in the environment only."""
    if getattr(request, "param", "redis-acl") == "postgres-role":
        pg: PgWorld = request.getfixturevalue("pg_world")
        postgres_server = request.getfixturevalue("postgres_server")
        return BotConfig(
            catalog=PG_CATALOG.format(bao_url=openbao_server.url, base=pg.base, path=pg.path),
            env={"VAULT_TOKEN": openbao_server.token, "PG_ADMIN_DSN": postgres_server.dsn},
        )
    w: RedisInBao = request.getfixturevalue("redis_world")
    standin: ConsumerStandin = request.getfixturevalue("consumer_standin")
    # The bot's own credentials are canaries, valid on the servers.
    credentials = give_bot_canary_credentials(w, request.getfixturevalue("redis_url"), "e2e")
    return BotConfig(
        catalog=REDIS_CATALOG.format(bao_url=openbao_server.url, user=w.user, path=w.path,
                                     health_url=standin.url),
        env={**credentials, "ROTABOT_LOG_LEVEL": "DEBUG", "ROTABOT_HEALTH_INTERVAL": "24h"},
        forbid=(w.initial, w.vault_token, w.redis_admin_password),
    )
