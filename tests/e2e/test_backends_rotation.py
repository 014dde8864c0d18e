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
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import hvac
import psycopg
import pytest
import redis
from conftest import BotConfig
from e2e_helpers import parent_message, prompt_for, wait_ephemeral
from psycopg import sql

from adapters.postgres_role import PostgresRoleIssuer
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

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin.hits += 1
                payload = json.dumps(standin.body).encode()
                self.send_response(standin.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/healthz/deep"

    def wait_for_hits(self, n: int, timeout: float = 20, required: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while self.hits < n:
            if time.monotonic() > deadline:
                assert not required, f"the consumer was checked {self.hits} times"
                return
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def consumer_standin() -> Iterator[ConsumerStandin]:
    standin = ConsumerStandin()
    yield standin
    standin.stop()


def click_step(bot: Bot, user: str, consumer: str, label: str) -> None:
    prompt = prompt_for(bot, consumer, label)
    reply = bot.slack.click(user, channel="C0ROTATE", message_ts=prompt.ts,
                            action_id=Action.STEP.value)
    assert reply.status == 200
    bot.state.wait_for(lambda s: (m := s.find_message("C0ROTATE", prompt.ts)) is not None
                       and " by " in m.text and not any(b.get("type") == "actions"
                                                        for b in m.blocks), 10)


def click_parent(bot: Bot, action: Action) -> None:
    parent = parent_message(bot)
    reply = bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent.ts,
                            action_id=action.value)
    assert reply.status == 200


def wait_parent(bot: Bot, needle: str, timeout: float = 15) -> str:
    def found(_: object) -> str | None:
        blob = json.dumps(parent_message(bot).blocks) + parent_message(bot).text
        return blob if needle in blob else None
    return bot.state.wait_for(found, timeout)


def has_button(bot: Bot, action: Action) -> bool:
    return any(e.get("action_id") == action.value for b in parent_message(bot).blocks
               for e in b.get("elements", []))


# --- redis-acl in OpenBao ----------------------------------------------------------------


@dataclass
class RedisWorld:
    user: str
    path: str
    initial: str
    redis_host: str
    redis_port: int
    bao: hvac.Client
    vault_token: str = ""  # the bot's credentials (canaries), set by bot_config
    redis_admin_password: str = ""

    def auth_ok(self, password: str) -> bool:
        client = redis.Redis(host=self.redis_host, port=self.redis_port, username=self.user,
                             password=password, socket_timeout=5)
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            return False
        finally:
            client.close()

    def labels(self) -> dict[str, str]:
        meta = self.bao.secrets.kv.v2.read_secret_metadata(path=self.path)["data"]
        return {k: v for k, v in (meta["custom_metadata"] or {}).items()
                if k.startswith("rotabot-")}

    def versions(self) -> dict[str, Any]:
        data: dict[str, Any] = self.bao.secrets.kv.v2.read_secret_metadata(
            path=self.path)["data"]["versions"]
        return data

    def password(self, version: int) -> str:
        data = self.bao.secrets.kv.v2.read_secret_version(
            path=self.path, version=version, raise_on_deleted_version=True)["data"]["data"]
        assert data["username"] == self.user
        return str(data["password"])


REDIS_CATALOG = """
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0ADMIN]
  lanes: [dev, staging, prod]
  overlap: 24h
  observe: 3s
stores:
  bao:
    kind: vault-kv2
    url: {bao_url}
    mount: secret
    token_env: VAULT_TOKEN
issuers:
  cache:
    kind: redis-acl
    url_env: REDIS_ADMIN_URL
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
def redis_world(redis_url: str, redis_server: Any, openbao_server: Any) -> RedisWorld:
    user = f"cache_{secrets.token_hex(3)}"
    initial = "initial-" + secrets.token_hex(12)
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", user, "on", f">{initial}", "~*", "+@all")
    admin.close()
    bao = hvac.Client(url=openbao_server.url, token=openbao_server.token)
    path = f"e2e/{uuid.uuid4().hex[:10]}/cache"
    # As a person put it there before rotabot: one unlabelled version, adopted as current.
    bao.secrets.kv.v2.create_or_update_secret(path=path,
                                              secret={"username": user, "password": initial})
    return RedisWorld(user, path, initial, redis_server.host, redis_server.port, bao)


@pytest.mark.redis
def test_redis_acl_secret_in_openbao_from_start_to_revoke(
    bot: Bot, redis_world: RedisWorld, consumer_standin: ConsumerStandin
) -> None:
    w = redis_world
    assert w.labels() == {}
    bot.slack.command("U0ADMIN", "C0ROTATE", "start cache-password")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    wait_parent(bot, "distributing")

    # Prepared: a new KV version written with cas, labelled pending beside the adopted one.
    assert w.labels() == {"rotabot-current": "1", "rotabot-pending": "2"}
    new_password = w.password(2)
    bot.state.forbid(new_password)
    assert new_password != w.initial
    # Overlap: both passwords authenticate on Redis.
    assert w.auth_ok(w.initial) and w.auth_ok(new_password)

    click_step(bot, "U0BOB", "retriever", "Distributed")
    # The timer's scheduled check (bot/health_schedule.py, interval set to a day here) runs
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
    assert w.labels() == {"rotabot-current": "2", "rotabot-previous": "1"}
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
    assert w.labels() == {"rotabot-current": "2", "rotabot-revoked": "1"}
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


PG_CATALOG = """
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0ADMIN]
  lanes: [dev, staging, prod]
  overlap: 24h
  observe: 2s
