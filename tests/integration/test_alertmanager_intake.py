"""POST /alerts from Prometheus Alertmanager in one process: its token instead of rotabot's HMAC,
its notification taken alert by alert, de-duplicated on groupKey and fingerprint, resolved
alerts resolving what their firing opened, and its retries after a 5xx taken once.

The app is the composition root's Container with the alerts route mounted, served by
Starlette's TestClient; Slack calls go through a real slack_sdk WebClient to the loopback
stand-in, which records them.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.backends import LocalBackends
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot.domain.alert import AlertStatus
from bot.domain.alert_intake import RateLimiter, sign
from bot.domain.clock import FixedClock
from bot.domain.lifecycle import Phase, StepState
from bot.runtime.bootstrap import Container, build
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from handlers.alerts_http import alerts_route

TOKEN = secrets.token_hex(24)
NEXT_TOKEN = secrets.token_hex(24)
ALERT_SECRET = "test-alert-signing-key-" + secrets.token_hex(8)

CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0SECOPS]
  lanes: [dev, staging, prod]
  observe: 2h
{alertmanager}stores:
  files: {{kind: file, path: ./secrets}}
secrets:
  model-api-key:
    issuer: {{kind: manual}}
    store: {{name: files, path: ai/model-api-key}}
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: restart}}
      inference-api: {{owner: U0ALICE, lane: prod, reload: hot}}
"""
RENAMED = "  alertmanager:\n    labels: {consumer: service, secret: credential, lane: env}\n"


class World:
    def __init__(self, c: Container, state: StandinState) -> None:
        self.c, self.state = c, state
        self.http = TestClient(Starlette(routes=[alerts_route(c.deps)]))

    def use_route(self, **kwargs: Any) -> None:
        self.http = TestClient(Starlette(routes=[alerts_route(self.c.deps, **kwargs)]))

    def send(self, body: bytes, authorization: str | None = None,
             **headers: str) -> Any:
        auth = f"Bearer {TOKEN}" if authorization is None else authorization
        resp = self.http.post("/alerts", content=body, headers={
            "Content-Type": "application/json", "Authorization": auth, **headers})
        self.c.alerts.flush_follow_ups()  # Slack follows the commit on its own thread
        return resp

    def stored(self) -> list[Any]:
        with self.c.service.uow_factory() as uow:
            return sorted(uow.alerts.recent(1000), key=lambda a: a.id)

    def incident(self) -> list[Any]:
        return self.state.channel_messages("C0INCIDENT")

    def rotation_to_observing(self) -> int:
        svc = self.c.service
        rotation = svc.start("model-api-key", actor="U0SECOPS")
        assert rotation.id is not None
        for c in rotation.consumers_in_order():
            svc.step(rotation.id, c.name, StepState.DISTRIBUTED, actor=c.owner)
            svc.step(rotation.id, c.name, StepState.VALIDATED, actor=c.owner)
        svc.switch(rotation.id, actor="U0SECOPS")
        self.c.notifier.flush()
        assert svc.get(rotation.id).phase is Phase.OBSERVING
        return rotation.id


@pytest.fixture
def make_world(database_url: str, tmp_path: Path) -> Iterator[Callable[..., World]]:
    made: list[tuple[World, StandinServer]] = []

    def make(*, renamed: bool = False, tokens: str = f"{TOKEN},{NEXT_TOKEN}") -> World:
        state = StandinState()
        for user in ("U0SECOPS", "U0ALICE", "U0BOB"):
            state.add_user(user, user.lower())
        state.add_channel("C0ROTATE", "rotations", members=["U0SECOPS"])
        state.add_channel("C0INCIDENT", "incidents", members=["U0SECOPS"])
        catalog = tmp_path / "catalog.yml"
        catalog.write_text(CATALOG.format(alertmanager=RENAMED if renamed else ""))
        server = StandinServer(state).start()
        settings = Settings(
            catalog_path=str(catalog), database_url=database_url,
            slack_api_url=server.base_url, slack_bot_token="xoxb-test",
            slack_signing_secret="0123456789abcdef0123456789abcdef",
            alert_secret=ALERT_SECRET, alertmanager_tokens=tuple(tokens.split(",")) if tokens
            else (),
        )
        clock = FixedClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
        c = build(settings, clock=clock, migrate=True, backends=LocalBackends(tmp_path / "s"))
        world = World(c, state)
        made.append((world, server))
        return world

    yield make
    for world, server in made:
        world.c.alerts.flush()
        world.c.notifier.flush()
        assert world.state.violations == []
        world.c.engine.dispose()
        server.stop()


