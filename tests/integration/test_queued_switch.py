"""A switch queued through a freeze, on real SQLite and PostgreSQL with a FixedClock: offered
with the refusal, audited and told in the thread with its time, performed once after the
window by the timer (across a restart, and by one of two racing replicas), dropped with the
reason when the rotation is no longer ready, and cancelled by an admin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from harness.concurrency import race
from test_freeze import CATALOG, notes, to_validated
from test_timers import World, make_world

from bot.domain.errors import NotAuthorized, RotabotError
from bot.domain.freeze import Frozen
from bot.domain.lifecycle import Phase, StepState
from bot.services.timers import TimerWork
from storage.leader import AlwaysLeader


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from make_world(database_url, tmp_path, CATALOG)


def parent_blocks(world: World, rid: int) -> str:
    """The rotation message's blocks as Slack holds them (what its readers see)."""
    ts = world.c.service.get(rid).message_ts
    assert ts is not None
    message = world.state.find_message("C0ROTATE", ts)
    assert message is not None
    return json.dumps(message.blocks)


def frozen_and_queued(world: World) -> int:
    """model-api-key validated, then 10:30 inside "change freeze" (until 12:00): queued."""
    svc = world.c.service
    rid = to_validated(world, "model-api-key")
    world.clock.advance(timedelta(hours=1, minutes=30))
    with pytest.raises(Frozen) as refused:
        svc.switch(rid, actor="U0SECOPS")
    assert refused.value.queue_rotation == rid
    assert f"`/rotate switch R-{rid} --after-freeze`" in str(refused.value)
    _, waiting = svc.queue_switch(rid, actor="U0SECOPS")
    assert waiting.after.isoformat() == "2026-11-25T12:00:00+00:00"
    return rid


def test_a_queued_switch_waits_survives_a_restart_and_fires_once_on_two_racing_replicas(
    world: World,
) -> None:
    svc = world.c.service
    rid = frozen_and_queued(world)
    svc.queue_switch(rid, actor="U0SECOPS")  # a double click queues nothing more
    ((actor, _, detail),) = notes(world, rid, "switch.queued")
    assert (actor, detail["window"], detail["after"]) == (
        "U0SECOPS", "change freeze", "2026-11-25T12:00:00+00:00")
    world.flush()
    (told,) = world.thread_texts(rid, "queued the switch")
    assert "<@U0SECOPS> queued the switch" in told and "2026-11-25 12:00 UTC" in told
    assert "the switch is queued by <@U0SECOPS>: rotabot switches at 2026-11-25 12:00 UTC" in (
        parent_blocks(world, rid))

    world.timers.run_once()
    world.clock.advance(timedelta(minutes=89))  # 11:59, still frozen
    world.timers.run_once()
    assert world.phase(rid) is Phase.VALIDATING

    # Restarted during the freeze, then two replicas race once it ended (no leader lock).
    works: list[TimerWork] = []
    for c in (world.replica(), world.replica()):
        c.timers.is_leader = AlwaysLeader().is_leader
        works.append(c.timers)
    world.clock.advance(timedelta(minutes=1))  # 12:00, the window's end

    def ticks(work: TimerWork) -> int:
        return sum(work.run_once() for _ in range(3))

    outcomes = race([lambda w=w: ticks(w) for w in works])
    assert sorted(outcomes) == [0, 1]  # type: ignore[type-var]
    assert world.phase(rid) is Phase.OBSERVING
    assert world.transitions(rid, "switched") == 1
    assert svc.queued_switch(rid) is None
    world.flush()
    assert len(world.thread_texts(rid, "switched")) == 1
    assert "the switch is queued" not in parent_blocks(world, rid)


def test_a_queued_switch_no_longer_ready_after_the_window_is_dropped_saying_why(
    world: World,
) -> None:
    svc = world.c.service
    rid = frozen_and_queued(world)
    svc.step(rid, "retriever", StepState.FAILED, actor="U0BOB", note="401 on the new key")
    world.clock.advance(timedelta(hours=2))  # 12:30
    world.timers.run_once()
    world.timers.run_once()
    assert world.transitions(rid, "switched") == 0
    ((actor, reason, _),) = notes(world, rid, "switch.queue-dropped")
    assert actor == "rotabot" and "retriever" in (reason or "")
    assert svc.queued_switch(rid) is None
    world.flush()
    (told,) = world.thread_texts(rid, "did not switch")
    assert "retriever" in told and "An admin switches by hand" in told


def test_an_admin_cancels_a_queued_switch_and_nothing_happens_after_the_window(
    world: World,
) -> None:
    svc = world.c.service
    rid = frozen_and_queued(world)
    with pytest.raises(NotAuthorized, match="only admins"):
        svc.cancel_queued_switch(rid, actor="U0BOB")
    svc.cancel_queued_switch(rid, actor="U0SECOPS")
    with pytest.raises(RotabotError, match="no switch is queued"):
        svc.cancel_queued_switch(rid, actor="U0SECOPS")
    world.clock.advance(timedelta(hours=2))
    world.timers.run_once()
    assert world.phase(rid) is Phase.VALIDATING
    world.flush()
    assert world.thread_texts(rid, "cancelled the switch of")
    # Outside a freeze there is nothing to wait for: queueing says to switch now.
    with pytest.raises(RotabotError, match="not frozen now"):
        svc.queue_switch(rid, actor="U0SECOPS")
    with pytest.raises(NotAuthorized):
        svc.queue_switch(rid, actor="U0BOB")
