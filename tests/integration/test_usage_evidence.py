"""Who still uses the old credential, through the composition root on real back ends.

A redis-acl secret in two-user mode, stored in an OpenBao whose file audit device logs every
read: after the switch a consumer the catalog maps (by application_name) and two strangers (a
Redis connection with no name, a Vault token reading the old version) still use the old
credential. The gate names all three and refuses revocation; the timer tells the thread about
each unmapped consumer once; App Home and the rotation message list them; when they move away,
the gate opens.
"""

from __future__ import annotations

import json
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import pytest
import redis
from harness.backends import redis_acl_user
from harness.serve import ADMIN, catalog_head
from servers import OpenBaoServer, RedisServer
from slack_sdk import WebClient

from bot.domain.clock import FixedClock
from bot.domain.errors import GateClosed
from bot.domain.lifecycle import Phase, StepState
from bot.runtime.bootstrap import build
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin.server import StandinServer
from bot.sandbox.slack_standin.state import StandinState
from handlers import blocks
from handlers.home import publish_home

pytestmark = [pytest.mark.redis, pytest.mark.openbao]

OWNER = "U0BOB"
INITIAL = "initial-cache-password-0123456789"

CATALOG = catalog_head(observe="1h", lanes=("dev",)) + """\
stores:
  bao:
    kind: vault-kv2
    url: {bao_url}
    token_env: VAULT_TOKEN
    audit_log: {audit_log}
issuers:
  cache:
    kind: redis-acl
    url_env: REDIS_ADMIN_URL
    users: [{user_a}, {user_b}]
secrets:
  cache-password:
    issuer: {{name: cache}}
    store: {{name: bao, path: {path}}}
    consumers:
      retriever:
        owner: {owner}
        lane: dev
        reload: restart
        identity: {{application_name: retriever}}
"""


def workspace() -> StandinState:
    state = StandinState(team_id="T0USAGE", team_name="usage")
    for uid, name in [(ADMIN, "ada"), (OWNER, "bob")]:
        state.add_user(uid, name, real_name=name.title(), is_admin=uid == ADMIN)
    state.add_channel("C0ROTATE", "rotations", members=[ADMIN, OWNER])
    state.add_channel("C0INCIDENT", "incidents", members=[ADMIN, OWNER])
    state.forbid(INITIAL)
    return state


def texts(standin: StandinServer, method: str) -> list[str]:
    return [json.dumps(c.args) for c in standin.state.calls_to(method)]


