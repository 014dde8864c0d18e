"""Alert delivery ids shared by every replica: a retried `POST /alerts` counts once anywhere.

The route's Deliveries port (bot/domain/alert_intake.py) on the ``alert_deliveries`` table: one
row per ``X-Rotabot-Delivery`` id, unique by its primary key, until ``expires_at``. A
reservation holds the id for a short lease while its request runs; ``done`` (the alert was
taken) keeps it for the whole ttl, and only then is a retry answered as a duplicate. A retry
arriving while the id is still leased gets DeliveryInFlight (the route asks the sender to
retry): if the first request failed and could not release the id (the database blinked), or its
replica died, the retry is processed once the lease ends instead of being swallowed.

Taking over an expired row is one conditional UPDATE, so of two replicas racing for it exactly
one wins; expired rows are purged by each process at most once per ``purge_every``.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from sqlalchemy import Engine, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.sql import Executable

from bot.domain.alert_intake import TOLERANCE_SECONDS, DeliveryInFlight
from bot.domain.clock import Clock
from storage.engine import unavailable
from storage.tables import AlertDeliveryRow, metadata

DELIVERIES: Table = metadata.tables[AlertDeliveryRow.__tablename__]
# Outlives the signature tolerance either way: a retry later than that is refused as stale.
DEFAULT_TTL = timedelta(seconds=2 * TOLERANCE_SECONDS)
# Longer than one request takes (store the alert, post it with Slack's retries); short enough
# that the retry of a request whose replica died is processed soon after.
DEFAULT_LEASE = timedelta(minutes=1)
DEFAULT_PURGE_EVERY = timedelta(minutes=1)
# Insert, take over, look: a row released or purged between two of them means try again.
_ATTEMPTS = 3


class SqlDeliveryLog:
    """Deliveries (bot/domain/alert_intake.py) in the bot's database, on SQLite and PostgreSQL.

    Every method raises StoreUnavailable when the database cannot be reached.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        ttl: timedelta = DEFAULT_TTL,
        *,
        lease: timedelta = DEFAULT_LEASE,
        purge_every: timedelta = DEFAULT_PURGE_EVERY,
    ) -> None:
        if ttl <= timedelta(0) or lease <= timedelta(0):
            raise ValueError("ttl and lease must be positive")
        self._engine = engine
        self._clock = clock
        self.ttl = ttl
        self.lease = lease
        self._purge_every = purge_every
        self._next_purge: datetime | None = None
        self._purge_lock = threading.Lock()

    def reserve(self, delivery_id: str) -> bool:
        """True: process the delivery (nobody holds the id, or its hold expired). False: it
        was taken already. DeliveryInFlight: another request holds it and has not finished."""
        now = self._clock.now()
        try:
            self._purge_if_due(now)
            for _ in range(_ATTEMPTS):
                try:
                    with self._engine.begin() as conn:
                        conn.execute(
                            insert(DELIVERIES).values(
                                delivery_id=delivery_id, expires_at=now + self.lease, done=False
                            )
                        )
                    return True
                except IntegrityError:
                    pass  # reserved before, by this replica or another one
                with self._engine.begin() as conn:
                    taken = conn.execute(
                        update(DELIVERIES)
                        .where(DELIVERIES.c.delivery_id == delivery_id,
                               DELIVERIES.c.expires_at <= now)
                        .values(expires_at=now + self.lease, done=False)
                    )
                    if taken.rowcount == 1:
                        return True
                    finished = conn.execute(
                        select(DELIVERIES.c.done).where(DELIVERIES.c.delivery_id == delivery_id)
                    ).scalar_one_or_none()
                if finished is None:
                    continue  # released or purged since the INSERT failed: reserve afresh
                if finished:
                    return False
                raise DeliveryInFlight(delivery_id)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        # The row kept vanishing between the statements: counting a delivery twice coalesces
        # into the same alert, refusing it could lose the alert.
        return True

    def done(self, delivery_id: str) -> None:
        """The alert was taken: a retry within the ttl is a duplicate."""
        self._write(
            update(DELIVERIES)
            .where(DELIVERIES.c.delivery_id == delivery_id)
            .values(expires_at=self._clock.now() + self.ttl, done=True)
        )

    def release(self, delivery_id: str) -> None:
        """The request failed: the sender's retry must be processed."""
        self._write(delete(DELIVERIES).where(DELIVERIES.c.delivery_id == delivery_id))

    def purge(self, now: datetime | None = None) -> int:
        """Delete the ids expired at ``now`` (default: the clock's now); returns how many."""
        at = self._clock.now() if now is None else now
        try:
            with self._engine.begin() as conn:
                gone = conn.execute(delete(DELIVERIES).where(DELIVERIES.c.expires_at <= at))
                return int(gone.rowcount)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def _purge_if_due(self, now: datetime) -> None:
        # At most one purge per interval per process; a request never waits for another's.
        if not self._purge_lock.acquire(blocking=False):
            return
        try:
            if self._next_purge is not None and now < self._next_purge:
                return
            self._next_purge = now + self._purge_every
            self.purge(now)
        finally:
            self._purge_lock.release()

    def _write(self, stmt: Executable) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(stmt)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
