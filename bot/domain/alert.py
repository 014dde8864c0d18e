"""Failure alerts as the domain sees them: classified, tagged with rotation context."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class AlertStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"  # someone is looking; still blocks revocation
    NOT_RELATED = "not-related"
    RESOLVED = "resolved"


UNRESOLVED: frozenset[AlertStatus] = frozenset({AlertStatus.OPEN, AlertStatus.ACKNOWLEDGED})


@dataclass
class Alert:
    consumer: str
    secret: str
    lane: str
    failure_class: str  # bot.domain.failures.FailureClass value
    reason: str  # classification reason in words, never a secret value
    first_seen: datetime
    last_seen: datetime
    source: str = "unknown"
    rotation_id: int | None = None
    phase_at_alert: str | None = None
    began_during_rotation: bool = False
    status: AlertStatus = AlertStatus.OPEN
    count: int = 1
    id: int | None = None
    channel: str | None = None  # where the incident message was posted
    message_ts: str | None = None
    resolved_by: str | None = None

    @property
    def ref(self) -> str:
        return f"A-{self.id}" if self.id is not None else "A-?"

    @property
    def unresolved(self) -> bool:
        return self.status in UNRESOLVED