def test_old_credential_users_are_named_mapped_or_not_and_hold_the_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
    redis_server: RedisServer, openbao_audited: OpenBaoServer,
) -> None:
    tag = secrets.token_hex(3)
    user_a, user_b = f"cache_{tag}_a", f"cache_{tag}_b"
    redis_acl_user(redis_url, user_a, INITIAL)
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("ACL", "SETUSER", user_b, "on", "~*", "+@all")
    admin.close()
    root = hvac.Client(url=openbao_audited.url, token=openbao_audited.token)
    path = f"usage/{uuid.uuid4().hex[:10]}/cache"
    root.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"username": user_a, "password": INITIAL})
    root.sys.create_or_update_policy(
        name="usage-read", policy=f'path "secret/data/{path}" {{ capabilities = ["read"] }}')
    cron = root.auth.token.create(policies=["usage-read"], display_name="cron", ttl="10m")["auth"]

    monkeypatch.setenv("VAULT_TOKEN", openbao_audited.token)
    monkeypatch.setenv("REDIS_ADMIN_URL", redis_url)
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(CATALOG.format(
        bao_url=openbao_audited.url, audit_log=openbao_audited.audit_log, user_a=user_a,
        user_b=user_b, path=path, owner=OWNER))
    standin = StandinServer(workspace()).start()
    clock = FixedClock(datetime.now(UTC))
    c = build(Settings(
        catalog_path=str(catalog), database_url=f"sqlite:///{tmp_path / 'rotabot.db'}",
        slack_api_url=standin.base_url, slack_bot_token="xoxb-usage",
        slack_signing_secret=secrets.token_hex(16)), clock=clock)
    s = c.service
    conns: list[redis.Redis] = []
    try:
        r = s.start("cache-password", actor=ADMIN)
        assert r.id is not None and r.new_key_id == user_b and r.old_key_id == user_a
        s.step(r.id, "retriever", StepState.DISTRIBUTED, actor=OWNER)
        s.step(r.id, "retriever", StepState.VALIDATED, actor=OWNER)
        s.switch(r.id, actor=ADMIN)
        s.step(r.id, "retriever", StepState.SIGNED_OFF, actor=OWNER)

        # After the switch: the mapped consumer and a nameless client stay on the old user,
        # and a cron job's token reads the old version of the secret.
        for name in ("retriever", None):
            conn = redis.Redis(host=redis_server.host, port=redis_server.port, username=user_a,
                               password=INITIAL, client_name=name, retry=None)
            conn.ping()
            conns.append(conn)
        reader = hvac.Client(url=openbao_audited.url, token=cron["client_token"])
        reader.secrets.kv.v2.read_secret_version(path=path, version=1,
                                                 raise_on_deleted_version=True)
        clock.advance(timedelta(hours=1, minutes=4))

        gate = s.gate(r.id)
        assert not gate.open
        [in_use] = [u for u in gate.unmet if u.startswith("the old credential is still in use")]
        mapped = ("connected now by retriever (127.0.0.1, application_name retriever, "
                  f"user {user_a})")
        assert mapped in in_use
        assert f"connected now by 127.0.0.1, user {user_a} (not in the catalog)" in in_use
        assert (f"by 127.0.0.1, Vault accessor {cron['accessor']}, user token-cron "
                "(not in the catalog), 1 read of version 1") in in_use
        assert "used 1h 3m ago by 127.0.0.1, Vault accessor" in in_use  # read seconds after t0
        with pytest.raises(GateClosed) as refused:
            s.revoke(r.id, actor=ADMIN)
        assert f"Vault accessor {cron['accessor']}" in str(refused.value)
        assert s.get(r.id).phase is Phase.OBSERVING

        # The thread hears about each unmapped consumer once, however often the timer runs.
        c.timers.run_once()
        clock.advance(timedelta(minutes=2))  # past UNMAPPED_CHECK_EVERY: it looks again
        c.timers.run_once()
        notes = [t for t in texts(standin, "chat.postMessage") if "unmapped consumer" in t]
        assert len(notes) == 2, notes
        assert any(f"Vault accessor {cron['accessor']}" in n for n in notes)
        assert any(f"unmapped consumer 127.0.0.1, user {user_a} (connected now)" in n
                   for n in notes)

        # App Home and the rotation message (`/rotate status`) list them too.
        publish_home(c.deps, WebClient(token="xoxb-usage", base_url=standin.base_url), ADMIN)
        [home] = texts(standin, "views.publish")
        assert "Unmapped consumers" in home and f"Vault accessor {cron['accessor']}" in home
        rotation = s.get(r.id)
        _, body = blocks.rotation_message(
            rotation, s.gate_of(rotation), c.health.evidence(rotation))
        message = json.dumps([b.to_dict() for b in body])
        assert "old credential still in use" in message
        assert message.count(":eyes: unmapped consumer") == 2

        # Everyone moved: the connections close; the cron job reads the new version.
        for conn in conns:
            conn.close()
        reader.secrets.kv.v2.read_secret_version(path=path, raise_on_deleted_version=True)
        gate = s.gate(r.id)
        assert gate.open, gate.unmet
        assert gate.usage.startswith(f"usage evidence: no connections authenticated as {user_a}")
        assert s.revoke(r.id, actor=ADMIN).phase is Phase.REVOKED
        c.notifier.flush()
        assert standin.state.violations == []
    finally:
        for conn in conns:
            conn.close()
        standin.stop()