stores:
  bao:
    kind: vault-kv2
    url: {bao_url}
    mount: secret
    token_env: VAULT_TOKEN
issuers:
  warehouse:
    kind: postgres-role
    url_env: PG_ADMIN_DSN
    base_role: {base}
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
"""


@dataclass
class PgWorld:
    base: str
    path: str
    host: str
    port: int
    bao: hvac.Client

    def dsn(self, user: str, password: str, app: str = "e2e") -> str:
        return (f"host={self.host} port={self.port} dbname=postgres user={user} "
                f"password={password} application_name={app} connect_timeout=10")

    def login_ok(self, user: str, password: str) -> bool:
        try:
            with psycopg.connect(self.dsn(user, password)) as conn:
                return conn.execute("SELECT current_user").fetchone() == (user,)
        except psycopg.OperationalError:
            return False

    def credential(self, version: int) -> tuple[str, str]:
        data = self.bao.secrets.kv.v2.read_secret_version(
            path=self.path, version=version, raise_on_deleted_version=True)["data"]["data"]
        return str(data["username"]), str(data["password"])


@pytest.fixture
def pg_world(postgres_server: Any, openbao_server: Any) -> Iterator[PgWorld]:
    base = f"wh_{secrets.token_hex(3)}"
    issuer = PostgresRoleIssuer(postgres_server.dsn, base)
    issuer.ensure_roles()
    first = issuer.mint(None)  # app_a, as an operator's one-time takeover would
    assert first.material is not None
    bao = hvac.Client(url=openbao_server.url, token=openbao_server.token)
    path = f"e2e/{uuid.uuid4().hex[:10]}/warehouse"
    bao.secrets.kv.v2.create_or_update_secret(path=path, secret=first.material.reveal())
    yield PgWorld(base, path, postgres_server.host, postgres_server.port, bao)
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        for role in (f"{base}_a", f"{base}_b"):
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = %s", (role,))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}, {}, {}").format(
            sql.Identifier(f"{base}_a"), sql.Identifier(f"{base}_b"), sql.Identifier(base)))


@pytest.mark.postgres
@pytest.mark.parametrize("bot_config", ["postgres-role"], indirect=True)
def test_postgres_role_open_session_of_old_role_holds_the_gate(bot: Bot, pg_world: PgWorld) -> None:
    w = pg_world
    old_user, old_password = w.credential(1)
    assert old_user == f"{w.base}_a"
    bot.state.forbid(old_password)

    bot.slack.command("U0ADMIN", "C0ROTATE", "start warehouse-login")
    wait_parent(bot, "distributing")
    new_user, new_password = w.credential(2)
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
    w: RedisWorld = request.getfixturevalue("redis_world")
    standin: ConsumerStandin = request.getfixturevalue("consumer_standin")
    redis_server = request.getfixturevalue("redis_server")
    # The bot's own credentials are canaries, valid on the servers: an OpenBao token created
    # with the canary as its id, a Redis admin user with the canary as its password.
    tag = secrets.token_hex(6)
    w.vault_token, w.redis_admin_password = f"canary-vault-{tag}", f"canary-redis-{tag}"
    policy = f"e2e-{tag}"
    w.bao.sys.create_or_update_policy(name=policy, policy=(
        'path "secret/data/e2e/*" { capabilities = ["create", "read", "update"] }\n'
        'path "secret/metadata/e2e/*" { capabilities = ["create", "read", "update"] }\n'
        'path "secret/destroy/e2e/*" { capabilities = ["update"] }\n'))
    w.bao.auth.token.create(id=w.vault_token, policies=[policy], ttl="30m")
    admin = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    admin.execute_command("ACL", "SETUSER", f"rotabot_{tag}", "on",
                          f">{w.redis_admin_password}", "~*", "+@all")
    admin.close()
    return BotConfig(
        catalog=REDIS_CATALOG.format(bao_url=openbao_server.url, user=w.user, path=w.path,
                                     health_url=standin.url),
        env={"VAULT_TOKEN": w.vault_token,
             "REDIS_ADMIN_URL": f"redis://rotabot_{tag}:{w.redis_admin_password}@"
                                f"{redis_server.host}:{redis_server.port}/0",
             "ROTABOT_LOG_LEVEL": "DEBUG", "ROTABOT_HEALTH_INTERVAL": "24h"},
        forbid=(w.initial, w.vault_token, w.redis_admin_password),
    )
