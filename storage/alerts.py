"""SQL repository for alerts, inside the unit of work's transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    Integer,
    RowMapping,
    bindparam,
    case,
    cast,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.sql import Executable

from bot.domain.alert import UNRESOLVED, Alert, AlertStatus
from bot.domain.alert_intake import KeyState
from bot.domain.errors import RotabotError
from storage.deliveries import owe_posts, take_finished
from storage.list_params import counts_table, counts_value, pairs_table, pairs_value
from storage.sql_common import ALERTS, SqlRepository, new_id, store_errors


def _alert_values(alert: Alert) -> dict[str, Any]:
    return {
        "consumer": alert.consumer,
        "secret": alert.secret,
        "lane": alert.lane,
        "failure_class": alert.failure_class,
        "reason": alert.reason,
        "first_seen": alert.first_seen,
        "last_seen": alert.last_seen,
        "source": alert.source,
        "rotation_id": alert.rotation_id,
        "phase_at_alert": alert.phase_at_alert,
        "began_during_rotation": alert.began_during_rotation,
        "status": alert.status.value,
        "count": alert.count,
        "channel": alert.channel,
        "message_ts": alert.message_ts,
        "resolved_by": alert.resolved_by,
    }


def _alert_from_row(m: RowMapping) -> Alert:
    # Straight from the row (its columns' types already made the times UTC): building an
    # AlertRow table object first cost more than the query in a burst's batches.
    return Alert(
        id=m["id"],
        consumer=m["consumer"],
        secret=m["secret"],
        lane=m["lane"],
        failure_class=m["failure_class"],
        reason=m["reason"],
        first_seen=m["first_seen"],
        last_seen=m["last_seen"],
        source=m["source"],
        rotation_id=m["rotation_id"],
        phase_at_alert=m["phase_at_alert"],
        began_during_rotation=bool(m["began_during_rotation"]),
        status=AlertStatus(m["status"]),
        count=m["count"],
        channel=m["channel"],
        message_ts=m["message_ts"],
        resolved_by=m["resolved_by"],
    )


# The batch statements of the group commit, built once per dialect: each binds its lists as
# one parameter (storage/list_params.py), so every batch size runs the same statement text.
@cache
def _add_counts(dialect: str) -> Executable:
    added = counts_table(dialect, "counts")
    # Bound with the column's type, so the time is stored as every other one (UTC).
    at = bindparam("at", type_=ALERTS.c.last_seen.type)
    return (
        update(ALERTS)
        .where(ALERTS.c.id == cast(added.c.k, Integer))
        .values(count=ALERTS.c.count + cast(added.c.n, Integer),
                last_seen=case((ALERTS.c.last_seen < at, at), else_=ALERTS.c.last_seen))
        .returning(*ALERTS.c)
    )


@cache
def _latest_for_many(dialect: str) -> Executable:
    pairs = pairs_table(dialect, "pairs")
    return (
        select(ALERTS)
        .where(tuple_(ALERTS.c.consumer, ALERTS.c.failure_class).in_(select(pairs.c.a, pairs.c.b)),
               ALERTS.c.last_seen >= bindparam("since", type_=ALERTS.c.last_seen.type))
        .order_by(ALERTS.c.last_seen.desc(), ALERTS.c.id.desc())
    )


class SqlAlertRepository(SqlRepository):
    """AlertRepository: alerts are written at once (``add`` assigns the id)."""

    @store_errors
    def add(self, alert: Alert) -> Alert:
        if alert.id is not None:
            raise ValueError(f"{alert.ref} is already stored; use save()")
        result = self._conn.execute(insert(ALERTS).values(**_alert_values(alert)))
        alert.id = new_id(result)
        return alert

    @store_errors
    def get(self, alert_id: int) -> Alert:
        m = self._conn.execute(select(ALERTS).where(ALERTS.c.id == alert_id)).mappings().first()
        if m is None:
            raise RotabotError(f"no alert A-{alert_id}")
        return _alert_from_row(m)

    @store_errors
    def save(self, alert: Alert) -> None:
        """Everything but ``count`` and ``last_seen``, which only ``add_count`` moves: a save
        from a read taken before a batch added reports (a click, a Slack post recording its
        ts) must not take those reports back."""
        if alert.id is None:
            raise ValueError("an alert must be added before it is saved")
        values = _alert_values(alert)
        del values["count"], values["last_seen"]
        result = self._conn.execute(
            update(ALERTS).where(ALERTS.c.id == alert.id).values(**values)
        )
        if result.rowcount != 1:
            raise RotabotError(f"no alert {alert.ref}")

    @store_errors
    def latest_for(self, consumer: str, failure_class: str, since: datetime) -> Alert | None:
        m = (
            self._conn.execute(
                select(ALERTS)
                .where(
                    ALERTS.c.consumer == consumer,
                    ALERTS.c.failure_class == failure_class,
                    ALERTS.c.last_seen >= since,
                )
                .order_by(ALERTS.c.last_seen.desc(), ALERTS.c.id.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        return _alert_from_row(m) if m is not None else None

    @store_errors
    def for_secret(
        self, secret: str, *, unresolved_only: bool = False, since: datetime | None = None
    ) -> list[Alert]:
        """Newest (by last seen) first."""
        stmt = select(ALERTS).where(ALERTS.c.secret == secret)
        if unresolved_only:
            stmt = stmt.where(ALERTS.c.status.in_(sorted(s.value for s in UNRESOLVED)))
        if since is not None:
            stmt = stmt.where(ALERTS.c.last_seen >= since)
        stmt = stmt.order_by(ALERTS.c.last_seen.desc(), ALERTS.c.id.desc())
        return [_alert_from_row(m) for m in self._conn.execute(stmt).mappings()]

    @store_errors
    def recent(self, limit: int = 10) -> list[Alert]:
        stmt = select(ALERTS).order_by(ALERTS.c.last_seen.desc(), ALERTS.c.id.desc()).limit(limit)
        return [_alert_from_row(m) for m in self._conn.execute(stmt).mappings()]

    def add_count(self, alert_id: int, n: int, seen: datetime) -> Alert:
        """``n`` more reports of the alert, last seen at ``seen`` (or later)."""
        return self.add_counts({alert_id: n}, seen)[alert_id]

    @store_errors
    def add_counts(self, counts: Mapping[int, int], seen: datetime) -> dict[int, Alert]:
        """More reports of several alerts, all last seen at ``seen`` (or later): one UPDATE
        that adds to the stored counts, so replicas adding at once lose none. Returns the
        alerts as they are now."""
        if not counts:
            return {}
        rows = self._conn.execute(
            _add_counts(self._conn.dialect.name),
            {"counts": counts_value(counts), "at": seen},
        ).mappings().all()
        out = {m["id"]: _alert_from_row(m) for m in rows}
        missing = sorted(set(counts) - set(out))
        if missing:
            raise RotabotError(f"no alert A-{missing[0]}")
        return out

    @store_errors
    def lock_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        """Hold (consumer, failure class) pairs until this transaction ends, so a replica's
        batch coalescing the same failure waits and then sees this one's alert instead of
        opening a second. PostgreSQL advisory locks, taken in one order (no deadlock);
        SQLite has one writer at a time already."""
        if self._conn.dialect.name != "postgresql" or not keys:
            return
        # One round trip for every pair (a batch holds many). The array is in sorted order and
        # the locks are taken in it: a volatile function in the select list is evaluated after
        # the ORDER BY. The lock ids are those one statement per pair used to take.
        self._conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(k, 17)) "
                 "FROM unnest(CAST(:keys AS text[])) WITH ORDINALITY AS t(k, n) ORDER BY n"),
            {"keys": [f"rotabot-alert|{consumer}|{fclass}"  # names hold no '|'
                      for consumer, fclass in sorted(set(keys))]},
        ).all()

    @store_errors
    def latest_for_many(
        self, keys: Sequence[tuple[str, str]], since: datetime
    ) -> dict[tuple[str, str], Alert]:
        """latest_for of many (consumer, failure class) pairs in one query."""
        wanted = sorted(set(keys))
        if not wanted:
            return {}
        dialect = self._conn.dialect.name
        stmt = _latest_for_many(dialect)
        params = {**pairs_value(dialect, "pairs", wanted), "since": since}
        out: dict[tuple[str, str], Alert] = {}
        for m in self._conn.execute(stmt, params).mappings():
            out.setdefault((m["consumer"], m["failure_class"]), _alert_from_row(m))
        return out

    @store_errors
    def take_deliveries(
        self, keys: Sequence[str], now: datetime, ttl: timedelta
    ) -> dict[str, KeyState]:
        return take_finished(self._conn, keys, now, ttl)

    @store_errors
    def owe_posts(self, alert_ids: Sequence[int], now: datetime) -> None:
        owe_posts(self._conn, alert_ids, now)
