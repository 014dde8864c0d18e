"""POST /alerts end to end in one process: real database, real Slack stand-in, signed HTTP.

The app is the composition root's Container (bot.runtime.bootstrap.build) with the alerts route
mounted, served by Starlette's TestClient; Slack calls go through a real slack_sdk WebClient
to the loopback stand-in, which records them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from harness.backends import LocalBackends
from slack_bolt import App
from slack_bolt.request import BoltRequest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from adapters.slack_budget import METHOD_RATES
from bot.domain.alert import AlertStatus
from bot.domain.alert_intake import DeliveryLog, RateLimiter, sign
from bot.domain.clock import FixedClock
from bot.domain.errors import NotAuthorized
from bot.domain.lifecycle import Phase, StepState
from bot.runtime.bootstrap import Container, build
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.services.alerts import AlertService
from handlers import alert_actions
from handlers.alerts_http import alerts_route
from handlers.ids import Action, AlertButton

ALERT_SECRET = "test-alert-signing-key"
SIGNING_SECRET = "0123456789abcdef0123456789abcdef"

CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0SECOPS]
  lanes: [dev, staging, prod]
  overlap: 24h
  observe: 2h
stores:
  files: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      embedder: {owner: U0CAROL, lane: dev, reload: hot}
      retriever: {owner: U0BOB, lane: dev, reload: restart}
      nightly-ingest: {owner: U0BOB, lane: staging, reload: restart}
      reranker: {owner: U0CAROL, lane: staging, reload: staged}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot}
  cache-password:
    issuer: {kind: manual}
    store: {name: files, path: infra/cache}
    consumers:
      shared-worker: {owner: U0BOB, lane: dev, reload: restart}
      cache-warmer: {owner: U0BOB, lane: dev, reload: hot}
  search-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/search}
    consumers:
      shared-worker: {owner: U0BOB, lane: prod, reload: restart}
"""
BURST_CONSUMERS = ("embedder", "retriever", "nightly-ingest", "reranker", "inference-api")



SLACK_TIME_SCALE = 20.0


class World:
    def __init__(self, c: Container, state: StandinState, clock: FixedClock,
                 slack_skew: list[float]) -> None:
        self.c, self.state, self.clock = c, state, clock
        self._slack_skew = slack_skew
        self.alerts: AlertService = c.alerts
        self.route = alerts_route(c.deps)
        self.http = TestClient(Starlette(routes=[self.route]))

    def use_route(self, **kwargs: Any) -> None:
        self.http = TestClient(Starlette(routes=[alerts_route(self.c.deps, **kwargs)]))

    def send(
        self,
        payload: dict[str, Any] | bytes,
        *,
        delivery: str | None = None,
        ts: int | None = None,
        secret: str = ALERT_SECRET,
        signature: str | None = None,
    ) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        stamp = int(self.clock.now().timestamp()) if ts is None else ts
        headers = {
            "Content-Type": "application/json",
            "X-Rotabot-Timestamp": str(stamp),
            "X-Rotabot-Signature": signature or sign(secret, stamp, body),
            "X-Rotabot-Delivery": delivery or uuid.uuid4().hex,
        }
        resp = self.http.post("/alerts", content=body, headers=headers)
        # Slack follows the commit on the service's own thread: wait for it, so a test
        # reads the messages the request led to.
        self.alerts.flush_follow_ups()
        return resp

    def let_a_minute_of_slack_limits_pass(self) -> None:
        """Step the clock of Slack's rate limits (the bot's budget and the stand-in's) a
        minute ahead, instead of waiting for the budget to refill."""
        self._slack_skew[0] += 60.0
        self.c.slack_budget.poke()

    def stored(self) -> list[Any]:
        with self.c.service.uow_factory() as uow:
            return uow.alerts.recent(1000)

    def posts(self) -> list[Any]:
        return self.state.calls_to("chat.postMessage")

    def run_rotation_to_observing(self) -> int:
        """Start model-api-key, have every owner distribute and validate, switch."""
        svc = self.c.service
        rotation = svc.start("model-api-key", actor="U0SECOPS")
        assert rotation.id is not None and rotation.phase is Phase.DISTRIBUTING
        for c in rotation.consumers_in_order():  # lane by lane: dev, staging, prod
            svc.step(rotation.id, c.name, StepState.DISTRIBUTED, actor=c.owner)
            svc.step(rotation.id, c.name, StepState.VALIDATED, actor=c.owner)
        svc.switch(rotation.id, actor="U0SECOPS")
        self.c.notifier.flush()
        assert svc.get(rotation.id).phase is Phase.OBSERVING
        return rotation.id


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from make_world(database_url, tmp_path, SLACK_TIME_SCALE)


