"""Alerts and the rollback path through `rotabot serve`, checked on the real back ends.

A `redis-acl` secret stored in OpenBao is rotated and switched by signed Slack requests; a
connector then reports a failure to `POST /alerts` exactly as the README's curl line does. The
incident message carries the rotation context and the buttons; its Roll back click opens the
confirmation, and submitting it leaves the previous password current in OpenBao and accepted
by Redis, which the test asks the servers themselves. The refusals of `POST /alerts` and a
burst of 1,000 reports are checked through the same process.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BotConfig
from e2e_helpers import click_step, parent_message, prompt_for, wait_ephemeral, wait_parent
from harness.backends import (
    RedisInBao,
    catalog_backends,
    give_bot_canary_credentials,
    redis_in_bao,
)
from harness.serve import alert_headers, catalog_head

from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action

Bot = Any  # conftest.Bot, under the name the fixture gives it

ALERT_SECRET = "alert-key-" + secrets.token_hex(16)  # serve refuses under 32 characters


# --- helpers ------------------------------------------------------------------------------


def send_alert(bot: Bot, payload: dict[str, Any] | bytes, *, ts: int | None = None,
               key: str = ALERT_SECRET, delivery: str | None = None,
               signature: str | None = None) -> httpx.Response:
    """What the README's curl and Python lines send."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return httpx.post(bot.url + "/alerts", content=body, timeout=30, headers=alert_headers(
        key, body, timestamp=ts, signature=signature, delivery=delivery or str(uuid.uuid4())))


def buttons(message: Message) -> dict[str, str]:
    return {e.get("text", {}).get("text", ""): e.get("action_id", "") for b in message.blocks
            if b.get("type") == "actions" for e in b.get("elements", [])}


def incident_message(bot: Bot, needle: str) -> Message:
    def find(_: object) -> Message | None:
        for m in bot.state.channel_messages("C0INCIDENT"):
            if needle in m.text:
                return m
        return None
    return bot.state.wait_for(find, 15)


def alerts_table(bot: Bot) -> list[tuple[Any, ...]]:
    with sqlite3.connect(bot.db_path) as db:
        return db.execute("select consumer, failure_class, count, source from alerts "
                          "order by consumer").fetchall()


# --- real OpenBao + Redis -----------------------------------------------------------------

CATALOG = catalog_head(observe="1h") + catalog_backends("{bao_url}", redis=True) + """\
secrets:
  cache-password:
    issuer: {{name: cache, user: {user}}}
    store: {{name: bao, path: {path}}}
    consumers:
      retriever:
        owner: U0BOB
        lane: dev
        reload: restart
        rollback: Restart the retriever pods with the previous store version pinned
      inference-api:
        owner: U0ALICE
        lane: prod
        reload: hot
        rollback: Nothing to do; it reads the current version
"""


@pytest.fixture
def backends(request: pytest.FixtureRequest) -> RedisInBao:
    openbao_server = request.getfixturevalue("openbao_server")
    redis_server = request.getfixturevalue("redis_server")
    return redis_in_bao(request.getfixturevalue("redis_url"), redis_server.host,
                        redis_server.port, openbao_server.url, openbao_server.token,
                        f"e2e-rollback/{secrets.token_hex(4)}/cache")


@pytest.fixture
def bot_config(request: pytest.FixtureRequest, tmp_path: Path) -> BotConfig:
    """The real back ends for the rollback tests; five file-store consumers for the others."""
    env = {"ROTABOT_ALERT_SECRET": ALERT_SECRET}
    if "backends" not in request.fixturenames:
        return BotConfig(catalog=BURST_CATALOG.format(store=tmp_path / "secrets"), env=env)
    b: RedisInBao = request.getfixturevalue("backends")
    # The bot's own Redis admin credential and OpenBao token are canaries too.
    credentials = give_bot_canary_credentials(b, request.getfixturevalue("redis_url"),
                                              b.path.rsplit("/", 1)[0])
    return BotConfig(
        catalog=CATALOG.format(bao_url=request.getfixturevalue("openbao_server").url,
                               user=b.user, path=b.path),
        env={**env, **credentials},
        forbid=(b.initial, b.vault_token, b.redis_admin_password),
    )


def switched_rotation(bot: Bot, b: RedisInBao) -> str:
    """/rotate start, both owners distribute and validate, the admin switches. Returns the
    new password (read from OpenBao with the test's own root token)."""
    bot.slack.command("U0ADMIN", "C0ROTATE", "start cache-password")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    wait_parent(bot, "distributing")
    assert b.labels() == {"rotabot-current": "1", "rotabot-pending": "staged-1"}
    new_password = b.read("staged-1")["password"]
    assert b.read()["password"] == b.initial  # staged: not on the secret's path yet
    bot.state.forbid(new_password)
    for consumer, owner in (("retriever", "U0BOB"), ("inference-api", "U0ALICE")):
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    bot.state.wait_for(lambda s: Action.SWITCH.value in buttons(parent_message(bot)).values(), 10)
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent_message(bot).ts,
                    action_id=Action.SWITCH.value)
    wait_parent(bot, "observing")
    assert b.labels() == {
        "rotabot-current": "2", "rotabot-previous": "1", "rotabot-promoted": "staged-1"}
    assert b.read()["password"] == new_password
    return new_password


