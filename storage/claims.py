"""Once-only Slack posts across replicas and crashes: claim, post, mark done; a stale claim
(its holder died before posting) may be taken over after a lease.

A claim is a row in ``reminders_sent`` (unique per rotation, consumer and kind), committed
before the post it guards. While the post is in flight the row holds the claim time; once the
post succeeded it holds ``DONE``, which never goes stale. The takeover is one conditional
UPDATE, so exactly one replica gets a stale claim.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Engine, Table, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from storage.engine import unavailable
from storage.tables import ReminderSentRow, metadata

CLAIMS: Table = metadata.tables[ReminderSentRow.__tablename__]
# The claim time of a finished post: far enough ahead that it is never older than a lease.
DONE = datetime(9999, 1, 1, tzinfo=UTC)
# Longer than one Slack post with its retries (10 s timeout, a few retries); short enough that
# a post lost with its replica is made by another one soon after.
DEFAULT_LEASE = timedelta(seconds=30)


def _is_done(sent_at: datetime) -> bool:
    # By year: SQLite hands the timestamp back without its time zone.
    return sent_at.year == DONE.year


class SqlPostClaims:
    """The notifier's PostClaims (adapters/slack_notifier.py) on the ``reminders_sent`` table."""

    def __init__(
        self,
        engine: Engine,
        now: Callable[[], datetime],
        lease: timedelta = DEFAULT_LEASE,
    ) -> None:
        self._engine = engine
        self._now = now
        self._lease = lease

    def _key(self, rotation_id: int, kind: str, consumer: str) -> ColumnElement[bool]:
        return and_(
            CLAIMS.c.rotation_id == rotation_id,
            CLAIMS.c.consumer == consumer,
            CLAIMS.c.kind == kind,
        )

    def claim(self, rotation_id: int, kind: str, consumer: str = "") -> bool:
        """True when this caller should post: nobody claimed it, or the claim went stale."""
        now = self._now()
        try:
            # A finished post is the common case (`/rotate status` re-offers every pending
            # prompt): one read answers it, without two write transactions per consumer.
            with self._engine.connect() as conn:
                sent = conn.execute(
                    select(CLAIMS.c.sent_at).where(self._key(rotation_id, kind, consumer))
                ).scalar_one_or_none()
            if sent is not None and _is_done(sent):
                return False
            try:
                with self._engine.begin() as conn:
                    conn.execute(
                        insert(CLAIMS).values(
                            rotation_id=rotation_id, consumer=consumer, kind=kind, sent_at=now
                        )
                    )
                return True
            except IntegrityError:
                pass  # claimed before, by this replica or another one
            with self._engine.begin() as conn:
                taken = conn.execute(
                    update(CLAIMS)
                    .where(self._key(rotation_id, kind, consumer),
                           CLAIMS.c.sent_at < now - self._lease)
                    .values(sent_at=now)
                )
                return bool(taken.rowcount == 1)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def finished(self, rotation_id: int) -> set[tuple[str, str]]:
        """(kind, consumer) of every post of this rotation that went out: one read, so
        re-offering a lane's pending prompts costs one query, not one per consumer."""
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(CLAIMS.c.kind, CLAIMS.c.consumer, CLAIMS.c.sent_at).where(
                        CLAIMS.c.rotation_id == rotation_id
                    )
                ).all()
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        return {(kind, consumer) for kind, consumer, sent in rows if _is_done(sent)}

    def done(self, rotation_id: int, kind: str, consumer: str = "", ts: str | None = None) -> None:
        """The post went out (at ``ts``, where it may be updated later): the claim never goes
        stale now."""
        self._write(
            update(CLAIMS).where(self._key(rotation_id, kind, consumer))
            .values(sent_at=DONE, message_ts=ts)
        )

    def posted(self, rotation_id: int, prefix: str) -> dict[tuple[str, str], str]:
        """(kind, consumer) -> ts of every finished post of this rotation whose kind starts
        with ``prefix`` and whose ts is known."""
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(CLAIMS.c.kind, CLAIMS.c.consumer, CLAIMS.c.message_ts).where(
                        CLAIMS.c.rotation_id == rotation_id,
                        CLAIMS.c.kind.startswith(prefix),
                        CLAIMS.c.message_ts.is_not(None),
                    )
                ).all()
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        return {(kind, consumer): str(ts) for kind, consumer, ts in rows}

    def release(self, rotation_id: int, kind: str, consumer: str = "") -> None:
        """The post failed: anyone may try again."""
        self._write(delete(CLAIMS).where(self._key(rotation_id, kind, consumer)))

    def _write(self, stmt: object) -> None:
        try:
            with self._engine.begin() as conn:
                conn.execute(stmt)  # type: ignore[call-overload]
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
