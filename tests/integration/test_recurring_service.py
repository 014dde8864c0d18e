"""Recurring rotations (`every:`) and exclusive groups (`groups:`) by moving a FixedClock, on
real SQLite and PostgreSQL, with signed Confirm-ready clicks into the real Bolt app.

Covers: an occurrence derived from stored state is made once and starts once across two
replicas on one database, only after every owner confirmed; a missing owner is reminded and
then the occurrence goes to the admins once and is not made again; the offset keeps a pair's
recurrences apart; the second secret of an exclusive pair waits (saying why) whether asked by
command or by a schedule, and the waiting schedule starts by itself once the first ended;
App Home lists what is due next.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from test_schedule_service import ADMIN, SIGNING_SECRET, Backends, World

from bot.domain.clock import FixedClock
from bot.domain.errors import GroupBusy
from bot.domain.schedule import ScheduleStatus
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.services.rotations import RotationService
from storage.sql_common import SCHEDULES

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
A_DUE = T0 + 30 * DAY  # warehouse-a: first seen at T0, every 30d
B_DUE = A_DUE + 7 * DAY  # warehouse-b: the same, kept the pair's 7d offset after a

CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0SECOPS]
  lanes: [dev, prod]
  readiness_lead: 2d
stores:
  files: {kind: file, path: ./secrets}
secrets:
  warehouse-a:
    issuer: {kind: manual}
    store: {name: files, path: wh/a}
    every: 30d
    consumers:
      loader: {owner: U0DEV, lane: dev, reload: hot}
      reports: {owner: S0PROD, lane: prod, reload: hot}
  warehouse-b:
    issuer: {kind: manual}
    store: {name: files, path: wh/b}
    every: 30d
    consumers:
      etl: {owner: U0DEV, lane: dev, reload: hot}
groups:
  warehouse-pair:
    secrets: [warehouse-a, warehouse-b]
    exclusive: true
    offset: 7d
"""


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    state = StandinState()
    for user in (ADMIN, "U0DEV", "U0CAROL"):
        state.add_user(user, user.lower())
    state.add_usergroup("S0PROD", "prod-team", ["U0CAROL"])
    state.add_channel("C0ROTATE", "rotations", members=[ADMIN])
    state.add_channel("C0INCIDENT", "incidents", members=[ADMIN])
    path = tmp_path / "catalog.yml"
    path.write_text(CATALOG)
    with StandinServer(state) as server:
        settings = Settings(
            catalog_path=str(path), database_url=database_url, slack_api_url=server.base_url,
            slack_bot_token="xoxb-test", slack_signing_secret=SIGNING_SECRET,
        )
        w = World(state, FixedClock(T0), settings, Backends(tmp_path / "secrets", path))
        try:
            yield w
            w.flush()
            assert state.violations == []
        finally:
            w.http.close()
            for c in w.containers:
                c.engine.dispose()


