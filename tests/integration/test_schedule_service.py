"""Scheduled rotations end to end by moving a FixedClock: real SQLite/PostgreSQL, the Slack
stand-in, signed `/rotate schedule` commands and Confirm-ready clicks into the real Bolt app.

Covers: admin-only scheduling and times in the past, the readiness review posted
``readiness_lead`` before (findings, a button per owner), owners' confirmations (a group
member for a group, strangers refused), the start on the day only when readiness passed and
exactly once across restarts and replicas, the admins asked otherwise (including a store that
cannot be reached on the day), rescheduling, and max_age "due" reminders.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from starlette.testclient import TestClient

from adapters.file_store import FileStore
from adapters.local_issuer import LocalIssuer
from bot.catalog import load_catalog
from bot.domain.clock import FixedClock
from bot.domain.lifecycle import Phase, StepState
from bot.domain.schedule import ScheduleStatus
from bot.runtime.backends import CatalogBackends
from bot.runtime.bootstrap import Container, build
from bot.runtime.server import bolt_app, create_web_app
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.sandbox.slack_standin.slack_side import SlackSide
from bot.sandbox.slack_standin.state import Ephemeral, Message
from bot.services.ports import Issuer, LaneTarget, Store
from bot.services.schedules import ScheduleService
from handlers.ids import Action
from storage.sql_common import AUDIT, SCHEDULES

SIGNING_SECRET = "0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # the example from the issue
ADMIN = "U0SECOPS"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0SECOPS]
  lanes: [dev, prod]
  overlap: 24h
  observe: 2h
stores:
  files: {{kind: file, path: ./secrets}}
  vault: {{kind: vault-kv2, url: "http://127.0.0.1:{vault_port}", mount: secret,
           token_env: ROTABOT_TEST_VAULT_TOKEN}}
secrets:
  model-api-key:
    issuer: {{kind: manual}}
    store: {{name: files, path: ai/model-api-key}}
    consumers:
      ingest-dev: {{owner: U0DEV, lane: dev, reload: hot,
                   health_check: {{url: "http://127.0.0.1:9/healthz"}}}}
      inference-api: {{owner: S0PROD, lane: prod, reload: hot}}
  cache-password:
    issuer: {{kind: manual}}
    store: {{name: vault, path: infra/cache}}
    consumers:
      retriever: {{owner: U0DEV, lane: dev, reload: hot}}
  search-key:
    issuer: {{kind: manual}}
    store: {{name: files, path: ai/search}}
    max_age: 30d
    consumers:
      searcher: {{owner: U0DEV, lane: dev, reload: hot}}
"""


class Backends:
    """The real file store and local issuer for every secret, except that secrets stored in
    the catalog's Vault get the real Vault adapter (pointed at a port nothing listens on)."""

    def __init__(self, root: Path, catalog_path: Path) -> None:
        self.store = FileStore(root)
        self.issuer = LocalIssuer()
        self.catalog = CatalogBackends(load_catalog(catalog_path), os.environ)

    def store_for(self, secret: str) -> Store:
        if secret == "cache-password":
            return self.catalog.store_for(secret)
        return self.store

    def issuer_for(self, secret: str) -> Issuer:
        return self.issuer

    def targets_for(self, secret: str) -> dict[str, list[LaneTarget]]:
        return {}