@pytest.fixture
def world_at_slacks_pace(database_url: str, tmp_path: Path) -> Iterator[World]:
    """Slack's limits on real time: the budget must queue and merge."""
    yield from make_world(database_url, tmp_path, 1.0)


def make_world(database_url: str, tmp_path: Path, scale: float) -> Iterator[World]:
    # Slack's rate limits stay enforced on both sides, on a clock that runs `scale` times
    # real time (a Slack minute in a few seconds: rotations post many prompts into one
    # channel) plus a skew a test may step (tests/e2e/test_slack_budget_burst.py is about
    # the limits at their real pace).
    skew = [0.0]
    state = StandinState(clock=lambda: time.monotonic() * scale + skew[0])
    for user in ("U0SECOPS", "U0ALICE", "U0BOB", "U0CAROL", "U0OUT"):
        state.add_user(user, user.lower())
    state.add_channel("C0ROTATE", "rotations", members=["U0SECOPS"])
    state.add_channel("C0INCIDENT", "incidents", members=["U0SECOPS"])
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(CATALOG)
    clock = FixedClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    with StandinServer(state) as server:
        settings = Settings(
            catalog_path=str(catalog),
            database_url=database_url,
            slack_api_url=server.base_url,
            slack_bot_token="xoxb-test",
            slack_signing_secret=SIGNING_SECRET,
            alert_secret=ALERT_SECRET,
        )
        c = build(settings, clock=clock, migrate=True, backends=LocalBackends(tmp_path / "s"),
                  slack_clock=lambda: time.time() * scale + skew[0])
        w = World(c, state, clock, skew)
        yield w
        w.alerts.flush()
        c.notifier.flush()
        assert state.violations == []  # every Slack call was well-formed
        c.engine.dispose()


def test_an_alert_during_a_rotation_is_posted_with_its_context(world: World) -> None:
    rid = world.run_rotation_to_observing()
    rotation = world.c.service.get(rid)
    world.state.clear_log()
    world.clock.advance(timedelta(minutes=4))

    resp = world.send(
        {
            "consumer": "inference-api",
            "status_code": 401,
            "error": "invalid_api_key",
            "message": "Incorrect API key provided: sk-proj-abc123",
            "source": "inference-sidecar",
        }
    )

    assert resp.status_code == 200, resp.text
    data = resp.json()
    expected = (
        f"inference-api (prod) is failing authentication, 4 min after R-{rid} switched "
        "model-api-key to the new credential"
    )
    assert data["ok"] and data["ref"] == "A-1" and data["context"].startswith(expected)
    assert data["alerts"][0]["rotation"] == f"R-{rid}"
    (incident,) = world.state.channel_messages("C0INCIDENT")
    assert incident.text.startswith(expected)
    assert "<@U0ALICE>" in incident.text and "reload hot" in incident.text
    buttons = [e["text"]["text"] for b in incident.blocks if b["type"] == "actions"
               for e in b["elements"]]
    assert buttons == [f"Roll back R-{rid}", "Not related", "Acknowledge"]
    assert rotation.message_ts is not None
    thread = world.state.thread("C0ROTATE", rotation.message_ts)
    assert [m.text for m in thread if m.text.startswith(expected)]
    assert len(world.posts()) == 2  # the incident channel and the rotation thread, nothing else
    # The provider's message is only classified: it reaches neither Slack nor storage.
    assert not any("sk-proj" in json.dumps(c.args) for c in world.state.calls)
    (alert,) = world.stored()
    assert (alert.failure_class, alert.rotation_id, alert.phase_at_alert) == (
        "authentication", rid, "observing",
    )
    assert alert.began_during_rotation and alert.channel == "C0INCIDENT"
    assert "sk-proj" not in alert.reason
    # Item 4: the revocation gate names the unresolved alert.
    assert any("unresolved alert A-1: inference-api (prod)" in u
               for u in world.c.service.gate(rid).unmet)


