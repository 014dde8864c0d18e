"""Two-person break-glass: a revoke past an unmet gate asked by one admin, approved by others.

The request lives in the rotation's audit trail (requested, approved, expired notes), so its
state is read from what was recorded, survives a restart and is the same on every replica.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain.audit import AuditEvent
from bot.domain.freeze import FREEZE_OVERRIDE

REQUESTED = "break-glass.requested"
APPROVED = "break-glass.approved"
EXPIRED = "break-glass.expired"
# An expiry or a revoke past the gate ends the open request; so does the rotation leaving
# the phases a revoke can happen in (rolled back, failed, revoked).
_CLOSES = frozenset({EXPIRED, "revoke.override"})
_REVOCABLE_PHASES = frozenset({"observing", "revocable"})


@dataclass(frozen=True)
class BreakGlassRequest:
    requester: str
    reason: str
    asked_at: datetime
    expires_at: datetime
    approvals: int  # people needed, the requester included
    approvers: tuple[str, ...] = ()
    # The requester overrode a freeze window with the request: the approval inherits it.
    freeze_overridden: bool = False

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at

    def people(self) -> int:
        """The admins behind it so far: the requester and each approver."""
        return 1 + len(self.approvers)

    def has_acted(self, user: str) -> bool:
        return user == self.requester or user in self.approvers


def open_request(events: Sequence[AuditEvent]) -> BreakGlassRequest | None:
    """The request still open after ``events`` (a rotation's trail, in order), or None."""
    current: BreakGlassRequest | None = None
    overridden = False  # a revoke's freeze override, recorded just before its request
    for e in events:
        if e.action == FREEZE_OVERRIDE:
            overridden = e.detail.get("action") == "revoke"
            continue
        if e.action == REQUESTED:
            current = BreakGlassRequest(
                requester=e.actor,
                reason=e.reason or "",
                asked_at=e.at,
                expires_at=datetime.fromisoformat(e.detail["expires_at"]),
                approvals=int(e.detail.get("approvals", "2")),
                freeze_overridden=overridden,
            )
        elif e.action == APPROVED and current is not None:
            current = BreakGlassRequest(
                current.requester, current.reason, current.asked_at, current.expires_at,
                current.approvals, (*current.approvers, e.actor), current.freeze_overridden,
            )
        elif e.action in _CLOSES or (e.action == "phase" and e.after not in _REVOCABLE_PHASES):
            current = None
        overridden = False
    return current
