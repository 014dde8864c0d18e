"""Ids held in the database every replica shares, until they expire: taken once anywhere.

:class:`SqlKeyLog` is the pattern, on any table with a string primary key, ``expires_at`` and
``done`` (and optionally ``result``): one row per key, unique by its primary key, until
``expires_at``. A reservation holds the key for a short lease while its request runs; ``done``
(what the request did is committed) keeps it for the whole ttl, with what it created, and only
then is a repeat answered as a duplicate. A repeat arriving while the key is still leased is
told so (KeyHeld): if the first request failed and could not release the key (the database
blinked), or its replica died, the repeat is processed once the lease ends instead of being
swallowed. Taking over an expired row is one conditional UPDATE, so of two replicas racing for
it exactly one wins; expired rows are purged by each process at most once per ``purge_every``.

Inside a transaction, :func:`take_finished` takes many keys at once as finished: the group
commit of ``POST /alerts`` (bot/services/alert_batches.py) holds a batch's delivery ids in the
same transaction as the counts they add, so both are committed together or neither is, and no
lease is needed.

Two uses: :class:`SqlDeliveryLog` here, the ``/alerts`` route's Deliveries port
(bot/domain/alert_intake.py) on ``alert_deliveries``, one row per ``X-Rotabot-Delivery`` id; and
storage/slack_requests.py, Slack request signatures and user actions on ``slack_requests``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.sql import Executable

from bot.domain.alert_intake import TOLERANCE_SECONDS, DeliveryInFlight, KeyState
from bot.domain.clock import Clock
from storage.engine import unavailable
from storage.list_params import POSTGRESQL, in_list, list_table, list_value
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
# Keys of alerts' owed Slack posts (SqlAlertPostClaims), beside delivery ids and "am:" keys.
POST_PREFIX = "post:A-"


@cache
def _take_statements(dialect: str) -> tuple[Executable, Executable, Executable]:
    """take_finished's three statements for ``dialect``, built once: each binds its keys as
    one list (storage/list_params.py), so every batch size runs the same statement text."""
    column, at = DELIVERIES.c.delivery_id, DELIVERIES.c.expires_at
    expires = bindparam("expires", type_=at.type)
    take_over = (
        update(DELIVERIES)
        .where(in_list(dialect, column, "keys"), at <= bindparam("now", type_=at.type))
        .values(expires_at=expires, done=True)
        .returning(column)
    )
    keys = list_table(dialect, "keys")
    # ON CONFLICT DO NOTHING: on PostgreSQL a key another transaction is inserting waits for
    # it and is then skipped, never an error that would abort this transaction.
    # WHERE true: SQLite would read the ON of ON CONFLICT as a join's after FROM.
    rows = select(keys.c.value, expires, true()).where(true())
    insert_new = (
        (postgresql if dialect == POSTGRESQL else sqlite).insert(DELIVERIES)
        .from_select(["delivery_id", "expires_at", "done"], rows)
        .on_conflict_do_nothing()
        .returning(column)
    )
    look = select(column, DELIVERIES.c.done).where(in_list(dialect, column, "keys"))
    return take_over, insert_new, look


def take_finished(
    conn: Connection, keys: Sequence[str], now: datetime, ttl: timedelta = DEFAULT_TTL
) -> dict[str, KeyState]:
    """Take ``keys`` of ``alert_deliveries`` as finished, in the caller's transaction: each is
    TAKEN (nobody held it, or its hold expired), DUPLICATE (finished before) or IN_FLIGHT
    (held and not finished, by an older lease-holding request or a replica's batch that
    committed meanwhile without finishing). Nothing raises on a conflict, so one key never
    aborts the batch's transaction. At most three statements, whatever the number of keys."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return {}
    dialect = conn.dialect.name
    take_over, insert_new, look = _take_statements(dialect)
    expires = now + ttl
    taken = set(conn.execute(
        take_over, {"keys": list_value(dialect, wanted), "now": now, "expires": expires}
    ).scalars())
    rest = [k for k in wanted if k not in taken]
    if rest:
        taken.update(conn.execute(
            insert_new, {"keys": list_value(dialect, rest), "expires": expires}).scalars())
    left = [k for k in rest if k not in taken]
    finished: set[str] = set()
    if left:
        finished = {k for k, done in conn.execute(
            look, {"keys": list_value(dialect, left)}) if done}
    return {
        k: KeyState.TAKEN if k in taken
        else KeyState.DUPLICATE if k in finished
        else KeyState.IN_FLIGHT  # held, or gone since the insert: the sender's retry decides
        for k in wanted
    }