def test_an_alert_without_a_rotation_is_posted_to_the_incident_channel_only(
    world: World,
) -> None:
    resp = world.send({"consumer": "cache-warmer", "error": "WRONGPASS invalid username"})
    assert resp.status_code == 200, resp.text
    (msg,) = world.state.channel_messages("C0INCIDENT")
    assert msg.text.startswith(
        "cache-warmer (dev) is failing authentication; no rotation of cache-password is running"
    )
    assert "Roll back" not in json.dumps(msg.blocks)
    assert len(world.posts()) == 1


@pytest.mark.parametrize(
    "case", ["bad-signature", "wrong-key", "no-signature", "stale", "future", "oversize",
             "oversize-chunked", "malformed", "schema", "unknown-consumer", "unknown-secret"]
)
def test_refused_requests_post_nothing_and_store_nothing(world: World, case: str) -> None:
    good = {"consumer": "inference-api", "status_code": 401}
    now = int(world.clock.now().timestamp())
    expected = {
        "bad-signature": 401, "wrong-key": 401, "no-signature": 401, "stale": 401,
        "future": 401, "oversize": 413, "oversize-chunked": 413, "malformed": 422,
        "schema": 422, "unknown-consumer": 404, "unknown-secret": 404,
    }[case]
    if case == "bad-signature":
        resp = world.send(good, signature="v1=" + "0" * 64)
    elif case == "wrong-key":
        resp = world.send(good, secret="not-the-key")
    elif case == "no-signature":
        body = json.dumps(good).encode()
        resp = world.http.post("/alerts", content=body,
                               headers={"X-Rotabot-Timestamp": str(now)})
    elif case == "stale":
        resp = world.send(good, ts=now - 301)
    elif case == "future":
        resp = world.send(good, ts=now + 301)
    elif case == "oversize":
        big = {"consumer": "inference-api", "message": "x" * (64 * 1024)}
        resp = world.send(big)
    elif case == "oversize-chunked":
        def chunks() -> Iterator[bytes]:
            yield b'{"consumer": "inference-api", "message": "'
            for _ in range(80):
                yield b"x" * 1024
            yield b'"}'

        # A generator body goes out chunked, without Content-Length: counted while streaming.
        resp = world.http.post(
            "/alerts", content=chunks(),
            headers={"X-Rotabot-Timestamp": str(now), "X-Rotabot-Signature": "v1=00"},
        )
    elif case == "malformed":
        resp = world.send(b'{"consumer": "inference-api",')
    elif case == "schema":
        resp = world.send({"consumer": "inference-api", "status_code": "four-oh-one"})
        assert resp.json()["field"] == "status_code"
    elif case == "unknown-consumer":
        resp = world.send({"consumer": "inference-apo"})
        assert resp.json()["suggestions"][0] == "inference-api"
        assert resp.json()["field"] == "consumer"
    else:
        resp = world.send({"consumer": "inference-api", "secret": "model-api-kee"})
        assert resp.json()["suggestions"] == ["model-api-key"]
    assert resp.status_code == expected, resp.text
    assert resp.json()["ok"] is False
    assert world.posts() == []
    assert world.stored() == []


def test_an_ambiguous_consumer_must_name_its_secret(world: World) -> None:
    resp = world.send({"consumer": "shared-worker"})
    assert resp.status_code == 422
    assert resp.json()["field"] == "secret"
    assert resp.json()["secrets"] == ["cache-password", "search-key"]
    assert world.stored() == []
    # The lane tells them apart; so does the secret.
    assert world.send({"consumer": "shared-worker", "lane": "prod"}).json()["alerts"][0][
        "secret"] == "search-key"
    assert world.send({"consumer": "shared-worker", "secret": "cache-password"}).json()[
        "alerts"][0]["secret"] == "cache-password"


def test_a_replayed_delivery_is_answered_but_not_counted(world: World) -> None:
    body = {"consumer": "inference-api", "status_code": 401}
    first = world.send(body, delivery="delivery-1")
    assert first.status_code == 200 and "duplicate" not in first.json()
    again = world.send(body, delivery="delivery-1")
    assert again.status_code == 200 and again.json() == {"ok": True, "duplicate": True}
    (alert,) = world.stored()
    assert alert.count == 1
    assert len(world.posts()) == 1


def test_a_failed_delivery_can_be_retried_with_the_same_id(world: World) -> None:
    assert world.send({"consumer": "inference-apo"}, delivery="d-7").status_code == 404
    resp = world.send({"consumer": "inference-api"}, delivery="d-7")
    assert resp.status_code == 200 and "duplicate" not in resp.json()


