"""Changes to a rotation in flight, as pure domain rules. A queued switch read from a
rotation's audit trail: opened by the request, closed by a cancel, a drop, or the rotation
switching or ending; a failure leaves it open so the timer can say why it did not switch. A
consumer added to a hard cutover: before it cuts over, never after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.audit import AuditEvent
from bot.domain.errors import RotabotError
from bot.domain.queued_switch import QUEUE_CANCELLED, QUEUE_DROPPED, QUEUED, queued_switch
from bot.domain.rotation import ConsumerPlan, Rotation

T0 = datetime(2026, 11, 25, 10, 30, tzinfo=UTC)
END = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def queued(actor: str = "U0SECOPS") -> AuditEvent:
    return AuditEvent(at=T0, actor=actor, action=QUEUED, secret="k", rotation_id=1,
                      detail={"after": END.isoformat(), "freeze": "change freeze until 12:00"})


def phase(after: str) -> AuditEvent:
    return AuditEvent(at=T0, actor="rotabot", action="phase", secret="k", rotation_id=1,
                      before="validating", after=after)


def note(action: str) -> AuditEvent:
    return AuditEvent(at=T0, actor="U0SECOPS", action=action, secret="k", rotation_id=1)


def test_a_queued_switch_is_open_until_its_end_and_due_from_the_window_end() -> None:
    waiting = queued_switch([phase("validating"), queued()])
    assert waiting is not None
    assert (waiting.requester, waiting.after) == ("U0SECOPS", END)
    assert not waiting.due(END - timedelta(seconds=1)) and waiting.due(END)
    # A failure keeps it (the timer drops it, saying why); a later request replaces it.
    assert queued_switch([queued(), phase("failed")]) is not None
    again = queued_switch([queued(), note(QUEUE_CANCELLED), queued("U0CAROL")])
    assert again is not None and again.requester == "U0CAROL"


def test_a_cancel_a_drop_or_the_rotation_moving_on_closes_it() -> None:
    for closing in (note(QUEUE_CANCELLED), note(QUEUE_DROPPED), phase("switched"),
                    phase("rolled-back"), phase("cancelled")):
        assert queued_switch([queued(), closing]) is None, closing
    assert queued_switch([]) is None


def test_a_consumer_joins_before_the_cut_over_of_a_hard_cutover_never_after() -> None:
    """(bot.domain.rotation.Rotation.add_consumer) A hard cutover writes every lane's targets
    when it cuts over, so a consumer added later would never get its own: refused then, as
    after an overlap's switch."""
    now = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    rotation = Rotation.begin(
        secret="crm-token", lanes=("dev", "prod"),
        consumers=[ConsumerPlan("sync", "prod", "U0PROD", "restart")],
        overlap=timedelta(0), observe=timedelta(hours=1), store_path="crm/token",
        actor="U0SECOPS", now=now, cutover_window=timedelta(minutes=15))
    rotation.id = 1
    rotation.prepared(old_version="1", new_version="2", old_key_id=None, new_key_id=None,
                      actor="rotabot", now=now)
    rotation.add_consumer(ConsumerPlan("sync-dev", "dev", "U0DEV", "hot"), actor="U0SECOPS",
                          now=now)
    assert rotation.cut_over({}, current="2", actor="rotabot", now=now)
    assert {c.name for c, _ in rotation.pending_steps()} == {"sync", "sync-dev"}
    with pytest.raises(RotabotError, match="R-1 has cut over already"):
        rotation.add_consumer(ConsumerPlan("late", "dev", "U0DEV", "hot"), actor="U0SECOPS",
                              now=now)
    assert "late" not in rotation.consumers
