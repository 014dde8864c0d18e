"""Work one process does at a time for one rotation (a switch's promote, a revocation, a
rollback), held only while the work runs.

Unlike a claim (storage/claims.py), which outlives a holder that died by its lease, this lock
goes with its holder: on PostgreSQL it is a transaction-level ``pg_try_advisory_xact_lock``
on a connection kept for the duration, so a process killed mid-work lets go as its
connection closes, and a person pressing the button again after the restart is not refused
for a lease's length. SQLite has one process by construction: a lock of this process is the
whole story.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from sqlalchemy import Engine, text
from sqlalchemy.exc import InterfaceError, OperationalError

from storage.engine import unavailable
from storage.sql_common import advisory_key

# One process's locks on SQLite, by database, rotation and kind (shared by every SqlWorkLocks
# on the same file, as replicas' would be on PostgreSQL).
_LOCAL: dict[tuple[str, int, str], threading.Lock] = {}
_LOCAL_GUARD = threading.Lock()


class SqlWorkLocks:
    """The service's WorkLocks (bot/services/ports.py) on SQLite and PostgreSQL."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextlib.contextmanager
    def hold(self, rotation_id: int, kind: str) -> Iterator[bool]:
        """True inside when this caller holds the lock until the block ends; False when
        another process (or thread) holds it now. Never waits."""
        if self._engine.dialect.name != "postgresql":
            with _LOCAL_GUARD:
                lock = _LOCAL.setdefault((str(self._engine.url), rotation_id, kind),
                                         threading.Lock())
            got = lock.acquire(blocking=False)
            try:
                yield got
            finally:
                if got:
                    lock.release()
            return
        key = advisory_key(f"rotabot-work:{rotation_id}:{kind}")
        try:
            conn = self._engine.connect()
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        try:
            try:
                conn.begin()
                got = bool(conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"),
                                        {"key": key}).scalar_one())
            except (OperationalError, InterfaceError) as exc:
                raise unavailable(self._engine.url, exc) from None
            yield got
        finally:
            # Closing rolls the transaction back, which ends the lock (a connection lost
            # meanwhile took it with it).
            with contextlib.suppress(OperationalError, InterfaceError):
                conn.close()
