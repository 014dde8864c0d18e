"""A queued switch read from a rotation's audit trail: opened by the request, closed by a
cancel, a drop, or the rotation switching or ending; a failure leaves it open so the timer can
say why it did not switch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain.audit import AuditEvent
from bot.domain.queued_switch import QUEUE_CANCELLED, QUEUE_DROPPED, QUEUED, queued_switch

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
