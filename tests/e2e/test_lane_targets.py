"""Lanes for real, through `rotabot serve` and signed Slack requests: a redis-acl secret stored
in OpenBao, with distribution targets on OpenBao per lane. The test reads the servers with its
own root client, as a consumer would (an unpinned KV read):

- while dev validates, the secret's path and prod's target still give the old password; dev's
  target has the new one only once dev's turn opened (and its reload hook was called, signed);
- after the switch the secret's path gives the new one; a rollback writes the old one back to
  the secret and to every target written;
- a target the bot may not write keeps its lane closed, says which target and why, and the
  admin's Resume opens it once the policy is fixed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hvac
import pytest
from conftest import BotConfig
from e2e_helpers import (
    click_parent,
    click_step,
    has_button,
    parent_message,
    prompt_for,
    wait_parent,
)
from harness.backends import (
    RedisInBao,
    bao_rules,
    catalog_backends,
    give_bot_canary_credentials,
    redis_in_bao,
)
from harness.loopback import Loopback, QuietHandler
from harness.messages import asks
from harness.serve import catalog_head

from adapters.reload_hook import verify_signature
from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action

pytestmark = [pytest.mark.openbao, pytest.mark.redis]

Bot = Any
HOOK_KEY = "hook-signing-key-" + uuid.uuid4().hex

CATALOG = catalog_head(observe="1h", lanes=("dev", "prod")) + catalog_backends(
    "{bao_url}", redis=True) + """\
secrets:
  cache-password:
    issuer: {{name: cache, user: {user}}}
    store: {{name: bao, path: {path}}}
    targets:
      dev:
        - kind: vault-kv2
          store: bao
          path: {dev_path}
          reload: {{url: "{hook_url}/deploy/retriever", signing_key_env: RELOAD_HOOK_KEY}}
      prod:
        - {{kind: vault-kv2, store: bao, path: {prod_path}}}
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: restart}}
      inference-api: {{owner: U0ALICE, lane: prod, reload: hot}}
"""


@dataclass
class HookReceiver:
    """A deploy endpoint on loopback that records each call and checks its signature."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Loopback:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify_signature(
                    HOOK_KEY.encode(), self.headers.get("X-Rotabot-Request-Timestamp", ""),
                    body, self.headers.get("X-Rotabot-Signature", ""), now=time.time())
                with receiver.lock:
                    receiver.calls.append({"path": self.path, "signed": ok,
                                           "body": json.loads(body)})
                self.reply(202 if ok else 401, {"queued": ok})

        return Loopback(Handler)


@dataclass
class Lanes:
    w: RedisInBao
    dev_path: str
    prod_path: str
    hooks: HookReceiver

    def unpinned(self, path: str) -> str:
        """What a consumer reading `path` the normal way gets (Vault Agent, ESO, a restart)."""
        data = self.w.bao.secrets.kv.v2.read_secret_version(
            path=path, raise_on_deleted_version=True)["data"]["data"]
        return str(data["password"])


@pytest.fixture
def hooks() -> Iterator[tuple[HookReceiver, Loopback]]:
    receiver = HookReceiver()
    server = receiver.start()
    yield receiver, server
    server.stop()


@pytest.fixture
def lanes(redis_url: str, redis_server: Any, openbao_server: Any,
          hooks: tuple[HookReceiver, Loopback]) -> Lanes:
    base = f"e2e/{uuid.uuid4().hex[:10]}"
    w = redis_in_bao(redis_url, redis_server.host, redis_server.port, openbao_server.url,
                     openbao_server.token, f"{base}/cache")
    world = Lanes(w, f"{base}/dev/cache", f"{base}/prod/cache", hooks[0])
    # Before rotabot: every lane's consumers read the current password where they read it.
    for path in (world.dev_path, world.prod_path):
        w.bao.secrets.kv.v2.create_or_update_secret(
            path=path, secret={"username": w.user, "password": w.initial})
    return world


def bot_config_for(request: pytest.FixtureRequest, prod_path: str | None = None) -> BotConfig:
    world: Lanes = request.getfixturevalue("lanes")
    _, hook_server = request.getfixturevalue("hooks")
    w = world.w
    credentials = give_bot_canary_credentials(w, request.getfixturevalue("redis_url"), "e2e")
    return BotConfig(
        catalog=CATALOG.format(
            bao_url=request.getfixturevalue("openbao_server").url, user=w.user, path=w.path,
            dev_path=world.dev_path, prod_path=prod_path or world.prod_path,
            hook_url=hook_server.url),
        env={**credentials, "RELOAD_HOOK_KEY": HOOK_KEY},
        forbid=(w.initial, w.vault_token, w.redis_admin_password, HOOK_KEY),
    )


@pytest.fixture
def bot_config(request: pytest.FixtureRequest) -> BotConfig:
    if getattr(request, "param", None) == "locked-prod":
        return bot_config_for(request, request.getfixturevalue("forbidden_prod"))
    return bot_config_for(request)


def thread(bot: Bot) -> list[Message]:
    return bot.state.thread("C0ROTATE", parent_message(bot).ts)


def receipt(bot: Bot, needle: str) -> Message:
    return bot.state.wait_for(
        lambda s: next((m for m in thread(bot) if needle in m.text), None), 15)


def asked(bot: Bot, consumer: str) -> bool:
    """Has `consumer`'s owner been asked for Distributed in the thread?"""
    return any(asks(m, consumer, "Distributed") for m in thread(bot))


