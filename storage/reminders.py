"""The SQL log of reminders sent, so each reminder goes out once across replicas."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from storage.engine import unavailable
from storage.sql_common import REMINDERS


class SqlReminderLog:
    """ReminderLog (bot/domain/reminders.py) on the ``reminders_sent`` table.

    Each call is its own short transaction: a notice is claimed (committed) before it is
    sent, and the unique key on (rotation, consumer, kind) lets exactly one replica win.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def sent(self, rotation_id: int) -> set[tuple[str, str]]:
        stmt = select(REMINDERS.c.consumer, REMINDERS.c.kind).where(
            REMINDERS.c.rotation_id == rotation_id
        )
        try:
            with self._engine.connect() as conn:
                return {(str(r.consumer), str(r.kind)) for r in conn.execute(stmt)}
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def claim(self, rotation_id: int, consumer: str, kind: str, at: datetime) -> bool:
        values = {"rotation_id": rotation_id, "consumer": consumer, "kind": kind, "sent_at": at}
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(REMINDERS).values(**values))
        except IntegrityError:
            return False  # already sent, by this replica or another one
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        return True

    def release(self, rotation_id: int, consumer: str, kind: str) -> None:
        stmt = delete(REMINDERS).where(
            REMINDERS.c.rotation_id == rotation_id,
            REMINDERS.c.consumer == consumer,
            REMINDERS.c.kind == kind,
        )
        try:
            with self._engine.begin() as conn:
                conn.execute(stmt)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