def at_once(*runs: Callable[[], int]) -> list[int]:
    """Run each replica's timer tick in its own thread, together; what each returned."""
    outcomes: list[int] = []
    threads = [threading.Thread(target=lambda r=r: outcomes.append(r())) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return sorted(outcomes)


def schedules(world: World, secret: str) -> list[dict[str, object]]:
    with world.c.engine.connect() as conn:
        rows = conn.execute(
            select(SCHEDULES).where(SCHEDULES.c.secret == secret).order_by(SCHEDULES.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def test_an_occurrence_is_made_once_and_starts_once_across_two_replicas(world: World) -> None:
    other = world.replica().schedules
    assert world.svc.run_due() == 0  # first seen now: the 30 days count from here
    listed = world.command(ADMIN, "secrets")
    assert "next: in 30d" in listed and "next: in 37d" in listed  # a, then b a week later
    world.clock.advance(A_DUE - 2 * DAY - T0 - timedelta(seconds=1))
    assert world.svc.run_due() == 0 and schedules(world, "warehouse-a") == []

    world.clock.advance(timedelta(seconds=1))  # readiness_lead before it is due
    assert at_once(world.svc.run_due, other.run_due) == [0, 1]
    assert at_once(world.svc.run_due, other.run_due) == [0, 0]
    (row,) = schedules(world, "warehouse-a")
    assert row["occurrence"] == "warehouse-a@2026-12-25T09:00Z"
    assert (row["created_by"], row["status"]) == ("rotabot", "review-posted")
    assert row["at"] == A_DUE
    (made,) = world.audit("schedule.recurring")
    assert json.loads(made["detail"])["due"] == "2026-12-25T09:00Z"
    assert schedules(world, "warehouse-b") == []  # the offset: its review comes a week later

    review = world.review("warehouse-a")
    assert "recurring: `every` in the catalog" in json.dumps(review.blocks)
    assert world.click("U0DEV", review, "U0DEV") is None
    world.click("U0CAROL", world.review("warehouse-a"), "S0PROD")
    assert world.svc.get(int(str(row["id"]))).status is ScheduleStatus.READINESS_PASSED

    world.clock.advance(2 * DAY - timedelta(minutes=1))
    assert world.svc.run_due() == 0  # not a minute early
    world.clock.advance(timedelta(minutes=1))
    assert at_once(world.svc.run_due, other.run_due) == [0, 1]
    assert world.svc.run_due() == 0 and other.run_due() == 0
    assert world.rotations_started() == 1
    (rotation,) = world.c.service.active()
    assert (rotation.secret, rotation.started_by) == ("warehouse-a", "rotabot")
    world.flush()
    assert f"Started {rotation.ref}." in json.dumps(world.review("warehouse-a").blocks)

    # App Home: what is due next, with where its review stands.
    assert world.slack.open_home(ADMIN).status == 200
    home = world.state.home_view(ADMIN)
    assert home is not None
    text = json.dumps(home.view["blocks"], ensure_ascii=False)
    assert "*Due next*" in text
    assert "`warehouse-b` · 2027-01-01T09:00Z · recurring; review from 2026-12-30T09:00Z" in text
    # While a rotates, b counts from a's start, so its occurrence does not move tick by tick.
    now = world.clock.now()
    keys = {o.key for o in (world.svc.next_occurrence("warehouse-b", now),
                            other.next_occurrence("warehouse-b", now + timedelta(hours=5)))
            if o is not None}
    assert keys == {"warehouse-b@2027-01-01T09:00Z"}


def test_a_missing_owner_sends_the_occurrence_to_the_admins_once(world: World) -> None:
    world.svc.run_due()
    world.clock.advance(A_DUE - 2 * DAY - T0)
    world.svc.run_due()
    world.click("U0DEV", world.review("warehouse-a"), "U0DEV")
    assert "not confirmed ready by owner S0PROD" in world.svc.upcoming()[0].state

    # Halfway through the lead, the owner still missing is reminded in the review's thread,
    # once across two replicas and later ticks.
    world.clock.advance(DAY - timedelta(seconds=1))
    other = world.replica().schedules
    assert at_once(world.svc.run_due, other.run_due) == [0, 0]
    world.clock.advance(timedelta(seconds=1))
    assert at_once(world.svc.run_due, other.run_due) == [0, 1]
    world.clock.advance(timedelta(hours=1))
    assert world.svc.run_due() == 0
    world.flush()
    (reminder,) = world.state.thread("C0ROTATE", world.review("warehouse-a").ts)
    assert "<!subteam^S0PROD>: please confirm ready for `warehouse-a` (SR-1)" in reminder.text
    assert "U0DEV" not in reminder.text

    world.clock.advance(DAY - timedelta(hours=1))
    world.svc.run_due()
    (row,) = schedules(world, "warehouse-a")
    assert row["status"] == ScheduleStatus.NEEDS_ADMIN.value
    assert world.rotations_started() == 0
    (asked,) = world.messages("did not start")
    body = json.dumps(asked.blocks)
    assert "<@U0SECOPS>" in body  # the admins are asked, and told who is missing
    assert "not confirmed ready by owner <!subteam^S0PROD>" in body
    # The same occurrence is derived again on every tick, and never made twice.
    for _ in range(3):
        world.clock.advance(DAY)
        world.svc.run_due()
        world.replica().schedules.run_due()
    assert len(schedules(world, "warehouse-a")) == 1


def test_the_second_of_an_exclusive_pair_waits_and_starts_after_the_first(
    world: World,
) -> None:
    first = world.c.service.start("warehouse-a", actor=ADMIN)

    reply = world.command(ADMIN, "start warehouse-b")
    assert f"warehouse-pair: {first.ref} of warehouse-a is still active" in reply
    with pytest.raises(GroupBusy):
        world.c.service.start("warehouse-b", actor=ADMIN)

    sid = world.schedule("warehouse-b", T0 + 3 * DAY)
    world.clock.advance(DAY)
    world.svc.run_due()
    world.click("U0DEV", world.review("warehouse-b"), "U0DEV")
    world.clock.advance(2 * DAY)
    for _ in range(3):  # due, but its partner rotates: it waits, and says why once
        assert world.svc.run_due() == 0
    item = world.svc.get(sid)
    why = f"waiting: warehouse-pair: {first.ref} of warehouse-a is still active"
    assert (item.status, item.outcome) == (ScheduleStatus.READINESS_PASSED, why)
    assert len(world.audit("schedule.waiting")) == 1
    world.flush()
    assert why in json.dumps(world.review("warehouse-b").blocks)
    assert world.rotations_started() == 1

    world.c.service.cancel(first.id or 0, actor=ADMIN, reason="test over")
    assert world.svc.run_due() == 1  # the timer starts it once the first one ended
    item = world.svc.get(sid)
    assert item.status is ScheduleStatus.STARTED
    assert world.c.service.get(item.rotation_id or 0).secret == "warehouse-b"
    # An urgent start (`--urgent`, an emergency re-rotation) is not held by the group.
    assert world.c.service.start("warehouse-a", actor=ADMIN, urgent=True).urgent


def test_partners_started_at_once_on_two_replicas_start_one(world: World) -> None:
    replicas = [world.c.service, world.replica().service]
    ready = threading.Barrier(2)
    started: list[str] = []
    refused: list[str] = []

    def start(service: RotationService, secret: str) -> None:
        ready.wait()
        try:
            started.append(service.start(secret, actor=ADMIN).secret)
        except GroupBusy as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=start, args=(s, name))
               for s, name in zip(replicas, ("warehouse-a", "warehouse-b"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(started) == 1 and len(refused) == 1
    (active,) = world.c.service.active()
    assert active.secret == started[0]
    assert refused[0].startswith(f"warehouse-pair: {active.ref} of {active.secret} is still")
