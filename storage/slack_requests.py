"""Slack requests and user actions taken by any replica, so a repeat is taken once anywhere.

SeenSignatures and ActionLog (bot/domain/replay.py) on the ``slack_requests`` table, with the
keyed-row pattern of storage/deliveries.py (SqlKeyLog). Keys are stored hashed (SHA-256): what
the table needs is equality, not Slack's trigger ids or signatures.

- A verified request's signature is taken finished at once, for the whole ttl (twice the
  five-minute signature window): an identical request, on any replica or after a restart,
  finds it and is ignored.
- A user action (trigger id, view id) is held for a short lease while it runs, then finished
  with what it created, or released when it created nothing.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import Engine, Table

from bot.domain.clock import Clock
from bot.domain.replay import SIGNATURE_TOLERANCE_SECONDS, ActionInFlight
from storage.deliveries import DEFAULT_LEASE, DEFAULT_PURGE_EVERY, KeyHeld, SqlKeyLog
from storage.tables import SlackRequestRow, metadata

SLACK_REQUESTS: Table = metadata.tables[SlackRequestRow.__tablename__]
# Outlives the signature window either way: later than that, Bolt refuses the request as stale.
DEFAULT_TTL = timedelta(seconds=2 * SIGNATURE_TOLERANCE_SECONDS)


def signature_key(signature: str) -> str:
    return "sig:" + hashlib.sha256(signature.encode("utf-8", "replace")).hexdigest()


def action_key(action_id: str) -> str:
    return "act:" + hashlib.sha256(action_id.encode("utf-8", "replace")).hexdigest()


class SqlSlackRequests:
    """SeenSignatures and ActionLog in the bot's database, on SQLite and PostgreSQL.

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
        self._keys = SqlKeyLog(engine, clock, SLACK_REQUESTS, "request_key", ttl=ttl,
                               lease=lease, purge_every=purge_every)
        self.ttl, self.lease = ttl, lease

    # --- SeenSignatures ------------------------------------------------------------------

    def first_time(self, signature: str) -> bool:
        try:
            return self._keys.hold(signature_key(signature), finished=True) is None
        except KeyHeld:  # only actions are held unfinished, and their keys differ
            return False

    # --- ActionLog -----------------------------------------------------------------------

    def begin(self, action_id: str) -> str | None:
        try:
            taken = self._keys.hold(action_key(action_id))
        except KeyHeld:
            raise ActionInFlight() from None
        if taken is None:
            return None
        # finish() always records a result; "" would only come from a row written otherwise.
        return taken.result or ""

    def finish(self, action_id: str, result: str) -> None:
        self._keys.finish(action_key(action_id), result)

    def release(self, action_id: str) -> None:
        self._keys.release(action_key(action_id))

    # --- housekeeping --------------------------------------------------------------------

    def purge(self, now: datetime | None = None) -> int:
        """Delete the signatures and actions expired at ``now``; returns how many."""
        return self._keys.purge(now)