def am_alert(fingerprint: str, *, status: str = "firing", consumer: str = "inference-api",
             starts: str = "2026-11-25T08:59:00Z", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "ConsumerAuthFailing", "consumer": consumer,
                   "secret": "model-api-key", "status_code": "401", **labels},
        "annotations": {"summary": "401 from the model provider"},
        "startsAt": starts,
        "endsAt": "2026-11-25T09:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    }


def notification(*alerts: dict[str, Any], group: str = '{}:{consumer="inference-api"}') -> bytes:
    statuses = {a["status"] for a in alerts}
    return json.dumps({
        "version": "4", "groupKey": group, "truncatedAlerts": 0,
        "status": "firing" if "firing" in statuses else "resolved",
        "receiver": "rotabot", "groupLabels": {}, "commonLabels": {},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": list(alerts),
    }).encode()


def blocks_text(message: Any) -> str:
    return json.dumps(message.blocks)


def test_alertmanager_fires_coalesces_and_resolves_through_its_token(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    rid = world.rotation_to_observing()
    rotation = world.c.service.get(rid)
    world.state.clear_log()

    first = world.send(notification(am_alert("a000000000000001")))
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["duplicates"] == 0 and data["resolved"] == []
    (summary,) = data["alerts"]
    assert (summary["ref"], summary["new"], summary["rotation"]) == ("A-1", True, f"R-{rid}")
    # Posted after the commit on the follow-up thread and through Slack's call budget: waited
    # for (a whole-suite run under load read the channel before the post landed).
    incident = world.state.wait_for(lambda s: next(iter(world.incident()), None))
    assert len(world.incident()) == 1
    assert incident.text.startswith("inference-api (prod) is failing authentication")
    assert rotation.message_ts is not None
    world.state.wait_for(lambda s: any(
        m.text == incident.text for m in s.thread("C0ROTATE", rotation.message_ts)) or None)

    # The group again (group_interval) with a second alert: the first is a duplicate, the
    # second coalesces into A-1.
    again = world.send(notification(am_alert("a000000000000001"),
                                    am_alert("b000000000000002", alertname="Other")))
    assert again.status_code == 200, again.text
    assert again.json()["duplicates"] == 1
    assert [(a["ref"], a["new"], a["count"]) for a in again.json()["alerts"]] == [
        ("A-1", False, 2)]
    world.c.alerts.flush()
    assert "seen 2x" in blocks_text(world.incident()[0])

    # Resolved, by the token Alertmanager moves to next: A-1 resolves, by Alertmanager.
    resolved = world.send(
        notification(am_alert("a000000000000001", status="resolved"),
                     am_alert("b000000000000002", status="resolved", alertname="Other")),
        authorization=f"Bearer {NEXT_TOKEN}")
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert body["resolved"] == [{"ref": "A-1", "consumer": "inference-api",
                                 "secret": "model-api-key"}]
    assert body["resolved_unmatched"] == 1  # b...2 coalesced into A-1: nothing of its own
    (alert,) = world.stored()
    assert alert.status is AlertStatus.RESOLVED and alert.resolved_by == "Alertmanager"
    assert alert.count == 2 and alert.source == "alertmanager/rotabot#a000000000000001"
    # The thread's copy is updated through Slack's call budget, queued after the channel's.
    world.c.alerts.flush()
    message = world.incident()[0]
    assert "resolved by Alertmanager" in blocks_text(message)
    assert "Roll back" not in blocks_text(message)
    copy = next(m for m in world.state.thread("C0ROTATE", rotation.message_ts)
                if m.text == message.text)
    assert "resolved by Alertmanager" in blocks_text(copy)
    with world.c.service.uow_factory() as uow:
        notes = [(e.action, e.actor) for e in uow.audit.for_rotation(rid)]
    assert ("alert.resolved", "Alertmanager") in notes

    # The same resolution again (a repeat or a retry): a duplicate, nothing changes.
    repeat = world.send(notification(am_alert("a000000000000001", status="resolved")))
    assert repeat.json()["duplicates"] == 1 and repeat.json()["resolved"] == []
    # Firing again (a new start): a new alert, not the resolved one reopened.
    refire = world.send(notification(am_alert("a000000000000001",
                                              starts="2026-11-25T09:10:00Z")))
    assert [(a["ref"], a["new"]) for a in refire.json()["alerts"]] == [("A-2", True)]


def test_a_repeat_after_repeat_interval_counts_into_the_open_alert_of_its_fingerprint(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    first = world.send(notification(am_alert("c000000000000003")))
    assert first.json()["alerts"][0]["ref"] == "A-1"

    # Alertmanager's repeat_interval (4h by default): past the coalescing window and the
    # delivery keys' lifetime, the same firing alert comes again.
    world.c.clock.advance(timedelta(hours=4))
    repeat = world.send(notification(am_alert("c000000000000003"),
                                     group='{}:{consumer="inference-api"}'))

    assert repeat.status_code == 200, repeat.text
    assert [(a["ref"], a["new"], a["count"]) for a in repeat.json()["alerts"]] == [
        ("A-1", False, 2)]
    assert len(world.stored()) == 1


def test_a_resolved_alert_without_an_open_one_changes_nothing(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    resp = world.send(notification(am_alert("c000000000000003", status="resolved"),
                                   am_alert("d000000000000004", status="resolved",
                                            consumer="no-such-consumer")))
    assert resp.status_code == 200, resp.text
    assert resp.json()["resolved"] == [] and resp.json()["resolved_unmatched"] == 2
    assert world.stored() == [] and world.state.calls_to("chat.postMessage") == []


def test_the_catalog_renames_the_labels(make_world: Callable[..., World]) -> None:
    world = make_world(renamed=True)
    alert = am_alert("e000000000000005")
    alert["labels"] = {"alertname": "Down", "service": "retriever",
                       "credential": "model-api-key", "env": "dev"}
    resp = world.send(notification(alert))
    assert resp.status_code == 200, resp.text
    (summary,) = resp.json()["alerts"]
    assert (summary["consumer"], summary["secret"], summary["lane"]) == (
        "retriever", "model-api-key", "dev")
    missing = world.send(notification(am_alert("f000000000000006")))  # `consumer` is not it
    assert missing.status_code == 422 and missing.json()["field"] == "alerts[0].labels.service"


def test_basic_auth_carries_the_token_too(make_world: Callable[..., World]) -> None:
    world = make_world()
    auth = "Basic " + base64.b64encode(f"alertmanager:{TOKEN}".encode()).decode()
    resp = world.send(notification(am_alert("a100000000000001")), authorization=auth)
    assert resp.status_code == 200, resp.text
    assert resp.json()["alerts"][0]["new"]


def test_refusals_name_the_problem_and_log_no_token(
    make_world: Callable[..., World], caplog: pytest.LogCaptureFixture,
) -> None:
    world = make_world()
    body = notification(am_alert("a200000000000001"))
    wrong = "w" * 48
    with caplog.at_level(logging.DEBUG):
        refused = world.send(body, authorization=f"Bearer {wrong}")
    assert refused.status_code == 401 and "ROTABOT_ALERTMANAGER_TOKEN" in refused.json()["error"]
    assert wrong not in caplog.text and TOKEN not in caplog.text
    assert world.send(body, authorization=f"Token {TOKEN}").status_code == 401
    # The token is for Alertmanager's payloads only: a connector's report is refused.
    report = json.dumps({"consumer": "inference-api", "status_code": 401}).encode()
    not_am = world.send(report)
    assert not_am.status_code == 422 and "Alertmanager webhook payload" in not_am.json()["error"]
    old = world.send(json.dumps({**json.loads(body), "version": "3"}).encode())
    assert old.status_code == 422 and old.json()["field"] == "version"
    # Signature headers decide: with them the request is a connector's, checked by HMAC.
    signed = world.send(body, **{"X-Rotabot-Timestamp": "1", "X-Rotabot-Signature": "v1=00"})
    assert signed.status_code == 401 and "Timestamp" in signed.json()["error"]
    assert world.stored() == []
    # The HMAC path still takes a signed report, Authorization header or not.
    stamp = str(int(world.c.clock.now().timestamp()))
    ok = world.send(report, **{"X-Rotabot-Timestamp": stamp,
                               "X-Rotabot-Signature": sign(ALERT_SECRET, stamp, report)})
    assert ok.status_code == 200, ok.text


def test_without_a_configured_token_alertmanager_is_told_intake_is_off(
    make_world: Callable[..., World],
) -> None:
    world = make_world(tokens="")
    resp = world.send(notification(am_alert("a300000000000001")))
    assert resp.status_code == 503 and "ROTABOT_ALERTMANAGER_TOKEN" in resp.json()["error"]


def test_a_retry_after_a_5xx_takes_the_whole_notification_once(
    make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The firing alerts of a notification are group-committed in one transaction: a failure
    # half-way stores none of them and keeps none of their keys, so the retry takes them all.
    world = make_world()
    svc = world.c.alerts
    real = svc._place
    calls = {"n": 0}

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            from bot.domain.errors import StoreUnavailable
            raise StoreUnavailable("database at 127.0.0.1:5432 is unreachable")
        return real(*args, **kwargs)

    monkeypatch.setattr(svc, "_place", flaky)
    body = notification(am_alert("a400000000000001"),
                        am_alert("a400000000000002", consumer="retriever",
                                 status_code="", error="ECONNREFUSED"),
                        group='{}:{secret="model-api-key"}')
    failed = world.send(body)
    assert failed.status_code == 503 and failed.headers["Retry-After"]
    assert world.stored() == [] and world.incident() == []
    retried = world.send(body)  # Alertmanager's retry of the same notification
    assert retried.status_code == 200, retried.text
    assert retried.json()["duplicates"] == 0
    assert [(a["consumer"], a["new"]) for a in retried.json()["alerts"]] == [
        ("inference-api", True), ("retriever", True)]
    assert sorted((a.consumer, a.count) for a in world.stored()) == [
        ("inference-api", 1), ("retriever", 1)]
    assert world.send(body).json()["duplicates"] == 2


def test_a_firing_alert_for_an_unknown_consumer_is_refused_whole(
    make_world: Callable[..., World],
) -> None:
    world = make_world()
    resp = world.send(notification(am_alert("a500000000000001"),
                                   am_alert("a500000000000002", consumer="inferense-api")))
    assert resp.status_code == 404 and resp.json()["suggestions"] == ["inference-api"]
    assert world.stored() == []
    # Nothing was kept: the notification, once the catalog knows the name, is processed.
    resp = world.send(notification(am_alert("a500000000000001")))
    assert resp.json()["duplicates"] == 0 and resp.json()["alerts"][0]["new"]


def test_the_flood_limit_is_a_503_alertmanager_retries(make_world: Callable[..., World]) -> None:
    world = make_world()
    ticks = [0.0]
    world.use_route(limiter=RateLimiter(rate=1.0, burst=1.0, clock=lambda: ticks[0]))
    assert world.send(notification(am_alert("a600000000000001"))).status_code == 200
    body = notification(am_alert("a600000000000001"), am_alert("a600000000000002",
                                                               alertname="Other"))
    limited = world.send(body)
    # 503, not 429: Alertmanager drops what a 4xx refuses, and retries a 5xx.
    assert limited.status_code == 503 and limited.headers["Retry-After"] == "1"
    assert [a.count for a in world.stored()] == [1]
    ticks[0] += 1.0
    retried = world.send(body)  # the refused alert's key was freed: it is taken now
    assert retried.status_code == 200, retried.text
    assert retried.json()["duplicates"] == 1 and retried.json()["alerts"][0]["count"] == 2
