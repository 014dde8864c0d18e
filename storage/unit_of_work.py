"""The SQL unit of work: one transaction in which rotations, alerts and audit events change.

    with uow_factory() as uow:
        rotation = uow.rotations.get(42)
        rotation.mark_step("inference-api", StepState.DISTRIBUTED, actor=user, now=now)
        uow.commit()   # state, steps, labels and audit rows together, or ChangedMeanwhile

Leaving the block without ``commit`` rolls everything back. A database that cannot be
reached raises StoreUnavailable (the password is never part of its message).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from storage.alerts import SqlAlertRepository
from storage.audit import SqlAuditLog
from storage.engine import unavailable
from storage.rotations import CredentialVersion, SqlRotationRepository


class SqlUnitOfWork:
    """Implements bot.services.ports.UnitOfWork (checked where the composition root hands it
    to the services; storage itself imports no service code)."""

    rotations: SqlRotationRepository
    alerts: SqlAlertRepository
    audit: SqlAuditLog

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None

    def __enter__(self) -> Self:
        with self._store_errors():
            conn = self._engine.connect()
        self._conn = conn
        # The Protocol attributes, and the same objects with their commit hooks.
        self._audit = SqlAuditLog(conn)
        self._rotations = SqlRotationRepository(conn, self._audit)
        self.audit = self._audit
        self.rotations = self._rotations
        self.alerts = SqlAlertRepository(conn)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            # Whatever was not committed is discarded.
            conn.rollback()
        except (OperationalError, InterfaceError) as err:
            if exc is None:
                raise unavailable(self._engine.url, err) from None
            # Otherwise the exception already leaving the block is the one that matters.
        finally:
            conn.close()

    def commit(self) -> None:
        conn = self._require()
        try:
            with self._store_errors():
                self._rotations.write_changes()
                self._audit.write_pending()
                conn.commit()
        except BaseException:
            self._discard(conn)
            raise
        self._rotations.committed()

    def rollback(self) -> None:
        self._discard(self._require())

    def credential_versions(self, rotation_id: int) -> list[CredentialVersion]:
        """The version references and labels stored for a rotation (for ops and tests)."""
        self._require()
        return self._rotations.credential_versions(rotation_id)

    def _discard(self, conn: Connection) -> None:
        self._rotations.forget_all()
        self._audit.forget_pending()
        # A connection that is gone took its transaction with it: nothing was written.
        with suppress(OperationalError, InterfaceError):
            conn.rollback()

    def _require(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("use the unit of work inside a `with` block")
        return self._conn

    @contextmanager
    def _store_errors(self) -> Iterator[None]:
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None


def sql_unit_of_work_factory(engine: Engine) -> Callable[[], SqlUnitOfWork]:
    def make() -> SqlUnitOfWork:
        return SqlUnitOfWork(engine)

    return make
