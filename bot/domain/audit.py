"""Audit events: every transition and every click, recorded with the state change."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class AuditEvent:
    at: datetime
    actor: str  # Slack user id, "rotabot" for timers, or "cli"
    action: str  # e.g. "phase", "step", "click.refused", "alert", "revoke.override"
    secret: str
    rotation_id: int | None = None
    consumer: str | None = None
    before: str | None = None
    after: str | None = None
    reason: str | None = None
    detail: dict[str, str] = field(default_factory=dict)
