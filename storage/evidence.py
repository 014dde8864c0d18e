"""The SQL log of consumers' evidence reports (``evidence_reports``), shared by every replica."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Table, insert, select
from sqlalchemy.exc import InterfaceError, OperationalError

from bot.domain.evidence import EvidenceReport
from storage.engine import unavailable
from storage.tables import EvidenceReportRow, metadata

REPORTS: Table = metadata.tables[EvidenceReportRow.__tablename__]


def _report(row: Any) -> EvidenceReport:
    return EvidenceReport(
        consumer=row.consumer, secret=row.secret, version=row.version, key_id=row.key_id,
        ok=bool(row.ok), at=row.reported_at, workflow=row.workflow, source=row.source,
        lane=row.lane, rotation_id=row.rotation_id, id=row.id,
    )


class SqlEvidenceLog:
    """EvidenceLog (bot/services/ports.py). Each call is its own short transaction: a report
    is kept whatever the rotation does with it afterwards."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def add(self, report: EvidenceReport, received_at: datetime) -> EvidenceReport:
        values = {
            "secret": report.secret, "consumer": report.consumer, "lane": report.lane,
            "version": report.version, "key_id": report.key_id, "ok": report.ok,
            "workflow": report.workflow, "reported_at": report.at,
            "received_at": received_at, "source": report.source[:100],
            "rotation_id": report.rotation_id,
        }
        with self._errors(), self._engine.begin() as conn:
            new_id = conn.execute(insert(REPORTS).values(**values).returning(REPORTS.c.id))
            return replace(report, id=int(new_id.scalar_one()))

    def for_rotation(self, rotation_id: int, consumer: str | None = None) -> list[EvidenceReport]:
        """The reports received while the rotation ran, oldest first."""
        stmt = select(REPORTS).where(REPORTS.c.rotation_id == rotation_id)
        if consumer is not None:
            stmt = stmt.where(REPORTS.c.consumer == consumer)
        with self._errors(), self._engine.connect() as conn:
            return [_report(r) for r in conn.execute(stmt.order_by(REPORTS.c.id))]

    def last_received(self, secret: str, consumer: str) -> datetime | None:
        """When the consumer last reported anything about the secret (its heartbeat)."""
        stmt = (select(REPORTS.c.received_at)
                .where(REPORTS.c.secret == secret, REPORTS.c.consumer == consumer)
                .order_by(REPORTS.c.received_at.desc()).limit(1))
        with self._errors(), self._engine.connect() as conn:
            value: datetime | None = conn.execute(stmt).scalar_one_or_none()
        return value