class World:
    def __init__(self, state: StandinState, clock: FixedClock, settings: Settings,
                 backends: Backends) -> None:
        self.state, self.clock, self.settings, self.backends = state, clock, settings, backends
        self.containers: list[Container] = []
        self.c = self.replica()
        self.svc = self.c.schedules
        bolt = bolt_app(self.c, process_before_response=True)
        self.http = TestClient(create_web_app(self.c, bolt))
        self.slack = SlackSide(state, "http://testserver/slack/events", SIGNING_SECRET,
                               http=self.http)

    def replica(self) -> Container:
        """Another process on the same database (a restart, or a second replica)."""
        c = build(self.settings, clock=self.clock, migrate=True, backends=self.backends)
        self.containers.append(c)
        return c

    def command(self, user: str, text: str) -> str:
        before = len(self.state.ephemerals_for(user))
        reply = self.slack.command(user, "C0ROTATE", text)
        assert reply.status == 200, reply.body
        # process_before_response: the answer is in the stand-in when the request returns.
        (found,) = self.state.ephemerals_for(user)[before:]
        return found.text + json.dumps(found.blocks)

    def click(self, user: str, message: Message, owner: str) -> Ephemeral | None:
        before = len(self.state.ephemerals_for(user))
        value = next(
            str(b["accessory"]["value"]) for b in message.blocks
            if b.get("accessory", {}).get("action_id") == Action.CONFIRM_READY.value
            and json.loads(b["accessory"]["value"])["owner"] == owner
        )
        reply = self.slack.click(user, channel="C0ROTATE", message_ts=message.ts,
                                 action_id=Action.CONFIRM_READY.value, value=value)
        assert reply.status == 200, reply.body
        return next(iter(self.state.ephemerals_for(user)[before:]), None)

    def messages(self, needle: str) -> list[Message]:
        return [m for m in self.state.channel_messages("C0ROTATE") if needle in m.text]

    def review(self, secret: str = "model-api-key") -> Message:
        (m,) = self.messages(f"Readiness review: {secret}")
        fresh = self.state.find_message("C0ROTATE", m.ts)
        assert fresh is not None
        return fresh

    def schedule(self, secret: str = "model-api-key", at: datetime = AT) -> int:
        item = self.svc.schedule(secret, at, actor=ADMIN)
        assert item.id is not None
        return item.id

    def status(self, schedule_id: int) -> ScheduleStatus:
        return self.svc.get(schedule_id).status

    def audit(self, action: str) -> list[dict[str, Any]]:
        with self.c.engine.connect() as conn:
            rows = conn.execute(
                select(AUDIT).where(AUDIT.c.action == action).order_by(AUDIT.c.id)
            ).mappings()
            return [dict(r) for r in rows]

    def rotations_started(self) -> int:
        with self.c.engine.connect() as conn:
            return int(conn.execute(
                select(func.count()).select_from(AUDIT).where(
                    AUDIT.c.action == "rotation.started"
                )
            ).scalar_one())

    def flush(self) -> None:
        for c in self.containers:
            c.notifier.flush()


