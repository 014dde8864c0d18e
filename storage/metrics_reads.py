"""The aggregate reads behind rotabot's history metrics (bot/runtime/metrics.py): GROUP BY
queries over rotations and alerts, and the phase and health-check audit rows of the active
rotations through the ``rotation_id`` index; never a scan of the audit log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select

from bot.domain.audit import AuditEvent
from storage.sql_common import ALERTS, AUDIT, ROTATIONS, audit_from_row

PHASE_ACTION = "phase"  # the audit action of a phase change (Rotation._move)
HEALTH_ACTION = "health.checked"  # the audit action of a health check (RotationService)


@dataclass(frozen=True)
class AlertCount:
    """Alerts of one label set and status, as stored: rows (alerts recorded) and the sum of
    their ``count`` (failure reports, repeats coalesced into an alert included)."""

    secret: str
    lane: str
    consumer: str
    failure_class: str
    status: str
    alerts: int
    reports: int


class SqlStoreReads:
    """:class:`StoreReads` as three queries: a GROUP BY over ``rotations`` (one row per
    rotation ever run) and over ``alerts`` (one row per coalesced alert), and the audit rows of
    the active rotations through the ``rotation_id`` index. No table scan of the audit log."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def last_switches(self) -> dict[str, datetime]:
        stmt = (
            select(ROTATIONS.c.secret, func.max(ROTATIONS.c.switched_at))
            .where(ROTATIONS.c.switched_at.is_not(None))
            .group_by(ROTATIONS.c.secret)
        )
        with self._engine.connect() as conn:
            return {secret: at for secret, at in conn.execute(stmt) if at is not None}

    def alert_counts(self) -> list[AlertCount]:
        keys = (ALERTS.c.secret, ALERTS.c.lane, ALERTS.c.consumer, ALERTS.c.failure_class,
                ALERTS.c.status)
        stmt = select(*keys, func.count(), func.coalesce(func.sum(ALERTS.c.count), 0)).group_by(
            *keys)
        with self._engine.connect() as conn:
            return [AlertCount(secret, lane, consumer, failure_class, status, int(n), int(reports))
                    for secret, lane, consumer, failure_class, status, n, reports
                    in conn.execute(stmt)]

    def rotation_events(self, rotation_ids: Sequence[int]) -> list[AuditEvent]:
        if not rotation_ids:
            return []
        stmt = (
            select(AUDIT)
            .where(AUDIT.c.rotation_id.in_(sorted(rotation_ids)),
                   AUDIT.c.action.in_((PHASE_ACTION, HEALTH_ACTION)))
            .order_by(AUDIT.c.id)
        )
        with self._engine.connect() as conn:
            return [audit_from_row(m) for m in conn.execute(stmt).mappings()]