def test_each_lane_gets_the_new_credential_on_its_turn_and_rollback_restores_all(
    bot: Bot, lanes: Lanes
) -> None:
    w = lanes.w
    bot.slack.command("U0ADMIN", "C0ROTATE", "start cache-password")
    opened = receipt(bot, "wrote the new credential where the dev lane's consumers read it")
    new = w.password("staged-1")
    bot.state.forbid(new)

    # Dev's turn: its target has the new password, written as a new KV version there...
    assert lanes.unpinned(lanes.dev_path) == new
    assert f"`vault-kv2 {lanes.dev_path}`: version 2" in opened.text
    # ... its reload hook was called once, signed, with references only ...
    assert [(c["path"], c["signed"]) for c in lanes.hooks.calls] == [("/deploy/retriever", True)]
    call = lanes.hooks.calls[0]["body"]
    assert (call["secret"], call["lane"], call["version"]) == ("cache-password", "dev", "2")
    assert "reload hook: POST http://127.0.0.1:" in opened.text
    assert "/deploy/retriever -&gt; 202" in opened.text  # mrkdwn-escaped "->"
    # ... while the secret's own path and prod's target still give the old one, and the new
    # password already works on Redis (the overlap).
    assert lanes.unpinned(w.path) == w.initial
    assert lanes.unpinned(lanes.prod_path) == w.initial
    assert w.auth_ok(new) and w.auth_ok(w.initial)
    assert not asked(bot, "inference-api")  # prod's owner is not asked yet
    # Dev's owner is told where rotabot put it: what is left is the consumer's reload.
    prompt = prompt_for(bot, "retriever", "Distributed")
    assert f"rotabot wrote the new credential to `vault-kv2 {lanes.dev_path}`" in prompt.text

    click_step(bot, "U0BOB", "retriever", "Distributed")
    click_step(bot, "U0BOB", "retriever", "Validated")

    # Prod's turn: now its target has the new password too; the secret still the old one.
    receipt(bot, "wrote the new credential where the prod lane's consumers read it")
    assert lanes.unpinned(lanes.prod_path) == new
    assert lanes.unpinned(w.path) == w.initial
    click_step(bot, "U0ALICE", "inference-api", "Distributed")
    click_step(bot, "U0ALICE", "inference-api", "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    click_parent(bot, Action.SWITCH)
    wait_parent(bot, "observing")
    assert lanes.unpinned(w.path) == new

    # Rollback: the old password everywhere it was replaced, each as a new version.
    click_parent(bot, Action.ROLLBACK)
    modal = bot.state.wait_for(lambda s: next(iter(s.open_views("U0ADMIN")), None), 10)
    bot.slack.submit_view("U0ADMIN", modal.id,
                          {"new_credential": "revoke", "reason": "prod 401s after the switch"})
    told = receipt(bot, "rolled back R-1")
    assert "Targets given the previous credential back" in told.text
    assert f"`vault-kv2 {lanes.dev_path}`: version 3" in told.text
    assert f"`vault-kv2 {lanes.prod_path}`: version 3" in told.text
    for path in (w.path, lanes.dev_path, lanes.prod_path):
        assert lanes.unpinned(path) == w.initial
    assert w.auth_ok(w.initial) and not w.auth_ok(new)
    assert [c["body"]["lane"] for c in lanes.hooks.calls] == ["dev", "rollback"]

    # Nothing secret anywhere: Slack (the stand-in refuses forbidden values), log, database.
    assert bot.state.violations == []
    dump = "\n".join(sqlite3.connect(bot.db_path).iterdump())
    log = bot.log_text()
    for value in (w.initial, new, w.vault_token, HOOK_KEY):
        assert value not in dump and value not in log
    assert not any(value in json.dumps(c) for c in lanes.hooks.calls for value in (w.initial, new))


@pytest.fixture
def forbidden_prod(request: pytest.FixtureRequest) -> str:
    # Outside the bot token's scope (e2e/*): the bot may not write there.
    lanes: Lanes = request.getfixturevalue("lanes")
    path = f"locked/{uuid.uuid4().hex[:10]}/prod/cache"
    lanes.w.bao.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"username": lanes.w.user, "password": lanes.w.initial})
    lanes.prod_path = path
    return path


@pytest.mark.parametrize("bot_config", ["locked-prod"], indirect=True)
def test_a_target_the_bot_may_not_write_keeps_its_lane_closed_until_resumed(
    bot: Bot, lanes: Lanes
) -> None:
    w = lanes.w
    bot.slack.command("U0ADMIN", "C0ROTATE", "start cache-password")
    receipt(bot, "wrote the new credential where the dev lane's consumers read it")
    click_step(bot, "U0BOB", "retriever", "Distributed")
    click_step(bot, "U0BOB", "retriever", "Validated")

    paused = receipt(bot, "R-1 is paused")
    assert "opening the prod lane failed" in paused.text
    assert f"vault-kv2 {lanes.prod_path}" in paused.text
    assert "StorePermissionDenied" in paused.text
    assert "Its consumers were not asked and nothing else changed" in paused.text
    blob = wait_parent(bot, "opening the prod lane failed")
    assert "StorePermissionDenied" in blob
    assert lanes.unpinned(lanes.prod_path) == w.initial
    assert not asked(bot, "inference-api")

    # An operator lets the bot write prod's path; Resume opens the lane.
    token = hvac.Client(url=w.bao.url, token=w.vault_token)
    policies = token.auth.token.lookup_self()["data"]["policies"]
    w.bao.sys.create_or_update_policy(
        name=next(p for p in policies if p.startswith("bot-")),
        policy=bao_rules("e2e/*", destroy='"update"') + bao_rules(lanes.prod_path))
    click_parent(bot, Action.RESUME)
    receipt(bot, "wrote the new credential where the prod lane's consumers read it")
    assert lanes.unpinned(lanes.prod_path) == w.password("staged-1")
    bot.state.wait_for(lambda s: asked(bot, "inference-api"), 10)
    assert bot.state.violations == []
