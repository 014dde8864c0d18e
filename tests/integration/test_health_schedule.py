"""Scheduled health checks: real HTTP consumers, real database, real Slack stand-in.

The schedule (bot/services/health_schedule.py) runs the catalog's health checks of every
rotation that is distributing, validating or observing, through adapters.health.HealthChecker,
and hands failures to the alert pipeline: stored, coalesced, posted, blocking the gate. """

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from harness.backends import LocalBackends

from adapters.health import HealthChecker
from bot.domain.alert import Alert
from bot.domain.clock import FixedClock
from bot.domain.lifecycle import Phase, StepState
from bot.runtime.bootstrap import Container, build
from bot.runtime.settings import Settings, SettingsError
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.sandbox.slack_standin.state import Call
from bot.services.health_schedule import SOURCE, HealthSchedule

ADMIN = "U0SECOPS"


class Consumers:
    """Loopback consumers: ``/<name>`` answers the status the test sets for that name, and
    the server counts requests in flight at once."""

    def __init__(self) -> None:
        self.status: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.strip("/")
                with lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                    outer.hits[name] = outer.hits.get(name, 0) + 1
                time.sleep(0.05)  # long enough for a batch to overlap, if it could
                status = outer.status.get(name, 200)
                body = json.dumps({"error": "invalid_api_key"} if status == 401 else {}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with lock:
                    outer.in_flight -= 1

            def log_message(self, format: str, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()




def catalog(consumers: Consumers, names: list[str]) -> str:
    lines = "\n".join(
        f"      {n}: {{owner: U0BOB, lane: dev, reload: hot, "
        f"health_check: {{url: \"{consumers.url(n)}\", timeout: 10s}}}}"
        for n in names
    )
    return f"""\
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [{ADMIN}]
  lanes: [dev, prod]
  overlap: 24h
  observe: 2h
stores:
  files: {{kind: file, path: ./secrets}}
secrets:
  model-api-key:
    issuer: {{kind: manual}}
    store: {{name: files, path: ai/model-api-key}}
    consumers:
{lines}
      inference-api: {{owner: U0ALICE, lane: prod, reload: hot}}
"""


class World:
    def __init__(self, c: Container, state: StandinState, clock: FixedClock,
                 consumers: Consumers, max_concurrency: int = 8) -> None:
        self.c, self.state, self.clock, self.consumers = c, state, clock, consumers
        self.checker = HealthChecker(env=os.environ, max_concurrency=max_concurrency)
        self.schedule = HealthSchedule(c.alerts, self.checker, timedelta(seconds=60))

    def start(self) -> int:
        r = self.c.service.start("model-api-key", actor=ADMIN)
        assert r.id is not None and r.phase is Phase.DISTRIBUTING
        self.c.notifier.flush()
        return r.id

    def first_round(self) -> int:
        """The schedule first sees the rotation and waits one interval before checking."""
        assert self.schedule.run_due() == 0
        self.clock.advance(self.schedule.interval)
        return self.schedule.run_due()

    def alerts(self) -> list[Alert]:
        with self.c.service.uow_factory() as uow:
            return uow.alerts.recent(100)

    def posts_to(self, channel: str) -> list[Call]:
        return [c for c in self.state.calls_to("chat.postMessage")
                if c.args.get("channel") == channel]


MakeWorld = Callable[..., World]


@pytest.fixture
def make_world(database_url: str, tmp_path: Path) -> Iterator[MakeWorld]:
    made: list[tuple[World, StandinServer]] = []

    def make(names: list[str], max_concurrency: int = 8) -> World:
        consumers = Consumers()
        state = StandinState()
        for user in (ADMIN, "U0ALICE", "U0BOB"):
            state.add_user(user, user.lower())
        state.add_channel("C0ROTATE", "rotations", members=[ADMIN])
        state.add_channel("C0INCIDENT", "incidents", members=[ADMIN])
        path = tmp_path / "catalog.yml"
        path.write_text(catalog(consumers, names))
        server = StandinServer(state).start()
        settings = Settings(catalog_path=str(path), database_url=database_url,
                            slack_api_url=server.base_url, slack_bot_token="xoxb-test",
                            slack_signing_secret="0" * 32, alert_secret="k")
        clock = FixedClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
        c = build(settings, clock=clock, migrate=True, backends=LocalBackends(tmp_path / "s"))
        w = World(c, state, clock, consumers, max_concurrency)
        made.append((w, server))
        return w

    yield make
    for w, server in made:
        w.schedule.alerts.flush()
        w.c.notifier.flush()
        assert w.state.violations == []
        w.checker.close()
        w.consumers.stop()
        server.stop()
        w.c.engine.dispose()


def test_a_failing_check_becomes_an_alert_that_posts_coalesces_and_blocks_the_gate(
    make_world: MakeWorld,
) -> None:
    w: World = make_world(["retriever"])
    rid = w.start()
    w.consumers.status["retriever"] = 401

    assert w.first_round() == 1
    (alert,) = w.alerts()
    assert (alert.consumer, alert.lane, alert.failure_class, alert.source, alert.rotation_id) == (
        "retriever", "dev", "authentication", SOURCE, rid)
    assert "HTTP 401" in alert.reason
    # Posted like any alert: to the incident channel and into the rotation's thread.
    assert len(w.posts_to("C0INCIDENT")) == 1
    thread = [c for c in w.posts_to("C0ROTATE") if c.args.get("thread_ts")]
    assert any("retriever (dev) is failing authentication" in str(c.args) for c in thread)

    # Not due again before the interval: nothing is checked.
    w.clock.advance(timedelta(seconds=30))
    assert w.schedule.run_due() == 0
    assert w.consumers.hits["retriever"] == 1
    # Due again: the repeat counts into the same alert, no new message.
    w.clock.advance(timedelta(seconds=30))
    assert w.schedule.run_due() == 1
    (alert,) = w.alerts()
    assert alert.count == 2
    assert len(w.posts_to("C0INCIDENT")) == 1

    # Through the switch into observing: the gate names the alert until it is resolved.
    svc = w.c.service
    w.consumers.status["retriever"] = 200  # healthy while the owner validates it
    for name, owner in (("retriever", "U0BOB"), ("inference-api", "U0ALICE")):
        svc.step(rid, name, StepState.DISTRIBUTED, actor=owner)
        svc.step(rid, name, StepState.VALIDATED, actor=owner)
    w.consumers.status["retriever"] = 401
    svc.switch(rid, actor=ADMIN)
    for name, owner in (("retriever", "U0BOB"), ("inference-api", "U0ALICE")):
        svc.step(rid, name, StepState.SIGNED_OFF, actor=owner)
    w.clock.advance(timedelta(hours=3))
    assert w.schedule.run_due() == 1  # still failing: past the coalescing window, a new alert
    assert any("retriever (dev) failing authentication" in u for u in svc.gate(rid).unmet)
    for open_alert in w.alerts():
        w.c.alerts.not_related(open_alert.id or 0, actor=ADMIN)
    w.consumers.status["retriever"] = 200
    w.clock.advance(timedelta(minutes=1))
    assert w.schedule.run_due() == 1
    assert svc.gate(rid).open
    w.clock.advance(timedelta(minutes=1))
    w.consumers.status["retriever"] = 503
    assert w.schedule.run_due() == 1
    network = [a for a in w.alerts() if a.failure_class == "network"]
    assert len(network) == 1 and network[0].source == SOURCE
    gate = svc.gate(rid)
    assert not gate.open
    assert any(network[0].ref in u for u in gate.unmet)


def test_passing_checks_store_and_post_nothing(make_world: MakeWorld) -> None:
    w: World = make_world(["retriever"])
    w.start()
    before = len(w.state.calls_to("chat.postMessage"))
    assert w.first_round() == 1
    assert w.alerts() == []
    w.c.notifier.flush()
    assert len(w.state.calls_to("chat.postMessage")) == before


def test_only_running_rotations_are_checked(make_world: MakeWorld) -> None:
    w: World = make_world(["retriever"])
    assert w.schedule.run_due() == 0  # no rotation at all
    rid = w.start()
    w.c.service.rollback(rid, actor=ADMIN)
    w.clock.advance(timedelta(minutes=5))
    assert w.schedule.run_due() == 0
    assert "retriever" not in w.consumers.hits


def test_checks_run_in_one_batch_bounded_by_the_checker(make_world: MakeWorld) -> None:
    names = [f"worker-{i}" for i in range(6)]
    w: World = make_world(names, max_concurrency=2)
    w.start()
    for n in names:
        w.consumers.status[n] = 429
    assert w.first_round() == 6
    assert w.consumers.max_in_flight <= 2
    assert sorted(w.consumers.hits) == names
    alerts = w.alerts()
    assert sorted(a.consumer for a in alerts) == names
    assert {a.failure_class for a in alerts} == {"rate-limit"}


def interval_from_env(env: dict[str, str]) -> timedelta:
    return Settings.from_env(env).health_interval


def test_interval_from_the_environment() -> None:
    assert interval_from_env({}) == timedelta(seconds=60)
    assert interval_from_env({"ROTABOT_HEALTH_INTERVAL": "15"}) == timedelta(seconds=15)
    assert interval_from_env({"ROTABOT_HEALTH_INTERVAL": "2m"}) == timedelta(minutes=2)
    assert interval_from_env({"ROTABOT_HEALTH_INTERVAL": "0"}) == timedelta(seconds=1)
    with pytest.raises(SettingsError, match="ROTABOT_HEALTH_INTERVAL"):
        interval_from_env({"ROTABOT_HEALTH_INTERVAL": "soon"})