class KeyHeld(Exception):
    """Another request holds the key and has not finished (here or on another replica)."""


@dataclass(frozen=True)
class Taken:
    """The key was taken and finished before; ``result`` is what that request recorded."""

    result: str | None = None


class SqlKeyLog:
    """Keys in ``table`` of the bot's database, on SQLite and PostgreSQL.

    ``table`` has the string primary key ``key_column``, ``expires_at`` (UTCDateTime), ``done``
    and, when results are kept, ``result``. Every method raises StoreUnavailable when the
    database cannot be reached.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        table: Table,
        key_column: str,
        *,
        ttl: timedelta = DEFAULT_TTL,
        lease: timedelta = DEFAULT_LEASE,
        purge_every: timedelta = DEFAULT_PURGE_EVERY,
    ) -> None:
        if ttl <= timedelta(0) or lease <= timedelta(0):
            raise ValueError("ttl and lease must be positive")
        self._engine = engine
        self._clock = clock
        self._table = table
        self._key: Column[Any] = table.c[key_column]
        self._result: Column[Any] | None = table.c.get("result")
        self.ttl = ttl
        self.lease = lease
        self._purge_every = purge_every
        self._next_purge: datetime | None = None
        self._purge_lock = threading.Lock()

    def hold(self, key: str, *, finished: bool = False) -> Taken | None:
        """None: the caller holds ``key`` now, for the lease (for the whole ttl, done, when
        ``finished``). Taken: a request took it and finished. KeyHeld: a request holds it and
        has not finished."""
        now = self._clock.now()
        expires = now + (self.ttl if finished else self.lease)
        fresh: dict[str, Any] = {"expires_at": expires, "done": finished}
        if self._result is not None:
            fresh["result"] = None
        try:
            self._purge_if_due(now)
            for _ in range(_ATTEMPTS):
                try:
                    with self._engine.begin() as conn:
                        conn.execute(insert(self._table).values({self._key.name: key, **fresh}))
                    return None
                except IntegrityError:
                    pass  # held before, by this replica or another one
                with self._engine.begin() as conn:
                    taken = conn.execute(
                        update(self._table)
                        .where(self._key == key, self._table.c.expires_at <= now)
                        .values(fresh)
                    )
                    if taken.rowcount == 1:
                        return None
                    columns = [self._table.c.done]
                    if self._result is not None:
                        columns.append(self._result)
                    row = conn.execute(select(*columns).where(self._key == key)).first()
                if row is None:
                    continue  # released or purged since the INSERT failed: hold it afresh
                if row[0]:
                    return Taken(row[1] if self._result is not None else None)
                raise KeyHeld(key)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        # The row kept vanishing between the statements: processing twice is the lesser harm
        # of the two (the callers' writes are idempotent or coalesce), refusing could lose it.
        return None

    def finish(self, key: str, result: str | None = None) -> None:
        """What the request did is committed: a repeat within the ttl is a duplicate, answered
        with ``result``."""
        values: dict[str, Any] = {"expires_at": self._clock.now() + self.ttl, "done": True}
        if self._result is not None:
            values["result"] = result
        self._write(update(self._table).where(self._key == key).values(values))

    def release(self, key: str) -> None:
        """The request failed and did nothing: a repeat must be processed."""
        self._write(delete(self._table).where(self._key == key))

    def purge(self, now: datetime | None = None) -> int:
        """Delete the keys expired at ``now`` (default: the clock's now); returns how many."""
        at = self._clock.now() if now is None else now
        expired = self._table.c.expires_at <= at
        if self._table is DELIVERIES:
            # An alert's post not made yet is owed until it is done (SqlAlertPostClaims).
            expired = and_(expired, or_(DELIVERIES.c.done.is_(True),
                                        ~self._key.startswith(POST_PREFIX)))
        try:
            with self._engine.begin() as conn:
                gone = conn.execute(delete(self._table).where(expired))
                return int(gone.rowcount)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def purge_if_due(self) -> None:
        """Purge expired keys unless this process did so within ``purge_every`` (for callers
        that take keys without ``hold``: the group commit, the catch-up loop)."""
        self._purge_if_due(self._clock.now())

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


class SqlDeliveryLog(SqlKeyLog):
    """Deliveries (bot/domain/alert_intake.py) on ``alert_deliveries``: a retried
    ``POST /alerts`` counts once, whichever replica it reaches."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        ttl: timedelta = DEFAULT_TTL,
        *,
        lease: timedelta = DEFAULT_LEASE,
        purge_every: timedelta = DEFAULT_PURGE_EVERY,
    ) -> None:
        super().__init__(engine, clock, DELIVERIES, "delivery_id", ttl=ttl, lease=lease,
                         purge_every=purge_every)

    def reserve(self, delivery_id: str) -> bool:
        """True: process the delivery (nobody holds the id, or its hold expired). False: it
        was taken already. DeliveryInFlight: another request holds it and has not finished."""
        try:
            return self.hold(delivery_id) is None
        except KeyHeld:
            raise DeliveryInFlight(delivery_id) from None

    def done(self, delivery_id: str) -> None:
        """The alert was taken: a retry within the ttl is a duplicate."""
        self.finish(delivery_id)


def owe_posts(conn: Connection, alert_ids: Sequence[int], now: datetime) -> None:
    """Record, in the caller's transaction, that these new alerts' Slack posts are owed: a
    claim row that lapsed at once, so any replica may take it, and the catch-up finds it
    (SqlAlertPostClaims.owed) if the process that committed them dies before posting."""
    if alert_ids:
        conn.execute(insert(DELIVERIES).values([
            {"delivery_id": f"{POST_PREFIX}{i}", "expires_at": now, "done": False}
            for i in alert_ids]))


class SqlAlertPostClaims:
    """Once-only posts of new alerts to Slack (AlertService), across replicas and crashes:
    ``post:A-<id>`` keys on ``alert_deliveries`` (beside delivery ids and the ``am:`` keys of
    Alertmanager alerts). The group commit writes the key with the alert (``owe_posts``); a
    claim holds it for ``lease`` while the post is in flight; ``done`` keeps it for the ttl
    (the alert's row then holds the message), after which it is purged. A failed post, or one
    whose holder died, lapses back to owed, and the catch-up loop of any replica posts it."""

    def __init__(
        self, engine: Engine, clock: Clock, *, lease: timedelta = timedelta(seconds=30)
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._keys = SqlKeyLog(engine, clock, DELIVERIES, "delivery_id", lease=lease)

    @staticmethod
    def _key(alert_id: int) -> str:
        return f"{POST_PREFIX}{alert_id}"

    def claim(self, alert_id: int) -> bool:
        """True: post it now. False: it was posted, or another request is posting it."""
        try:
            return self._keys.hold(self._key(alert_id)) is None
        except KeyHeld:
            return False

    def done(self, alert_id: int) -> None:
        """Posted (or no longer to be posted): not owed any more."""
        self._keys.finish(self._key(alert_id))

    def release(self, alert_id: int) -> None:
        """The post failed: owed again, at once (the catch-up loop retries it)."""
        self._keys._write(update(DELIVERIES).where(
            DELIVERIES.c.delivery_id == self._key(alert_id), DELIVERIES.c.done.is_(False)
        ).values(expires_at=self._clock.now()))

    def owed(self) -> list[int]:
        """Alerts whose post is owed: never made, or whose holder failed or died."""
        try:
            with self._engine.connect() as conn:
                keys = conn.execute(select(DELIVERIES.c.delivery_id).where(
                    DELIVERIES.c.delivery_id.startswith(POST_PREFIX),
                    DELIVERIES.c.done.is_(False))).scalars().all()
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        return sorted(int(k[len(POST_PREFIX):]) for k in keys)