@pytest.mark.openbao
@pytest.mark.redis
@pytest.mark.parametrize("choice", ["keep", "revoke"])
def test_alert_then_rollback_click_restores_the_previous_credential_on_the_servers(
    bot: Bot, backends: RedisInBao, choice: str
) -> None:
    b = backends
    new_password = switched_rotation(bot, b)

    # A connector reports a failure the way the README shows.
    resp = send_alert(bot, {"consumer": "inference-api", "secret": "cache-password",
                            "status_code": 401, "error": "invalid_api_key",
                            "source": "inference-api"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["ref"] == "A-1"
    incident = incident_message(bot, "inference-api (prod) is failing authentication")
    # Context: the rotation, when it switched, owner, reload mode and phase.
    assert "after R-1 switched cache-password to the new credential" in incident.text
    assert "<@U0ALICE>" in incident.text and "reload hot" in incident.text
    assert "R-1 is observing" in incident.text
    assert buttons(incident) == {"Roll back R-1": Action.ALERT_ROLLBACK.value,
                                 "Not related": Action.ALERT_NOT_RELATED.value,
                                 "Acknowledge": Action.ALERT_ACK.value}
    # ... and the same alert in the rotation's thread (posted right after, off the request).
    bot.state.wait_for(lambda s: any(
        "inference-api (prod) is failing authentication" in m.text
        for m in s.thread("C0ROTATE", parent_message(bot).ts)), 15)

    # The Roll back click opens a confirmation that says what will happen.
    bot.slack.click("U0ADMIN", channel="C0INCIDENT", message_ts=incident.ts,
                    action_id=Action.ALERT_ROLLBACK.value)
    modal = bot.state.wait_for(lambda s: next(iter(s.open_views("U0ADMIN")), None), 10)
    shown = json.dumps(modal.view["blocks"])
    assert "The previous credential (version 1) becomes current again" in shown
    assert "the issuer keeps it valid" in shown
    assert "<@U0BOB> `retriever` (dev, restart): Restart the retriever pods" in shown
    assert "inference-api" not in shown.split("Owners to act")[1]  # hot: nothing to do
    # Nothing happens until it is submitted.
    assert b.labels() == {
        "rotabot-current": "2", "rotabot-previous": "1", "rotabot-promoted": "staged-1"}
    reply = bot.slack.submit_view("U0ADMIN", modal.id,
                                  {"new_credential": choice, "reason": "inference-api 401s"})
    assert reply.status == 200

    # In the thread: who rolled back, and the restart owner mentioned with the note.
    note = bot.state.wait_for(lambda s: next(
        (m for m in s.thread("C0ROTATE", parent_message(bot).ts)
         if "rolled back R-1" in m.text), None), 15)
    assert "<@U0ADMIN>" in note.text
    assert "<@U0BOB> `retriever` (dev, restart): Restart the retriever pods" in note.text
    assert "Reason: inference-api 401s" in note.text  # the admin's reason, told
    assert "inference-api" not in note.text.split("Reason: inference-api 401s")[1]  # hot
    wait_parent(bot, "rolled back")

    # On the servers: the previous data is current again in OpenBao, as a new version (3)...
    assert b.read()["password"] == b.initial
    assert b.read(3) == {"username": b.user, "password": b.initial}
    # ... and Redis still accepts the old password.
    assert b.auth_ok(b.initial)
    if choice == "keep":
        assert b.labels() == {"rotabot-current": "3", "rotabot-previous": "2"}
        assert b.auth_ok(new_password)  # kept valid, unused
    else:
        assert not b.auth_ok(new_password)
        assert b.destroyed(2)
        assert b.labels() == {"rotabot-current": "3", "rotabot-revoked": "2"}

    # No second click: the alert is resolved by the rollback and its buttons are gone.
    bot.state.wait_for(lambda s: (m := s.find_message("C0INCIDENT", incident.ts)) is not None
                       and buttons(m) == {} and "resolved by <@U0ADMIN>" in json.dumps(m.blocks),
                       15)
    assert b.read()["password"] == b.initial and b.auth_ok(b.initial)
    assert b.labels()["rotabot-current"] == "3"

    # Audited once, with the choice; nothing secret anywhere.
    with sqlite3.connect(bot.db_path) as db:
        rows = db.execute("select actor, detail from audit_events where action = "
                          "'rollback.detail'").fetchall()
        dump = "\n".join(db.iterdump())
    assert len(rows) == 1 and rows[0][0] == "U0ADMIN"
    assert ("revoked" if choice == "revoke" else "kept pending") in rows[0][1]
    assert bot.state.violations == []
    log = bot.log_text()
    for value in (b.initial, new_password, b.vault_token, b.redis_admin_password):
        assert value not in log and value not in dump


# --- POST /alerts refusals and a burst, through serve -------------------------------------

BURST_CATALOG = catalog_head(observe="1h") + """\
stores:
  local: {{kind: file, path: "{store}"}}
secrets:
  model-api-key:
    issuer: {{kind: local}}
    store: {{name: local, path: ai/model-api-key}}
    consumers:
      embedder: {{owner: U0CAROL, lane: dev, reload: hot}}
      retriever: {{owner: U0BOB, lane: dev, reload: restart}}
      nightly-ingest: {{owner: U0BOB, lane: staging, reload: restart}}
      reranker: {{owner: U0CAROL, lane: staging, reload: staged}}
      inference-api: {{owner: U0ALICE, lane: prod, reload: hot}}
"""
BURST_CONSUMERS = ("embedder", "retriever", "nightly-ingest", "reranker", "inference-api")


@pytest.mark.parametrize("case", ["bad-signature", "wrong-key", "stale", "replayed-delivery",
                                  "oversize", "malformed", "schema"])
def test_refused_alerts_get_their_code_and_post_nothing(bot: Bot, case: str) -> None:
    good = {"consumer": "inference-api", "status_code": 401}
    before = len(bot.state.calls_to("chat.postMessage"))
    if case == "replayed-delivery":
        first = send_alert(bot, good, delivery="delivery-1")
        assert first.status_code == 200
        incident_message(bot, "inference-api")  # posted after the answer, off the request
        before = len(bot.state.calls_to("chat.postMessage"))
        # The same delivery again (a retry or a replay within the tolerance): not counted.
        resp = send_alert(bot, good, delivery="delivery-1")
        assert (resp.status_code, resp.json()) == (200, {"ok": True, "duplicate": True})
        assert [(c, n) for c, _, n, _ in alerts_table(bot)] == [("inference-api", 1)]
        assert len(bot.state.calls_to("chat.postMessage")) == before
        return
    expected = {"bad-signature": 401, "wrong-key": 401, "stale": 401, "oversize": 413,
                "malformed": 422, "schema": 422}[case]
    if case == "bad-signature":
        resp = send_alert(bot, good, signature="v1=" + "0" * 64)
    elif case == "wrong-key":
        resp = send_alert(bot, good, key="not-the-key")
    elif case == "stale":  # a captured request replayed after the 5-minute tolerance
        resp = send_alert(bot, good, ts=int(time.time()) - 301)
    elif case == "oversize":
        resp = send_alert(bot, {"consumer": "inference-api", "message": "x" * (64 * 1024)})
    elif case == "malformed":
        resp = send_alert(bot, b'{"consumer": "inference-api",')
    else:
        resp = send_alert(bot, {"consumer": "inference-api", "status_code": "four-oh-one"})
        assert resp.json()["field"] == "status_code"
    assert resp.status_code == expected, resp.text
    assert resp.json()["ok"] is False
    assert alerts_table(bot) == []
    time.sleep(0.5)  # give a wrongly accepted alert the chance to post before looking
    assert len(bot.state.calls_to("chat.postMessage")) == before


def test_a_burst_of_300_alerts_for_5_consumers_makes_at_most_10_messages(bot: Bot) -> None:
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    wait_parent(bot, "distributing")
    prompt_for(bot, "embedder", "Distributed")
    bot.state.wait_for(lambda s: len(s.thread("C0ROTATE", parent_message(bot).ts)) >= 2, 10)
    before = len(bot.state.calls_to("chat.postMessage"))

    def one(i: int) -> int:
        consumer = BURST_CONSUMERS[i % 5]
        return send_alert(bot, {"consumer": consumer, "status_code": 401,
                                "source": f"{consumer}-sidecar"}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(one, range(300)))
    assert codes == [200] * 300

    rows = alerts_table(bot)
    assert sorted(c for c, *_ in rows) == sorted(BURST_CONSUMERS)
    assert sum(n for _, _, n, _ in rows) == 300  # every report counted
    # Repeats update one message per consumer; the last update shows the whole count.
    for consumer in BURST_CONSUMERS:
        bot.state.wait_for(lambda s, c=consumer: next(
            (m for m in s.channel_messages("C0INCIDENT")
             if m.text.startswith(f"{c} (") and "seen 60x" in json.dumps(m.blocks)), None), 15)
    posts = bot.state.calls_to("chat.postMessage")[before:]
    # One in the incident channel and one in the rotation's thread per consumer, at most.
    assert len(posts) <= 10
    assert len([p for p in posts if p.args.get("channel") == "C0INCIDENT"]) == 5
    assert bot.state.violations == []