def test_a_burst_of_300_alerts_makes_at_most_10_slack_messages(
    world_at_slacks_pace: World,
) -> None:
    world = world_at_slacks_pace
    world.run_rotation_to_observing()
    world.state.clear_log()
    for _ in range(int(METHOD_RATES["chat.update"].burst)):  # Slack's minute is spent
        world.c.slack_budget.call("chat.update", {"channel": "C0OTHER", "ts": "1.0"},
                                  lambda: None)
    for i in range(300):
        consumer = BURST_CONSUMERS[i % 5]
        resp = world.send({"consumer": consumer, "status_code": 401,
                           "source": f"{consumer}-sidecar"})
        assert resp.status_code == 200, resp.text
    # Far more changes than Slack's 50 chat.update a minute: refreshes wait, merged per message.
    world.let_a_minute_of_slack_limits_pass()
    world.alerts.flush()

    assert world.state.rate_limited == {}  # the budget kept every call under Slack's tiers
    assert world.c.slack_budget.stats.merged > 0
    assert len(world.posts()) <= 10
    alerts = world.stored()
    assert sorted(a.consumer for a in alerts) == sorted(BURST_CONSUMERS)
    assert sum(a.count for a in alerts) == 300
    # Repeats updated the one message per consumer: the last update shows the full count.
    for a in alerts:
        assert a.channel is not None and a.message_ts is not None
        message = world.state.find_message(a.channel, a.message_ts)
        assert message is not None and "seen 60x" in json.dumps(message.blocks)


def test_a_flooding_source_gets_429_with_retry_after(world: World) -> None:
    ticks = [0.0]
    world.use_route(limiter=RateLimiter(rate=0.5, burst=3, clock=lambda: ticks[0]))
    body = {"consumer": "inference-api", "status_code": 401, "source": "noisy-cron"}
    assert [world.send(body).status_code for _ in range(3)] == [200, 200, 200]
    limited = world.send(body, delivery="d-limited")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "2"
    # Keyed on the sender (address and signing key), not on the body: renaming the source
    # does not clear the limit.
    assert world.send({**body, "source": "quiet-job"}).status_code == 429
    (alert,) = world.stored()
    assert alert.count == 3  # the refused ones were not counted
    ticks[0] += 2.0
    retried = world.send(body, delivery="d-limited")  # a 429 releases the delivery id
    assert retried.status_code == 200 and "duplicate" not in retried.json()


def test_alertmanager_payload_is_accepted(world: World) -> None:
    rid = world.run_rotation_to_observing()
    world.state.clear_log()
    payload = {
        "version": "4",
        "groupKey": "{}:{alertname=\"ConsumerAuthFailing\"}",
        "status": "firing",
        "receiver": "rotabot",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ConsumerAuthFailing", "consumer": "inference-api",
                           "secret": "model-api-key", "status_code": "401"},
                "annotations": {"summary": "401 from the model provider"},
                "startsAt": (world.clock.now() - timedelta(minutes=1)).isoformat(),
            },
            {
                "status": "firing",
                "labels": {"alertname": "RetrieverDown", "consumer": "retriever"},
                "annotations": {"description": "Connection refused to vector-db:6333"},
            },
            {"status": "resolved", "labels": {"consumer": "embedder"}},
        ],
    }
    resp = world.send(payload)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    assert data["resolved_ignored"] == 1
    classes = {a["consumer"]: a["class"] for a in data["alerts"]}
    assert classes == {"inference-api": "authentication", "retriever": "network"}
    assert all(a["rotation"] == f"R-{rid}" for a in data["alerts"])
    texts = [m.text for m in world.state.channel_messages("C0INCIDENT")]
    assert any(t.startswith("retriever (dev) is failing with network errors") for t in texts)
    assert {a.source for a in world.stored()} == {"alertmanager/rotabot"}


