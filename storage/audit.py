"""The append-only SQL audit log, inside the unit of work's transaction."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import InterfaceError, OperationalError

from bot.domain.audit import AuditEvent
from storage.engine import unavailable
from storage.sql_common import AUDIT, SqlRepository, audit_from_row, audit_values, store_errors


class SqlAuditLog(SqlRepository):
    """AuditLog: append-only. There is deliberately no update or delete here, and the
    database refuses both (triggers installed by the migration).

    Appended events are held until the unit of work commits (or a read needs them), so a
    SQLite writer lock is taken as late as possible; they commit with the state change.
    """

    # Rows fetched per round trip while exporting.
    EXPORT_BATCH = 500

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._pending: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> None:
        self._pending.append(event)

    @store_errors
    def for_secret(self, secret: str, limit: int = 50) -> list[AuditEvent]:
        """The latest ``limit`` events of a secret, newest first."""
        self.write_pending()
        stmt = (
            select(AUDIT).where(AUDIT.c.secret == secret).order_by(AUDIT.c.id.desc()).limit(limit)
        )
        return [audit_from_row(m) for m in self._conn.execute(stmt).mappings()]

    @store_errors
    def for_rotation(self, rotation_id: int) -> list[AuditEvent]:
        """Every event of a rotation, in the order recorded."""
        self.write_pending()
        stmt = select(AUDIT).where(AUDIT.c.rotation_id == rotation_id).order_by(AUDIT.c.id)
        return [audit_from_row(m) for m in self._conn.execute(stmt).mappings()]

    def export(self, since: datetime | None = None) -> Iterator[AuditEvent]:
        """Every event at or after ``since``, oldest first (by time, then by record order).

        Read in batches by keyset so a large log never sits in memory at once.
        """
        self.write_pending_guarded()
        last: tuple[datetime, int] | None = None
        while True:
            stmt = select(AUDIT)
            if since is not None:
                stmt = stmt.where(AUDIT.c.at >= since)
            if last is not None:
                at, ident = last
                stmt = stmt.where((AUDIT.c.at > at) | ((AUDIT.c.at == at) & (AUDIT.c.id > ident)))
            stmt = stmt.order_by(AUDIT.c.at, AUDIT.c.id).limit(self.EXPORT_BATCH)
            try:
                batch = list(self._conn.execute(stmt).mappings())
            except (OperationalError, InterfaceError) as exc:
                raise unavailable(self._conn.engine.url, exc) from None
            for m in batch:
                yield audit_from_row(m)
            if len(batch) < self.EXPORT_BATCH:
                return
            last = (batch[-1]["at"], int(batch[-1]["id"]))

    # --- unit-of-work hooks -----------------------------------------------------------

    def insert(self, events: Iterable[AuditEvent]) -> None:
        rows = [audit_values(e) for e in events]
        if rows:
            self._conn.execute(insert(AUDIT), rows)

    def write_pending(self) -> None:
        pending, self._pending = self._pending, []
        self.insert(pending)

    @store_errors
    def write_pending_guarded(self) -> None:
        self.write_pending()

    def forget_pending(self) -> None:
        self._pending.clear()
