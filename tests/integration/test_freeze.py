"""Freeze windows on real SQLite and PostgreSQL with a FixedClock: start, switch and revoke
refused with the window named; an admin's override audited and told in the thread; rollback
and cancel never frozen; an automatic revoke that falls inside a window waits and fires once
after it, on one replica or two racing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from harness.serve import catalog_head
from sqlalchemy import select
from test_timers import T0, World, make_world

from bot.domain.errors import NotAuthorized, RotabotError
from bot.domain.freeze import Frozen
from bot.domain.lifecycle import Phase, StepState
from bot.domain.schedule import ScheduleStatus
from bot.services.timers import TimerWork
from storage.leader import AlwaysLeader
from storage.sql_common import AUDIT

# T0 (test_timers) is Wednesday 2026-11-25 09:00 UTC; the freeze runs 10:00-12:00 UTC.
CATALOG = catalog_head(observe="2h", admins=("U0SECOPS",)) + """\
  freeze:
    - {name: change freeze, dates: "2026-11-25T10:00 .. 2026-11-25T12:00"}
stores:
  files: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    freeze:
      - {name: launch day, dates: "2026-11-27T10:00 .. 2026-11-27T12:00"}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: hot}
  cache-password:
    issuer: {kind: manual}
    store: {name: files, path: infra/cache}
    auto_revoke: true
    consumers:
      cache-warmer: {owner: U0BOB, lane: dev, reload: hot}
  signing-key:
    issuer: {kind: manual}
    store: {name: files, path: infra/signing}
    admins: [U0SECOPS, U0CAROL]
    break_glass: {approvals: 2, within: 30m}
    consumers:
      signer: {owner: U0BOB, lane: dev, reload: hot}
  weekend-only:
    issuer: {kind: manual}
    store: {name: files, path: infra/weekend}
    freeze:
      - {name: weekday hours, time_zone: Europe/Berlin, outside: "Sat-Sun 00:00-24:00"}
    consumers:
      batch: {owner: U0BOB, lane: dev, reload: hot}
