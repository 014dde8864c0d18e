"""A switch queued through a freeze: an admin asked rotabot to switch once the window ends.

Like a break-glass request, it lives in the rotation's audit trail (queued, cancelled,
dropped notes, and the switch itself), so every replica and a restarted process read the
same state and the timer performs it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain.audit import AuditEvent

QUEUED = "switch.queued"
QUEUE_CANCELLED = "switch.queue-cancelled"
# The timer found the rotation no longer ready to switch after the window: it says why.
QUEUE_DROPPED = "switch.queue-dropped"
# A phase the rotation reaches ends the queued switch: done (switched) or over.
_ENDS = frozenset({"switched", "observing", "revocable", "revoked", "rolled-back", "cancelled"})


@dataclass(frozen=True)
class QueuedSwitch:
    requester: str
    asked_at: datetime
    after: datetime  # UTC: the freeze's end when it was queued
    freeze: str  # the window in words, as told when queued

    def due(self, now: datetime) -> bool:
        return now >= self.after


def queued_switch(events: Sequence[AuditEvent]) -> QueuedSwitch | None:
    """The queued switch still open after ``events`` (a rotation's trail, in order), or None."""
    current: QueuedSwitch | None = None
    for e in events:
        if e.action == QUEUED:
            current = QueuedSwitch(e.actor, e.at, datetime.fromisoformat(e.detail["after"]),
                                   e.detail.get("freeze", ""))
        elif e.action in (QUEUE_CANCELLED, QUEUE_DROPPED) or (
            e.action == "phase" and e.after in _ENDS
        ):
            current = None
    return current
