"""Leader election for timers: with PostgreSQL, the replica holding an advisory lock runs them.

The lock is a session-level ``pg_try_advisory_lock`` held on a dedicated connection. When the
leader dies its connection closes, PostgreSQL releases the lock, and the next replica to ask
(every timer tick) takes over. On SQLite there is one process by construction: always leader.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Protocol

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

log = logging.getLogger("rotabot.leader")

# Any constant will do, as long as every replica uses it and nothing else does
# (storage/migrate.py uses 0x524F5441 for migrations). "ROTT": rotabot timers.
TIMERS_LOCK_KEY = 0x524F5454


class Leader(Protocol):
    def is_leader(self) -> bool: ...

    def close(self) -> None: ...


class AlwaysLeader:
    """SQLite: a single process owns the database file, so it runs the timers."""

    def is_leader(self) -> bool:
        return True

    def close(self) -> None:
        return None


class PostgresLeader:
    """``is_leader()`` acquires the lock, or checks the session that holds it is still alive."""

    def __init__(self, engine_url: str | URL, *, key: int = TIMERS_LOCK_KEY) -> None:
        self._key = key
        # One connection of our own, outside any pool: the lock lives as long as it does.
        # TCP keepalives and a connect timeout keep a dead network from hanging a tick.
        self._engine: Engine = create_engine(
            make_url(engine_url),
            poolclass=NullPool,
            connect_args={
                "connect_timeout": 5,
                "keepalives": 1,
                "keepalives_idle": 5,
                "keepalives_interval": 2,
                "keepalives_count": 2,
            },
        )
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def is_leader(self) -> bool:
        with self._lock:
            try:
                if self._conn is not None:
                    # The session is alive, so the session-level lock is still ours.
                    self._conn.execute(text("SELECT 1"))
                    return True
                conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
                got = conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
                ).scalar()
                if got:
                    self._conn = conn
                    log.info("this replica now runs the timers")
                    return True
                conn.close()
                return False
            except DBAPIError:
                # The connection (and with it the lock) is gone: step down, retry next tick.
                if self._conn is not None:
                    log.warning("lost the timers lock; another replica may take over")
                self._drop()
                return False

    def close(self) -> None:
        """Release leadership (closing the session releases the lock)."""
        with self._lock:
            self._drop()
        self._engine.dispose()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(DBAPIError):
                conn.close()


def leader_for(database_url: str | URL) -> Leader:
    url = make_url(database_url)
    if url.get_backend_name() == "postgresql":
        return PostgresLeader(url)
    return AlwaysLeader()
