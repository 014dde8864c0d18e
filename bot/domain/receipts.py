"""What the rotation's thread is told after a change: one receipt per state change, read from
the audit events that change recorded, so nothing that changed state goes untold and nothing
is told that did not happen.

Owner steps are not here: the prompt an owner clicked becomes its own receipt in the same
update (handlers/actions.py), so the thread does not say it twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from bot.domain.audit import AuditEvent
from bot.domain.break_glass import APPROVED, EXPIRED, REQUESTED
from bot.domain.freeze import FREEZE_OVERRIDE
from bot.domain.lifecycle import Phase, StepState
from bot.domain.queued_switch import QUEUE_CANCELLED, QUEUE_DROPPED, QUEUED


class ReceiptKind(StrEnum):
    PREPARED = "prepared"  # the new credential exists beside the old one
    LANE_OPENED = "lane-opened"  # rotabot wrote the new credential to a lane's targets
    CUT_OVER = "cut-over"  # a hard cutover: the new value is current and in every target
    READY_TO_SWITCH = "ready-to-switch"  # every consumer validated: an admin's turn
    SWITCHED = "switched"
    REOPENED = "reopened"  # new evidence closed the gate again
    REVOKED = "revoked"
    ROLLED_BACK = "rolled-back"
    CANCELLED = "cancelled"
    FAILED = "failed"
    RESUMED = "resumed"
    PROBLEM = "problem"  # an owner reported a problem
    ALERT_ACKNOWLEDGED = "alert-acknowledged"
    ALERT_NOT_RELATED = "alert-not-related"
    FREEZE_OVERRIDDEN = "freeze-overridden"  # an admin acted inside a freeze window
    BREAK_GLASS_REQUESTED = "break-glass-requested"  # carries the Approve button
    BREAK_GLASS_APPROVED = "break-glass-approved"
    BREAK_GLASS_EXPIRED = "break-glass-expired"
    CONSUMER_ADDED = "consumer-added"  # an admin added a consumer the catalog gained
    SWITCH_QUEUED = "switch-queued"  # an admin queued the switch for a freeze's end
    SWITCH_QUEUE_CANCELLED = "switch-queue-cancelled"
    SWITCH_QUEUE_DROPPED = "switch-queue-dropped"  # not ready after the window: why


@dataclass(frozen=True)
class Receipt:
    kind: ReceiptKind
    actor: str
    consumer: str | None = None
    reason: str | None = None
    detail: dict[str, str] = field(default_factory=dict)


# Phases whose arrival is a receipt of its own.
_PHASE_RECEIPTS = {
    Phase.SWITCHED: ReceiptKind.SWITCHED,
    Phase.REVOKED: ReceiptKind.REVOKED,
    Phase.ROLLED_BACK: ReceiptKind.ROLLED_BACK,
    Phase.CANCELLED: ReceiptKind.CANCELLED,
    Phase.FAILED: ReceiptKind.FAILED,
}
_NOTE_RECEIPTS = {
    "alert.reported": ReceiptKind.PROBLEM,
    "alert.acknowledged": ReceiptKind.ALERT_ACKNOWLEDGED,
    "alert.not-related": ReceiptKind.ALERT_NOT_RELATED,
    FREEZE_OVERRIDE: ReceiptKind.FREEZE_OVERRIDDEN,
    REQUESTED: ReceiptKind.BREAK_GLASS_REQUESTED,
    APPROVED: ReceiptKind.BREAK_GLASS_APPROVED,
    EXPIRED: ReceiptKind.BREAK_GLASS_EXPIRED,
    "consumer.added": ReceiptKind.CONSUMER_ADDED,
    QUEUED: ReceiptKind.SWITCH_QUEUED,
    QUEUE_CANCELLED: ReceiptKind.SWITCH_QUEUE_CANCELLED,
    QUEUE_DROPPED: ReceiptKind.SWITCH_QUEUE_DROPPED,
}


def receipts_for(events: Sequence[AuditEvent], *, ready_to_switch: bool) -> list[Receipt]:
    """The receipts of one committed change. ``ready_to_switch``: the rotation after the
    change waits for an admin's Switch (said once, by the change whose step made it so)."""
    out: list[Receipt] = []
    notes = {e.action: e for e in events}
    for e in events:
        if e.action == "phase":
            out.extend(_phase_receipt(e, notes))
        elif e.action in _NOTE_RECEIPTS:
            out.append(Receipt(_NOTE_RECEIPTS[e.action], e.actor, e.detail.get("consumer"),
                               e.reason, dict(e.detail)))
        elif e.action == "credential.prepared":
            out.append(Receipt(ReceiptKind.PREPARED, e.actor, detail=dict(e.detail)))
        elif e.action == "lane.opened":
            out.append(Receipt(ReceiptKind.LANE_OPENED, e.actor, detail=dict(e.detail)))
        elif e.action == "cutover.written":
            out.append(Receipt(ReceiptKind.CUT_OVER, e.actor, detail=dict(e.detail)))
    validated = any(e.action == "step" and e.after == StepState.VALIDATED.value for e in events)
    if ready_to_switch and validated:
        last = next(e for e in reversed(events) if e.action == "step")
        out.append(Receipt(ReceiptKind.READY_TO_SWITCH, last.actor))
    return out


def _phase_receipt(e: AuditEvent, notes: dict[str, AuditEvent]) -> list[Receipt]:
    after = Phase(e.after) if e.after else None
    before = Phase(e.before) if e.before else None
    if before is Phase.FAILED and after is not Phase.FAILED:
        return [Receipt(ReceiptKind.RESUMED, e.actor, detail={"phase": str(e.after)})]
    # The gate opening is told by the timers' ready-to-revoke notice (bot/domain/reminders).
    if after is Phase.OBSERVING and before is Phase.REVOCABLE:
        return [Receipt(ReceiptKind.REOPENED, e.actor, reason=e.reason)]
    if after is None or after not in _PHASE_RECEIPTS:
        return []
    detail: dict[str, str] = {}
    if after is Phase.ROLLED_BACK and "rollback.detail" in notes:
        detail.update(notes["rollback.detail"].detail)
    if after is Phase.ROLLED_BACK and "credential.reissued" in notes:
        detail.update(notes["credential.reissued"].detail)
        detail["reissued"] = "yes"
    if after is Phase.REVOKED and "revoke.nothing-left" in notes:
        detail["nothing_left"] = "yes"
    if after is Phase.CANCELLED and "cancel.detail" in notes:
        detail.update(notes["cancel.detail"].detail)
    if after is Phase.REVOKED and "revoke.override" in notes:
        detail["override"] = "yes"
    if after is Phase.REVOKED and "revoke.by-hand" in notes:
        detail["by_hand"] = notes["revoke.by-hand"].reason or ""
    return [Receipt(_PHASE_RECEIPTS[after], e.actor, reason=e.reason, detail=detail)]
