"""A rotation through `rotabot serve` with the openbao-database issuer: OpenBao's database
secrets engine alternates two static roles on a real PostgreSQL, and the credential is kept in
KV v2 on the same OpenBao (vault-kv2). Driven by signed Slack requests only; at each phase the
test asks PostgreSQL who may log in and OpenBao what it holds. An open session of the old user
holds the revocation gate until it closes."""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from conftest import BotConfig
from e2e_helpers import click_parent, click_step, has_button, wait_ephemeral, wait_parent
from harness.backends import bao_rules, catalog_backends, kv_labels
from harness.openbao_database import EngineWorld, database_engine
from harness.serve import catalog_head

from handlers.ids import Action

pytestmark = [pytest.mark.openbao, pytest.mark.postgres]

Bot = Any

CATALOG = catalog_head(observe="2s") + catalog_backends("{bao_url}") + """\
secrets:
  warehouse-login:
    issuer:
      kind: openbao-database
      url: {bao_url}
      token_env: VAULT_TOKEN
      mount: {mount}
      roles: [{role_a}, {role_b}]
      usage_url_env: PG_USAGE_URL
    store: {{name: bao, path: {path}}}
    consumers:
      ingest-worker:
        owner: U0BOB
        lane: dev
        reload: restart
        rollback: Restart with the previous store version pinned
"""


@dataclass
class DbWorld:
    engine: EngineWorld
    path: str
    token: str
    usage_url: str
    usage_password: str

    def stored(self, version: int, *, staged: bool = False) -> tuple[str, str]:
        path = f"rotabot-pending/{self.path}" if staged else self.path
        data = self.engine.bao.secrets.kv.v2.read_secret_version(
            path=path, version=version, raise_on_deleted_version=True)["data"]["data"]
        return str(data["username"]), str(data["password"])


@pytest.fixture
def db_world(postgres_server: Any, openbao_server: Any) -> Iterator[DbWorld]:
    engine = database_engine(openbao_server.url, openbao_server.token, postgres_server.host,
                             postgres_server.port, postgres_server.dsn)
    path = f"e2e/{uuid.uuid4().hex[:10]}/warehouse"
    # The operator's takeover: static role a's credential, read from the engine, in KV.
    user, password = engine.creds(engine.roles[0])
    engine.bao.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"username": user, "password": password})
    # The bot's token (a canary) may use this KV path and the two engine endpoints, no more.
    token = engine.token(bao_rules(path, destroy='"update"'),
                         token_id=f"canary-vault-{secrets.token_hex(6)}")
    usage_url = engine.monitor_url()
    usage_password = usage_url.split("@", 1)[0].rsplit(":", 1)[1]
    yield DbWorld(engine, path, token, usage_url, usage_password)
    engine.teardown()


@pytest.fixture
def bot_config(openbao_server: Any, db_world: DbWorld) -> BotConfig:
    w = db_world
    return BotConfig(
        catalog=CATALOG.format(bao_url=openbao_server.url, mount=w.engine.mount,
                               role_a=w.engine.roles[0], role_b=w.engine.roles[1], path=w.path),
        env={"VAULT_TOKEN": w.token, "PG_USAGE_URL": w.usage_url,
             "ROTABOT_LOG_LEVEL": "DEBUG"},
        forbid=(w.token, w.usage_password),
    )


def test_openbao_database_rotation_from_start_to_revoke(bot: Bot, db_world: DbWorld) -> None:
    w, e = db_world, db_world.engine
    role_a, role_b = e.roles
    old_user, old_password = w.stored(1)
    assert old_user == e.users[0]
    bot.state.forbid(old_password)

    bot.slack.command("U0ADMIN", "C0ROTATE", "start warehouse-login")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    wait_parent(bot, "distributing")
    # Prepared: b's fresh password from the engine, staged beside the secret.
    new_user, new_password = w.stored(1, staged=True)
    bot.state.forbid(new_password)
    assert new_user == e.users[1]
    assert (new_user, new_password) == e.creds(role_b)
    assert w.stored(1) == (old_user, old_password)  # unpinned readers still get a
    assert kv_labels(e.bao, w.path) == {"rotabot-current": "1", "rotabot-pending": "staged-1"}
    # Overlap: both users log in, each with the password rotabot handed out.
    assert e.login_ok(old_user, old_password) and e.login_ok(new_user, new_password)

    click_step(bot, "U0BOB", "ingest-worker", "Distributed")
    click_step(bot, "U0BOB", "ingest-worker", "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    # A worker that never moved: an open session as the old user.
    straggler = psycopg.connect(e.dsn(old_user, old_password, app="ingest-worker"))
    try:
        click_parent(bot, Action.SWITCH)
        wait_parent(bot, "observing")
        assert w.stored(2) == (new_user, new_password)
        assert kv_labels(e.bao, w.path) == {
            "rotabot-current": "2", "rotabot-previous": "1", "rotabot-promoted": "staged-1"}
        click_step(bot, "U0BOB", "ingest-worker", "Sign off")
        expected = f"1 session still uses {old_user} (ingest-worker, 127.0.0.1)"
        text = wait_parent(bot, f"the old credential is still in use: {expected}", timeout=20)
        assert "ready to revoke" not in text
        bot.slack.command("U0ADMIN", "C0ROTATE", "revoke R-1")
        refusal = wait_ephemeral(bot, "U0ADMIN", "cannot be revoked yet")
        assert expected in refusal.text
        assert e.login_ok(old_user, old_password)
    finally:
        straggler.close()

    # The worker moved: the evidence clears, the gate opens, revoke goes through.
    wait_parent(bot, "ready to revoke", timeout=20)
    click_parent(bot, Action.REVOKE)
    wait_parent(bot, "done: the old credential is revoked")

    # Revoked: the engine rotated a again, so its old password no longer logs in; b's does.
    assert not e.login_ok(old_user, old_password)
    assert e.login_ok(new_user, new_password)
    assert e.creds(role_b) == (new_user, new_password)
    assert e.creds(role_a)[1] != old_password
    assert kv_labels(e.bao, w.path) == {
        "rotabot-current": "2", "rotabot-revoked": "1", "rotabot-promoted": "staged-1"}

    # No password, token or usage URL reached Slack, the log or the database.
    assert bot.state.violations == []
    dump = "\n".join(sqlite3.connect(bot.db_path).iterdump())
    calls = json.dumps([c.args for c in bot.state.calls], default=str)
    log = bot.log_text()
    assert '"level": "debug"' in log  # verbose, libraries included
    for value in (old_password, new_password, e.creds(role_a)[1], w.token, w.usage_password):
        assert value not in dump and value not in log and value not in calls
