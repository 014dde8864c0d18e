"""Replay protection with the composition root and real storage, on SQLite and PostgreSQL.

- The Slack app (Bolt with the replay middleware, bot/runtime/server.py) whose database is
  down: the request is refused, not taken on trust, the person is told, and the app keeps
  serving; nothing was remembered, so the same request is processed once the database is back.
- One user action processed by two replicas at once (containers built by ``build`` on one
  database, racing from threads), and again after a cancel and a restart: one rotation, one
  credential, one alert.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from harness.backends import LocalBackends
from harness.concurrency import race
from harness.serve import ADMIN, CHANNEL, catalog_head, workspace
from sqlalchemy import func, select
from starlette.testclient import TestClient

from bot.domain.lifecycle import Phase
from bot.runtime.bootstrap import Container, build
from bot.runtime.server import bolt_app, web_app
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.sandbox.slack_standin.slack_side import SlackSide
from storage.engine import make_engine
from storage.slack_requests import SLACK_REQUESTS, SqlSlackRequests
from storage.sql_common import ALERTS, ROTATIONS

SIGNING_SECRET = "0123456789abcdef0123456789abcdef"
SECRET = "cache-password"
CATALOG = catalog_head(observe="3s") + """\
stores:
  files: {kind: file, path: ./unused}
secrets:
  cache-password:
    issuer: {kind: local}
    store: {name: files, path: infra/cache}
    consumers:
      cache-api: {owner: U0BOB, lane: dev, reload: restart, rollback: undo deploy}
"""


@dataclasses.dataclass
class World:
    state: StandinState
    new: Callable[[], Container]  # another replica (or a restart) on the same database
    store_root: Path

    def count(self, c: Container, table: str) -> int:
        t = {"rotations": ROTATIONS, "alerts": ALERTS, "slack_requests": SLACK_REQUESTS}[table]
        with c.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t)).scalar_one())

    def versions(self, c: Container) -> int:
        store = LocalBackends(self.store_root).store
        return len(store.describe(c.catalog.secret(SECRET).store.path).versions)


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    state = workspace("rotabot-replay")
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(CATALOG)
    built: list[Container] = []
    with StandinServer(state) as server:
        settings = Settings(
            catalog_path=str(catalog),
            database_url=database_url,
            slack_api_url=server.base_url,
            slack_bot_token="xoxb-test",
            slack_signing_secret=SIGNING_SECRET,
        )

        def new() -> Container:
            c = build(settings, migrate=True, backends=LocalBackends(tmp_path / "s"))
            c.notifier.min_interval = 0.0
            built.append(c)
            return c

        yield World(state, new, tmp_path / "s")
        for c in built:
            c.notifier.flush()
            c.alerts.flush()
            c.engine.dispose()
        assert state.violations == []


def slack_for(world: World, c: Container) -> tuple[SlackSide, list[httpx.Request]]:
    """Slack's side speaking to this container's app in process (listeners finish before
    the answer), and every request it sends, as sent."""
    client = TestClient(web_app(bolt_app(c, process_before_response=True)),
                        base_url="http://rotabot.test", raise_server_exceptions=False)
    sent: list[httpx.Request] = []
    client.event_hooks["request"].append(sent.append)
    return SlackSide(world.state, "http://rotabot.test/slack/events", SIGNING_SECRET,
                     http=client), sent


def resend(slack: SlackSide, request: httpx.Request) -> httpx.Response:
    return slack.http.post(slack.events_url, content=request.content, headers={
        k: request.headers[k]
        for k in ("content-type", "x-slack-request-timestamp", "x-slack-signature")})


def told(world: World, words: str) -> list[str]:
    return [e.text for e in world.state.ephemerals_for(ADMIN) if words in e.text]


def test_a_database_that_is_down_refuses_the_request_and_the_app_keeps_serving(
    world: World,
) -> None:
    healthy = world.new()
    with socket.socket() as sock:  # a bound port nobody listens on: PostgreSQL is down
        sock.bind(("127.0.0.1", 0))
        down = make_engine(f"postgresql+psycopg://rotabot:pw-not-shown@127.0.0.1:"
                           f"{sock.getsockname()[1]}/rotabot")
        try:
            broken = dataclasses.replace(
                healthy, slack_requests=SqlSlackRequests(down, healthy.clock))
            slack, sent = slack_for(world, broken)

            reply = slack.command(ADMIN, CHANNEL, f"start {SECRET}")
            assert reply.status == 200  # as any listener meeting a database that is down
            assert told(world, "cannot be reached") and not told(world, "pw-not-shown")
            assert world.count(healthy, "rotations") == 0  # fail closed: no listener ran
            assert world.versions(healthy) == 0
            # Still serving: the next request is answered the same way, nothing crashed.
            assert slack.command(ADMIN, CHANNEL, "list").status == 200
            assert len(told(world, "cannot be reached")) == 2
        finally:
            down.dispose()

    # The database is back (another replica, the same request): nothing was remembered of
    # the refused attempt, so it is processed, once.
    slack, _ = slack_for(world, healthy)
    assert resend(slack, sent[0]).status_code == 200
    assert told(world, "Started R-1")
    assert resend(slack, sent[0]).text == ""
    assert world.count(healthy, "rotations") == 1 and len(told(world, "Started")) == 1


def test_one_start_on_two_replicas_starts_one_rotation_even_after_a_cancel(
    world: World,
) -> None:
    a, b = world.new(), world.new()

    def start(c: Container, action: str = "T0START.1") -> str:
        return c.service.start(SECRET, actor=ADMIN, action_id=action).ref

    outcomes = race([lambda: start(a), lambda: start(b)])
    # One replica started it; the other was answered with it, or told it is being processed.
    assert "R-1" in outcomes and set(outcomes) <= {"R-1", "ActionInFlight"}, outcomes
    assert world.count(a, "rotations") == 1 and world.versions(a) == 1

    assert a.service.cancel(1, actor=ADMIN).phase is Phase.CANCELLED
    assert start(b) == "R-1"  # the issue: after a cancel, the same start again
    assert start(world.new()) == "R-1"  # a restarted replica
    assert world.count(a, "rotations") == 1 and world.versions(a) == 1  # nothing minted
    assert start(b, "T0START.2") == "R-2"  # another action is another start


def test_one_problem_report_on_two_replicas_adds_one_alert(world: World) -> None:
    a, b = world.new(), world.new()
    rotation = a.service.start(SECRET, actor=ADMIN)
    assert rotation.id is not None

    def report(c: Container) -> str:
        return c.service.report_problem(rotation.id or 0, "cache-api", actor="U0BOB",
                                        description="fails with 401", action_id="V0REPORT").ref

    outcomes = race([lambda: report(a), lambda: report(b)])
    assert "A-1" in outcomes and set(outcomes) <= {"A-1", "ActionInFlight"}, outcomes
    assert report(b) == "A-1" and report(world.new()) == "A-1"
    assert world.count(a, "alerts") == 1