"""


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from make_world(database_url, tmp_path, CATALOG)


def notes(w: World, rid: int, action: str) -> list[tuple[str, str | None, dict[str, str]]]:
    with w.c.engine.connect() as conn:
        rows = conn.execute(select(AUDIT).where(
            AUDIT.c.rotation_id == rid, AUDIT.c.action == action).order_by(AUDIT.c.id))
        import json

        return [(r.actor, r.reason, json.loads(r.detail or "{}")) for r in rows]


def to_validated(w: World, secret: str) -> int:
    svc = w.c.service
    rotation = svc.start(secret, actor="U0SECOPS")
    assert rotation.id is not None
    for con in rotation.consumers_in_order():
        svc.step(rotation.id, con.name, StepState.DISTRIBUTED, actor=con.owner)
        svc.step(rotation.id, con.name, StepState.VALIDATED, actor=con.owner)
    return rotation.id


def test_start_switch_and_revoke_are_refused_inside_the_window_and_overridden_with_a_reason(
    world: World,
) -> None:
    svc = world.c.service
    rid = to_validated(world, "model-api-key")
    world.clock.advance(timedelta(hours=1, minutes=30))  # 10:30, inside

    with pytest.raises(Frozen, match=r"frozen: change freeze until 2026-11-25 12:00 UTC; "
                                     r"switch is refused") as refused:
        svc.switch(rid, actor="U0SECOPS")
    assert f"/rotate switch R-{rid} --override-freeze" in str(refused.value)
    assert world.phase(rid) is Phase.VALIDATING
    assert notes(world, rid, "refused")[-1][1] == (
        "frozen: change freeze until 2026-11-25 12:00 UTC")

    svc.switch(rid, actor="U0SECOPS", override_freeze="hotfix for INC-42 needs the new key")
    assert world.phase(rid) is Phase.OBSERVING
    ((actor, reason, detail),) = notes(world, rid, "freeze.override")
    assert (actor, reason, detail["action"], detail["window"]) == (
        "U0SECOPS", "hotfix for INC-42 needs the new key", "switch", "change freeze")
    world.flush()
    (told,) = world.thread_texts(rid, "overrode the freeze")
    assert "<@U0SECOPS> overrode the freeze to switch" in told and "INC-42" in told

    world.sign_off(rid)
    world.clock.advance(timedelta(minutes=1))
    with pytest.raises(Frozen, match="revoke is refused"):  # even past the gate
        svc.revoke(rid, actor="U0SECOPS", override_reason="the old key leaked yesterday")
    assert world.phase(rid) is Phase.OBSERVING

    with pytest.raises(Frozen, match="start is refused"):
        svc.start("cache-password", actor="U0SECOPS")
    assert svc.history("cache-password") == []
    again = svc.start("cache-password", actor="U0SECOPS",
                      override_freeze="the leaked key cannot wait for Monday")
    assert again.id is not None
    assert notes(world, again.id, "freeze.override")[0][2]["action"] == "start"
    world.flush()
    assert world.thread_texts(again.id, "overrode the freeze to start")
    # Rollback and cancel reduce risk: never frozen.
    assert svc.rollback(again.id, actor="U0SECOPS", reason="back out").phase is (
        Phase.ROLLED_BACK)
    third = svc.start("cache-password", actor="U0SECOPS",
                      override_freeze="second try at the leaked key, INC-42")
    assert third.id is not None
    assert svc.cancel(third.id, actor="U0SECOPS").phase is Phase.CANCELLED


def test_an_override_needs_an_admin_and_a_reason(world: World) -> None:
    svc = world.c.service
    rid = to_validated(world, "model-api-key")
    world.clock.advance(timedelta(hours=1, minutes=30))
    with pytest.raises(Frozen):
        svc.switch(rid, actor="U0SECOPS", override_freeze="   ")
    with pytest.raises(Exception, match="only admins"):
        svc.switch(rid, actor="U0BOB", override_freeze="I really want to switch now")
    assert world.phase(rid) is Phase.VALIDATING
    assert notes(world, rid, "freeze.override") == []


def test_business_hours_only_in_a_time_zone(world: World) -> None:
    svc = world.c.service
    # Wednesday: frozen until Saturday 00:00 in Berlin (Friday 23:00 UTC).
    with pytest.raises(Frozen, match="weekday hours until 2026-11-28 00:00 Europe/Berlin"):
        svc.start("weekend-only", actor="U0SECOPS")
    world.clock.advance(timedelta(days=2, hours=14))  # Friday 23:00 UTC
    assert svc.start("weekend-only", actor="U0SECOPS").id is not None


def test_a_frozen_auto_revoke_waits_and_fires_once_after_the_window(world: World) -> None:
    rid = world.to_observing("cache-password")
    world.clock.advance(timedelta(hours=2, seconds=1))  # 11:00, observation over, frozen
    for _ in range(3):
        world.timers.run_once()
    world.flush()
    assert world.phase(rid) is Phase.REVOCABLE
    (waits,) = world.thread_texts(rid, "automatic revoke waits")
    assert "change freeze until 2026-11-25 12:00 UTC" in waits

    # The bot restarts during the freeze: what is due is read from the database.
    fresh = world.replica()
    fresh.timers.is_leader = AlwaysLeader().is_leader  # the old process is gone
    world.clock.advance(timedelta(minutes=59))
    fresh.timers.run_once()
    assert world.phase(rid) is Phase.REVOCABLE
    world.clock.advance(timedelta(minutes=1))  # 12:00, the window's end
    for _ in range(3):
        fresh.timers.run_once()
    assert world.phase(rid) is Phase.REVOKED
    assert world.transitions(rid, "revoked") == 1
    world.flush()
    assert len(world.thread_texts(rid, "automatic revoke waits")) == 1


def test_two_replicas_fire_a_frozen_auto_revoke_once_after_the_window(world: World) -> None:
    rids = [world.to_observing("cache-password")]
    world.clock.advance(timedelta(hours=2, seconds=1))
    works: list[TimerWork] = []
    for c in (world.c, world.replica()):
        c.timers.is_leader = AlwaysLeader().is_leader  # no lock: both race for every timer
        works.append(c.timers)
    works[0].run_once()
    works[1].run_once()
    assert world.phase(rids[0]) is Phase.REVOCABLE
    world.clock.advance(timedelta(hours=1))

    errors: list[BaseException] = []
    barrier = threading.Barrier(len(works))

    def loop(work: TimerWork) -> None:
        try:
            barrier.wait()
            for _ in range(3):
                work.run_once()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(work,)) for work in works]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert world.phase(rids[0]) is Phase.REVOKED
    assert world.transitions(rids[0], "revoked") == 1
    world.flush()
    assert len(world.thread_texts(rids[0], "automatic revoke waits")) == 1


def test_a_scheduled_start_inside_a_window_waits_and_starts_once_after_it(world: World) -> None:
    at = T0 + timedelta(days=2, hours=2)  # Friday 11:00, inside "launch day"
    schedules = world.c.schedules
    sid = schedules.schedule("model-api-key", at, actor="U0SECOPS").id
    assert sid is not None
    world.clock.advance(at - timedelta(days=2) - T0)
    schedules.run_due()  # the readiness review
    schedules.confirm(sid, "U0BOB", actor="U0BOB")
    assert schedules.get(sid).status is ScheduleStatus.READINESS_PASSED

    world.clock.advance(timedelta(days=2))
    assert schedules.run_due() == 0  # due, but frozen until 12:00
    assert schedules.get(sid).status is ScheduleStatus.READINESS_PASSED
    assert world.c.service.active() == []

    world.clock.advance(timedelta(hours=1))
    replicas = [schedules, world.replica().schedules]
    outcomes: list[int] = []
    threads = [threading.Thread(target=lambda s=s: outcomes.append(s.run_due()))
               for s in replicas]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(outcomes) == [0, 1]
    item = schedules.get(sid)
    assert item.status is ScheduleStatus.STARTED and item.rotation_id is not None
    assert [r.id for r in world.c.service.active()] == [item.rotation_id]


def test_two_person_break_glass_expires_refuses_self_approval_and_respects_freezes(
    world: World,
) -> None:
    svc = world.c.service
    rid = world.to_observing("signing-key", sign_off=False)  # 09:00, the gate closed
    leak = "the signing key was in a public gist"
    assert svc.revoke(rid, actor="U0SECOPS", override_reason=leak).phase is Phase.OBSERVING
    with pytest.raises(RotabotError, match="already asked to break the glass"):
        svc.revoke(rid, actor="U0CAROL", override_reason="me too, revoke it now")
    with pytest.raises(NotAuthorized, match="another admin must approve"):
        svc.approve_break_glass(rid, actor="U0SECOPS", reason="I am sure about this")
    with pytest.raises(NotAuthorized, match="only admins of signing-key"):
        svc.approve_break_glass(rid, actor="U0BOB", reason="looks right to me")

    world.clock.advance(timedelta(minutes=30))
    world.timers.run_once()
    world.timers.run_once()
    world.flush()
    assert len(world.thread_texts(rid, "expired at 2026-11-25 09:30 UTC")) == 1
    with pytest.raises(RotabotError, match="no break-glass request waits"):
        svc.approve_break_glass(rid, actor="U0CAROL", reason="confirmed with the vendor")

    world.clock.advance(timedelta(minutes=10))  # 09:40
    svc.revoke(rid, actor="U0SECOPS", override_reason=leak)
    world.clock.advance(timedelta(minutes=25))  # 10:05: the change freeze began since
    with pytest.raises(Frozen, match="change freeze"):
        svc.approve_break_glass(rid, actor="U0CAROL", reason="confirmed with the vendor")
    assert world.phase(rid) is Phase.OBSERVING

    world.clock.advance(timedelta(minutes=6))  # the request expired; ask inside the freeze
    svc.revoke(rid, actor="U0SECOPS", override_reason=leak,
               override_freeze="a leaked key cannot wait for the freeze")
    revoked = svc.approve_break_glass(rid, actor="U0CAROL", reason="confirmed with the vendor")
    assert revoked.phase is Phase.REVOKED
    assert [(a, r) for a, r, _ in notes(world, rid, "break-glass.approved")] == [
        ("U0CAROL", "confirmed with the vendor")]
    assert [a for a, _, _ in notes(world, rid, "break-glass.requested")] == ["U0SECOPS"] * 3
    assert len(notes(world, rid, "break-glass.expired")) == 2
    ((who, why, _),) = notes(world, rid, "revoke.override")
    assert who == "U0CAROL" and leak in (why or "") and "confirmed with the vendor" in (why or "")
    world.flush()
    assert world.thread_texts(rid, "approved <@U0SECOPS>'s break-glass")