@pytest.fixture
def world(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    # The bot's Vault token comes from the environment the catalog names; Vault itself is down.
    monkeypatch.setenv("ROTABOT_TEST_VAULT_TOKEN", "test-token-for-a-vault-that-is-down")
    state = StandinState()
    for user in (ADMIN, "U0DEV", "U0CAROL", "U0EVE"):
        state.add_user(user, user.lower())
    state.add_usergroup("S0PROD", "prod-team", ["U0CAROL"])
    state.add_channel("C0ROTATE", "rotations", members=[ADMIN])
    state.add_channel("C0INCIDENT", "incidents", members=[ADMIN])
    path = tmp_path / "catalog.yml"
    path.write_text(CATALOG.format(vault_port=closed_port()))
    clock = FixedClock(T0)
    backends = Backends(tmp_path / "secrets", path)
    with StandinServer(state) as server:
        settings = Settings(
            catalog_path=str(path),
            database_url=database_url,
            slack_api_url=server.base_url,
            slack_bot_token="xoxb-test",
            slack_signing_secret=SIGNING_SECRET,
        )
        w = World(state, clock, settings, backends)
        try:
            yield w
            w.flush()
            assert state.violations == []  # every Slack call was well-formed
        finally:
            w.http.close()
            for c in w.containers:
                c.engine.dispose()


# --- scheduling --------------------------------------------------------------------------


def test_schedule_command_is_for_admins_and_refuses_bad_or_past_times(world: World) -> None:
    usage = "/rotate schedule SECRET at 2026-12-01T09:00Z"
    stranger = world.command("U0DEV", "schedule model-api-key at 2026-12-01T09:00Z")
    assert "only admins of model-api-key may schedule" in stranger

    past = world.command(ADMIN, "schedule model-api-key at 2026-11-24T09:00Z")
    assert "2026-11-24T09:00Z is in the past (it is 2026-11-25T09:00Z now)" in past
    assert usage in past

    zoneless = world.command(ADMIN, "schedule model-api-key at 2026-12-01T09:00")
    assert "has no time zone" in zoneless and usage in zoneless

    unknown = world.command(ADMIN, "schedule model-api-kee at 2026-12-01T09:00Z")
    assert "model-api-key" in unknown  # the closest name is suggested
    assert world.svc.open_schedules() == []

    ok = world.command(ADMIN, "schedule model-api-key at 2026-12-01T09:00Z")
    assert "Scheduled SR-1: `model-api-key` rotates" in ok
    assert "(2026-12-01T09:00Z)" in ok
    assert "the readiness review is posted in <#C0ROTATE>" in ok and "(2d before)" in ok
    (item,) = world.svc.open_schedules()
    assert (item.secret, item.at, item.created_by, item.status) == (
        "model-api-key", AT, ADMIN, ScheduleStatus.SCHEDULED
    )
    (created,) = world.audit("schedule.created")
    assert (created["actor"], created["secret"], created["after"]) == (
        ADMIN, "model-api-key", "scheduled"
    )
    assert json.loads(created["detail"]) == {"at": "2026-12-01T09:00Z", "schedule": "SR-1"}


def test_scheduling_again_replaces_the_open_schedule(world: World) -> None:
    first = world.schedule(at=AT)
    second = world.schedule(at=AT + timedelta(days=7))
    assert world.status(first) is ScheduleStatus.CANCELLED
    assert world.svc.get(first).outcome == "replaced by a schedule for 2026-12-08T09:00Z"
    assert [s.id for s in world.svc.open_schedules()] == [second]
    (replaced,) = world.audit("schedule.replaced")
    assert (replaced["before"], replaced["after"]) == ("scheduled", "cancelled")
    # The database itself refuses a second open schedule for a secret.
    row = {"secret": "model-api-key", "at": AT, "created_by": ADMIN, "created_at": T0,
           "status": "review-posted", "findings": "[]"}
    with pytest.raises(IntegrityError), world.c.engine.begin() as conn:
        conn.execute(insert(SCHEDULES).values(**row))


# --- the readiness review ----------------------------------------------------------------


def test_review_is_posted_readiness_lead_before_once_with_findings_and_buttons(
    world: World,
) -> None:
    world.schedule()
    world.clock.advance(AT - timedelta(days=2) - T0 - timedelta(seconds=1))
    assert world.svc.run_due() == 0
    assert world.messages("Readiness review") == []

    world.clock.advance(timedelta(seconds=1))
    assert world.svc.run_due() == 1
    for _ in range(3):
        assert world.svc.run_due() == 0
    assert world.replica() and world.containers[-1].schedules.run_due() == 0

    review = world.review()
    body = json.dumps(review.blocks)
    assert "SR-1" in review.text and "2026-12-01T09:00Z" in review.text
    assert "inference-api (prod) has no health_check" in body  # a catalog finding, in words
    assert "blocking" not in body  # the store is reachable and the issuer is usable
    buttons = [b["accessory"] for b in review.blocks
               if b.get("accessory", {}).get("action_id") == Action.CONFIRM_READY.value]
    assert [json.loads(b["value"])["owner"] for b in buttons] == ["U0DEV", "S0PROD"]
    assert "<@U0DEV>" in body and "<!subteam^S0PROD>" in body
    (posted,) = world.audit("schedule.review")
    assert (posted["before"], posted["after"], posted["actor"]) == (
        "scheduled", "review-posted", "rotabot"
    )


def test_owners_confirm_and_it_starts_on_the_day_exactly_once(world: World) -> None:
    sid = world.schedule()
    world.clock.advance(AT - timedelta(days=2) - T0)
    world.svc.run_due()

    refused = world.click("U0EVE", world.review(), "U0DEV")
    assert refused is not None and "only owner <@U0DEV> (or a member)" in refused.text
    (click,) = world.audit("click.refused")
    assert click["actor"] == "U0EVE" and json.loads(click["detail"])["owner"] == "U0DEV"

    assert world.click("U0DEV", world.review(), "U0DEV") is None  # the message says it
    assert "confirmed by <@U0DEV>" in json.dumps(world.review().blocks)
    again = world.svc.confirm(sid, "U0DEV", actor="U0DEV")
    assert not again.changed and not again.readiness.passed
    assert world.status(sid) is ScheduleStatus.REVIEW_POSTED

    # The prod owner is a user group: one of its members confirms for it.
    thanks = world.click("U0CAROL", world.review(), "S0PROD")
    assert thanks is not None and "every owner confirmed" in thanks.text
    assert world.status(sid) is ScheduleStatus.READINESS_PASSED
    assert len(world.audit("schedule.confirmed")) == 2

    world.clock.advance(timedelta(days=2) - timedelta(minutes=1))
    assert world.svc.run_due() == 0  # not a minute early
    world.clock.advance(timedelta(minutes=1))
    replicas = [world.svc, world.replica().schedules]
    outcomes: list[int] = []
    threads = [threading.Thread(target=lambda s=s: outcomes.append(s.run_due()))
               for s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == [0, 1]
    assert world.svc.run_due() == 0

    item = world.svc.get(sid)
    assert item.status is ScheduleStatus.STARTED and item.rotation_id is not None
    rotation = world.c.service.get(item.rotation_id)
    assert rotation.started_by == ADMIN and rotation.secret == "model-api-key"
    assert rotation.phase is Phase.DISTRIBUTING  # the new credential exists beside the old
    assert world.rotations_started() == 1
    world.flush()
    assert f"Started R-{item.rotation_id}." in json.dumps(world.review().blocks)
    assert "Confirm ready" not in json.dumps(world.review().blocks)


def test_without_every_confirmation_the_admins_are_asked_and_nothing_starts(
    world: World,
) -> None:
    sid = world.schedule()
    world.clock.advance(AT - timedelta(days=2) - T0)
    world.svc.run_due()
    world.click("U0DEV", world.review(), "U0DEV")

    world.clock.advance(timedelta(days=2))
    assert world.svc.run_due() == 1
    assert world.svc.run_due() == 0
    assert world.status(sid) is ScheduleStatus.NEEDS_ADMIN
    assert world.c.service.active() == []
    (ask,) = world.messages("did not start")
    text = json.dumps(ask.blocks)
    assert "<@U0SECOPS>" in text
    assert "not confirmed ready by owner <!subteam^S0PROD>" in text
    assert "/rotate start model-api-key" in text and "/rotate schedule model-api-key at" in text
    (needs,) = world.audit("schedule.needs-admin")
    assert needs["reason"] == "not confirmed ready by owner S0PROD"
    # A late confirmation is recorded but starts nothing: the admins decide now.
    world.svc.confirm(sid, "S0PROD", actor="U0CAROL")
    world.clock.advance(timedelta(hours=1))
    assert world.svc.run_due() == 0 and world.c.service.active() == []


def test_a_store_that_cannot_be_reached_blocks_the_start_even_with_every_owner(
    world: World,
) -> None:
    sid = world.schedule("cache-password")
    world.clock.advance(AT - timedelta(days=2) - T0)
    world.svc.run_due()
    review = world.review("cache-password")
    body = json.dumps(review.blocks)
    assert "*blocking* (store)" in body and "infra/cache" in body and "127.0.0.1" in body
    world.click("U0DEV", review, "U0DEV")
    # Every owner confirmed, but the review found a blocker: readiness has not passed.
    assert world.status(sid) is ScheduleStatus.REVIEW_POSTED

    world.clock.advance(timedelta(days=2))
    assert world.svc.run_due() == 1
    assert world.status(sid) is ScheduleStatus.NEEDS_ADMIN
    assert world.c.service.active() == []
    reason = world.svc.get(sid).outcome or ""
    assert "store 'vault' (vault-kv2" in reason and "cannot be read for infra/cache" in reason
    assert "test-token-for-a-vault-that-is-down" not in json.dumps(
        [c.args for c in world.state.calls]
    )


def test_a_review_time_missed_while_down_goes_to_the_admins_on_the_day(world: World) -> None:
    sid = world.schedule()
    world.clock.advance(AT - T0 + timedelta(hours=3))  # the bot was down through it all
    assert world.svc.run_due() == 1
    assert world.status(sid) is ScheduleStatus.NEEDS_ADMIN
    assert world.c.service.active() == []
    (ask,) = world.messages("did not start")
    assert "not confirmed ready by owner <@U0DEV>" in json.dumps(ask.blocks)


# --- max_age -----------------------------------------------------------------------------


def rotate_fully(world: World, secret: str) -> int:
    svc = world.c.service
    rotation = svc.start(secret, actor=ADMIN)
    assert rotation.id is not None
    for con in rotation.consumers_in_order():
        svc.step(rotation.id, con.name, StepState.DISTRIBUTED, actor=con.owner)
        svc.step(rotation.id, con.name, StepState.VALIDATED, actor=con.owner)
    svc.switch(rotation.id, actor=ADMIN)
    for con in rotation.consumers_in_order():
        svc.step(rotation.id, con.name, StepState.SIGNED_OFF, actor=con.owner)
    world.clock.advance(timedelta(hours=2))
    svc.tick(rotation.id)
    assert svc.revoke(rotation.id, actor=ADMIN).phase is Phase.REVOKED
    return rotation.id


def test_max_age_turns_into_due_reminders_once_per_week(world: World) -> None:
    svc: ScheduleService = world.svc
    assert svc.run_due() == 0  # first seen now: 30d from here it is due
    world.clock.advance(timedelta(days=30) - timedelta(seconds=1))
    assert svc.run_due() == 0
    world.clock.advance(timedelta(seconds=1))
    assert svc.run_due() == 1
    assert svc.run_due() == 0
    assert world.replica().schedules.run_due() == 0  # a restart does not repeat it
    (due,) = world.messages("search-key is due for rotation")
    text = json.dumps(due.blocks)
    assert "<@U0SECOPS>" in text
    assert "not rotated by rotabot since first seen 30d ago (max_age 30d)" in text
    assert "/rotate schedule search-key at" in text

    world.clock.advance(timedelta(days=7))
    assert svc.run_due() == 1
    assert len(world.messages("search-key is due for rotation")) == 2

    # Rotated now: the age starts again from the finished rotation; no reminder meanwhile.
    rotate_fully(world, "search-key")
    world.clock.advance(timedelta(days=29))
    assert svc.run_due() == 0
    world.clock.advance(timedelta(days=1))
    assert svc.run_due() == 1
    (latest,) = [m for m in world.messages("search-key is due") if "last rotated" in
                 json.dumps(m.blocks)]
    assert "last rotated 30d ago (max_age 30d)" in json.dumps(latest.blocks)


def test_no_due_reminder_while_rotating_or_once_scheduled(world: World) -> None:
    svc = world.svc
    svc.run_due()
    world.clock.advance(timedelta(days=31))
    rotation = world.c.service.start("search-key", actor=ADMIN)
    assert svc.run_due() == 0  # being rotated
    assert rotation.id is not None
    world.c.service.cancel(rotation.id, actor=ADMIN)
    world.schedule("search-key", at=world.clock.now() + timedelta(days=10))
    assert svc.run_due() == 0  # already planned
    assert world.messages("is due for rotation") == []


def confirm_all(world: World, sid: int) -> None:
    world.clock.advance(AT - timedelta(days=2) - T0)
    world.svc.run_due()
    world.svc.confirm(sid, "U0DEV", actor="U0DEV")
    world.svc.confirm(sid, "S0PROD", actor="U0CAROL")
    assert world.status(sid) is ScheduleStatus.READINESS_PASSED


def test_a_start_refused_on_the_day_goes_to_the_admins(world: World) -> None:
    sid = world.schedule()
    confirm_all(world, sid)
    world.clock.advance(timedelta(days=1))
    manual = world.c.service.start("model-api-key", actor=ADMIN)  # someone did not wait
    world.clock.advance(timedelta(days=1))
    assert world.svc.run_due() == 1
    item = world.svc.get(sid)
    assert item.status is ScheduleStatus.NEEDS_ADMIN and item.rotation_id is None
    assert f"already being rotated in {manual.ref}" in (item.outcome or "")
    assert [r.id for r in world.c.service.active()] == [manual.id]
    assert [a["after"] for a in world.audit("schedule.needs-admin")] == ["needs-admin"]
    assert [a["before"] for a in world.audit("schedule.needs-admin")] == ["started"]


def test_a_start_interrupted_by_a_crash_is_recovered(world: World) -> None:
    sid = world.schedule()
    confirm_all(world, sid)
    world.clock.advance(timedelta(days=2))
    item = world.svc.get(sid)
    # The bot claimed the start and died before starting: what a crash leaves behind.
    assert world.svc.repo.transition(
        item, [ScheduleStatus.READINESS_PASSED], ScheduleStatus.STARTED,
        event=world.svc._event(item, actor="rotabot", now=world.clock.now(),
                               action="schedule.started"),
    )
    restarted = world.replica().schedules
    assert restarted.run_due() == 0  # it may still be in flight on another replica
    world.clock.advance(timedelta(minutes=2))
    assert restarted.run_due() == 1
    item = world.svc.get(sid)
    assert item.status is ScheduleStatus.NEEDS_ADMIN
    assert "rotabot stopped while starting it" in (item.outcome or "")
    assert world.c.service.active() == []
    (ask,) = world.messages("did not start")
    assert "rotabot stopped while starting it" in json.dumps(ask.blocks)


def test_a_rotation_started_just_before_a_crash_is_adopted(world: World) -> None:
    sid = world.schedule()
    confirm_all(world, sid)
    world.clock.advance(timedelta(days=2))
    item = world.svc.get(sid)
    assert world.svc.repo.transition(
        item, [ScheduleStatus.READINESS_PASSED], ScheduleStatus.STARTED,
        event=world.svc._event(item, actor="rotabot", now=world.clock.now(),
                               action="schedule.started"),
    )
    # The rotation was created, then the bot died before recording it on the schedule.
    rotation = world.c.service.start("model-api-key", actor=ADMIN)
    world.clock.advance(timedelta(minutes=2))
    assert world.replica().schedules.run_due() == 1
    item = world.svc.get(sid)
    assert (item.status, item.rotation_id) == (ScheduleStatus.STARTED, rotation.id)
    assert world.rotations_started() == 1


def test_the_servers_timer_runs_the_schedules(world: World) -> None:
    from bot.runtime.server import start_timers

    world.schedule()
    world.clock.advance(AT - timedelta(days=2) - T0)
    scheduler: Any = start_timers(world.c)
    try:
        review = world.state.wait_for(
            lambda s: next((m for m in s.channel_messages("C0ROTATE")
                            if m.text.startswith("Readiness review: model-api-key")), None),
            30,
        )
        assert "SR-1" in review.text
    finally:
        scheduler.shutdown(wait=True)
        leader: Any = world.c.leader
        if leader is not None:
            leader.close()