def test_an_alert_reopens_a_revocable_rotation_until_marked_not_related(world: World) -> None:
    svc = world.c.service
    rid = world.run_rotation_to_observing()
    for c in svc.get(rid).consumers_in_order():
        svc.step(rid, c.name, StepState.SIGNED_OFF, actor=c.owner)
    world.clock.advance(timedelta(hours=2, minutes=1))
    assert svc.tick(rid).phase is Phase.REVOCABLE

    resp = world.send({"consumer": "nightly-ingest", "status_code": 403})
    assert resp.status_code == 200, resp.text
    alert_id = int(resp.json()["ref"][2:])
    assert svc.get(rid).phase is Phase.OBSERVING
    assert any(f"unresolved alert A-{alert_id}" in u for u in svc.gate(rid).unmet)

    # Anyone may acknowledge; it still blocks revocation.
    assert world.alerts.acknowledge(alert_id, actor="U0OUT").changed
    assert not svc.gate(rid).open
    # Only an admin or the owner may say "not related"; a refusal is audited.
    with pytest.raises(NotAuthorized):
        world.alerts.not_related(alert_id, actor="U0OUT")
    outcome = world.alerts.not_related(alert_id, actor="U0BOB")
    assert outcome.changed and outcome.alert.status is AlertStatus.NOT_RELATED
    assert not world.alerts.not_related(alert_id, actor="U0BOB").changed  # double click
    assert svc.gate(rid).open
    with svc.uow_factory() as uow:
        actions = [(e.action, e.actor) for e in uow.audit.for_rotation(rid)]
    assert ("alert.received", "rotabot") in actions
    assert ("alert.acknowledged", "U0OUT") in actions
    assert ("refused", "U0OUT") in actions
    assert ("alert.not-related", "U0BOB") in actions


def _click(app: App, action: Action, button: AlertButton, user: str, channel: str,
           ts: str) -> int:
    payload = {
        "type": "block_actions",
        "team": {"id": "T0ROTABOT"},
        "user": {"id": user},
        "api_app_id": "A0ROTABOT",
        "trigger_id": "1.2.3",
        "container": {"type": "message", "channel_id": channel, "message_ts": ts},
        "channel": {"id": channel},
        "response_url": "http://127.0.0.1:9/unused",
        "actions": [{"type": "button", "action_id": action.value, "block_id": "b",
                     "value": button.model_dump_json(), "action_ts": "1"}],
    }
    body = "payload=" + quote(json.dumps(payload))
    stamp = str(int(time.time()))
    digest = hmac.new(SIGNING_SECRET.encode(), f"v0:{stamp}:{body}".encode(),
                      hashlib.sha256).hexdigest()
    resp = app.dispatch(BoltRequest(body=body, headers={
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": stamp,
        "x-slack-signature": f"v0={digest}",
    }))
    return int(resp.status)


def test_acknowledge_button_updates_the_alert_message(world: World) -> None:
    rid = world.run_rotation_to_observing()
    resp = world.send({"consumer": "inference-api", "status_code": 401})
    alert_id = int(resp.json()["ref"][2:])
    (alert,) = world.stored()
    assert alert.channel is not None and alert.message_ts is not None
    app = App(client=world.c.slack, signing_secret=SIGNING_SECRET,
              token_verification_enabled=False)
    alert_actions.register(app, world.c)
    button = AlertButton(alert_id=alert_id, rotation_id=rid, consumer="inference-api")

    assert _click(app, Action.ALERT_ACK, button, "U0OUT", alert.channel, alert.message_ts) == 200

    def acknowledged(state: StandinState) -> bool:
        assert alert.channel is not None and alert.message_ts is not None
        msg = state.find_message(alert.channel, alert.message_ts)
        return msg is not None and "acknowledged" in json.dumps(msg.blocks)

    world.state.wait_for(acknowledged)
    assert world.stored()[0].status is AlertStatus.ACKNOWLEDGED


def test_delivery_log_and_limiter_can_be_injected(world: World) -> None:
    deliveries = DeliveryLog(ttl=1.0, clock=lambda: 0.0)
    world.use_route(deliveries=deliveries)
    world.send({"consumer": "inference-api"}, delivery="x-1")
    assert world.send({"consumer": "inference-api"}, delivery="x-1").json()["duplicate"]


def test_repeats_coalesce_within_the_window_only(world: World) -> None:
    body = {"consumer": "inference-api", "status_code": 401}
    first = world.send(body).json()["ref"]
    world.clock.advance(timedelta(minutes=9))
    assert world.send(body).json()["ref"] == first  # same consumer and class: counted
    assert world.send({**body, "status_code": 429}).json()["ref"] != first  # another class
    world.clock.advance(timedelta(minutes=11))
    assert world.send(body).json()["ref"] not in (first,)  # the window passed: a new alert
    world.alerts.flush()
    assert len(world.posts()) == 3
