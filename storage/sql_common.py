"""What the SQL repository modules share: table handles, store errors, ids, audit rows."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection, CursorResult, RowMapping, Table
from sqlalchemy.exc import InterfaceError, OperationalError

from bot.domain.audit import AuditEvent
from storage.engine import unavailable
from storage.tables import (
    AlertRow,
    AuditEventRow,
    ConsumerStepRow,
    CredentialVersionRow,
    DueReminderRow,
    ReadinessConfirmationRow,
    ReminderSentRow,
    RotationRow,
    ScheduledRotationRow,
    SecretSeenRow,
    metadata,
)

ROTATIONS: Table = metadata.tables[RotationRow.__tablename__]
STEPS: Table = metadata.tables[ConsumerStepRow.__tablename__]
VERSIONS: Table = metadata.tables[CredentialVersionRow.__tablename__]
ALERTS: Table = metadata.tables[AlertRow.__tablename__]
AUDIT: Table = metadata.tables[AuditEventRow.__tablename__]
REMINDERS: Table = metadata.tables[ReminderSentRow.__tablename__]
SCHEDULES: Table = metadata.tables[ScheduledRotationRow.__tablename__]
CONFIRMATIONS: Table = metadata.tables[ReadinessConfirmationRow.__tablename__]
SEEN: Table = metadata.tables[SecretSeenRow.__tablename__]
DUE_REMINDERS: Table = metadata.tables[DueReminderRow.__tablename__]


_P = ParamSpec("_P")
_T = TypeVar("_T")
_R = TypeVar("_R", bound="SqlRepository")


class SqlRepository:
    """A repository working in the unit of work's Connection (``store_errors`` reads it)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn


def store_errors(method: Callable[Concatenate[_R, _P], _T]) -> Callable[Concatenate[_R, _P], _T]:
    """A database that went away mid-transaction is StoreUnavailable, not a driver error."""

    @functools.wraps(method)
    def wrapper(self: _R, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._conn.engine.url, exc) from None

    return wrapper


def new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


# The audit row mapping lives here rather than in storage/audit.py because the schedule
# repository writes audit rows too, in its own short transactions.
def audit_values(event: AuditEvent) -> dict[str, Any]:
    return {
        "at": event.at,
        "actor": event.actor,
        "action": event.action,
        "secret": event.secret,
        "rotation_id": event.rotation_id,
        "consumer": event.consumer,
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "detail": json.dumps(dict(event.detail), sort_keys=True),
    }


def audit_from_row(m: RowMapping) -> AuditEvent:
    row = AuditEventRow(**m)
    detail = json.loads(row.detail) if row.detail else {}
    return AuditEvent(
        at=row.at,
        actor=row.actor,
        action=row.action,
        secret=row.secret,
        rotation_id=row.rotation_id,
        consumer=row.consumer,
        before=row.before,
        after=row.after,
        reason=row.reason,
        detail={str(k): str(v) for k, v in detail.items()},
    )


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for the PostgreSQL advisory lock named ``name`` (the same
    on every replica)."""
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
