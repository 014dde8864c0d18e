"""The Slack call budget's token buckets in the database every replica shares.

Taking a token is a read and one conditional UPDATE (compare and set on the row's tokens and
stamp), retried when another replica won the race: atomic on SQLite and PostgreSQL alike
without holding a row lock across the caller's work.
"""

from __future__ import annotations

from sqlalchemy import Engine, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from bot.domain.token_bucket import Bucket, Rate, drain, take
from storage.tables import SlackBudgetRow, metadata

BUDGET: Table = metadata.tables[SlackBudgetRow.__tablename__]
# Races lost in a row before giving up on this round (the caller waits and asks again).
_MAX_RACES = 8


class SqlTokenBuckets:
    """The TokenBuckets of adapters/slack_budget.py on ``slack_call_budget``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def take(self, bucket: str, rate: Rate, now: float) -> float:
        """0.0: a token was taken; else seconds until one is there."""
        for _ in range(_MAX_RACES):
            before = self._read(bucket)
            after, wait = take(before, rate, now)
            if self._write(bucket, before, after):
                return wait
        return 1.0 / rate.per_second  # contended: try again in one token's time

    def drain(self, bucket: str, rate: Rate, now: float, seconds: float) -> None:
        """Slack answered 429 with Retry-After ``seconds``: no replica calls before then."""
        for _ in range(_MAX_RACES):
            before = self._read(bucket)
            if self._write(bucket, before, drain(before, rate, now, seconds)):
                return

    def _read(self, bucket: str) -> Bucket | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(BUDGET.c.tokens, BUDGET.c.stamp).where(BUDGET.c.bucket == bucket)
            ).first()
        return None if row is None else Bucket(float(row.tokens), float(row.stamp))

    def _write(self, bucket: str, before: Bucket | None, after: Bucket) -> bool:
        """Store ``after`` if the row still holds ``before``; False: another replica won."""
        if before is None:
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(BUDGET).values(
                        bucket=bucket, tokens=after.tokens, stamp=after.stamp))
            except IntegrityError:
                return False  # another replica made the row first
            return True
        with self._engine.begin() as conn:
            done = conn.execute(
                update(BUDGET)
                .where(BUDGET.c.bucket == bucket, BUDGET.c.tokens == before.tokens,
                       BUDGET.c.stamp == before.stamp)
                .values(tokens=after.tokens, stamp=after.stamp)
            )
            return done.rowcount == 1
