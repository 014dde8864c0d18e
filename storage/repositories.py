"""SQL repositories for rotations, alerts and the audit log, inside one unit of work.

They share one Connection (one transaction) owned by ``SqlUnitOfWork``. Rotations are
tracked: every rotation loaded or added is remembered with the revision it was read at, and
``write_changes`` (called by the unit of work's commit) writes the changed ones with
``UPDATE ... WHERE id = :id AND revision = :loaded`` so a concurrent writer is detected.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Row,
    RowMapping,
    Table,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from bot.domain.alert import UNRESOLVED, Alert, AlertStatus
from bot.domain.audit import AuditEvent
from bot.domain.errors import AlreadyActive, ChangedMeanwhile, RotabotError, RotationNotFound
from bot.domain.lifecycle import SWITCHED_PHASES, Phase, StepState
from bot.domain.rotation import ConsumerProgress, Rotation
from bot.domain.schedule import (
    OPEN_STATUS_VALUES,
    Confirmation,
    ReviewFinding,
    ScheduledRotation,
    ScheduleNotFound,
    ScheduleStatus,
)
from storage.engine import unavailable
from storage.tables import (
    TERMINAL_PHASE_VALUES,
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

# Rotation fields that are columns of their own (id, consumers, revision and events are not).
_ROTATION_SCALARS: tuple[str, ...] = tuple(
    f.name
    for f in fields(Rotation)
    if f.name not in ("id", "consumers", "revision", "events", "lanes", "overlap", "observe")
)
_CONSUMER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ConsumerProgress))


_P = ParamSpec("_P")
_T = TypeVar("_T")
_R = TypeVar("_R", bound="_SqlRepository")


class _SqlRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn


def _store_errors(method: Callable[Concatenate[_R, _P], _T]) -> Callable[Concatenate[_R, _P], _T]:
    """A database that went away mid-transaction is StoreUnavailable, not a driver error."""

    @functools.wraps(method)
    def wrapper(self: _R, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._conn.engine.url, exc) from None

    return wrapper


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


# --- rotations ------------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialVersion:
    """A credential version handled by a rotation: a reference and its label, no value."""

    rotation_id: int
    secret: str
    store_path: str
    version: str
    key_id: str | None
    label: str


def credential_labels(rotation: Rotation) -> list[tuple[str, str | None, str]]:
    """(version, key id, label) of the old and new credential, derived from the phase.

    Before the switch the old version is current and the new one pending; after it the new
    one is current and the old one previous (still valid); revocation retires the old one;
    a rollback or cancel makes the old one current again and retires the new one.
    """
    phase = rotation.phase
    if phase is Phase.FAILED:
        # A failed rotation still holds the credentials as it did when it failed.
        if rotation.failed_from is not None:
            phase = rotation.failed_from
        elif rotation.switched_at is not None:
            phase = Phase.SWITCHED
    if phase in SWITCHED_PHASES:
        old_label, new_label = "previous", "current"
    elif phase is Phase.REVOKED:
        old_label, new_label = "revoked", "current"
    elif phase in (Phase.ROLLED_BACK, Phase.CANCELLED):
        old_label, new_label = "current", "revoked"
    else:
        old_label, new_label = "current", "pending"
    out: list[tuple[str, str | None, str]] = []
    if rotation.new_version is not None:
        out.append((rotation.new_version, rotation.new_key_id, new_label))
    if rotation.old_version is not None and rotation.old_version != rotation.new_version:
        out.append((rotation.old_version, rotation.old_key_id, old_label))
    return out


_Snapshot = tuple[tuple[Any, ...], dict[str, tuple[Any, ...]]]


# attrgetter reads every field in C: the snapshot is taken on each load and commit, per consumer.
_consumer_fields = operator.attrgetter(*_CONSUMER_FIELDS)


def _consumer_tuple(c: ConsumerProgress) -> tuple[Any, ...]:
    return tuple(_consumer_fields(c))


def _snapshot(rotation: Rotation) -> _Snapshot:
    scalars = (
        rotation.lanes,
        rotation.overlap,
        rotation.observe,
        *(getattr(rotation, name) for name in _ROTATION_SCALARS),
    )
    return scalars, {name: _consumer_tuple(c) for name, c in rotation.consumers.items()}


@dataclass
class _Tracked:
    rotation: Rotation
    loaded_revision: int
    # What was last read or written; None means "write at the next commit" (a new rotation).
    snapshot: _Snapshot | None
    written_revision: int | None = None


def _rotation_values(rotation: Rotation) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(rotation, name) for name in _ROTATION_SCALARS}
    values["phase"] = rotation.phase.value
    values["failed_from"] = rotation.failed_from.value if rotation.failed_from else None
    values["lanes"] = json.dumps(list(rotation.lanes))
    values["overlap_seconds"] = rotation.overlap.total_seconds()
    values["observe_seconds"] = rotation.observe.total_seconds()
    return values


def _step_values(rotation_id: int, c: ConsumerProgress) -> dict[str, Any]:
    return {
        "rotation_id": rotation_id,
        "name": c.name,
        "lane": c.lane,
        "owner": c.owner,
        "reload": c.reload,
        "state": c.state.value,
        "updated_at": c.updated_at,
        "updated_by": c.updated_by,
        "note": c.note,
    }


def _rotation_from_rows(
    row: RotationRow, steps: Sequence[ConsumerStepRow] | Sequence[Row[Any]]
) -> Rotation:
    assert row.id is not None
    consumers = {
        s.name: ConsumerProgress(
            name=s.name,
            lane=s.lane,
            owner=s.owner,
            reload=s.reload,
            state=StepState(s.state),
            updated_at=s.updated_at,
            updated_by=s.updated_by,
            note=s.note,
        )
        for s in steps
    }
    return Rotation(
        id=row.id,
        secret=row.secret,
        phase=Phase(row.phase),
        lanes=tuple(str(lane) for lane in json.loads(row.lanes)),
        consumers=consumers,
        overlap=timedelta(seconds=row.overlap_seconds),
        observe=timedelta(seconds=row.observe_seconds),
        created_at=row.created_at,
        started_by=row.started_by,
        store_path=row.store_path,
        prepared_at=row.prepared_at,
        switched_at=row.switched_at,
        observe_until=row.observe_until,
        overlap_until=row.overlap_until,
        finished_at=row.finished_at,
        failed_from=Phase(row.failed_from) if row.failed_from else None,
        failure_reason=row.failure_reason,
        old_version=row.old_version,
        new_version=row.new_version,
        old_key_id=row.old_key_id,
        new_key_id=row.new_key_id,
        channel=row.channel,
        message_ts=row.message_ts,
        urgent=bool(row.urgent),
        auto_revoke=bool(row.auto_revoke),
        revision=row.revision,
    )


class SqlRotationRepository(_SqlRepository):
    """RotationRepository over one transaction; writes happen in ``write_changes``."""

    def __init__(self, conn: Connection, audit: SqlAuditLog) -> None:
        super().__init__(conn)
        self._audit = audit
        self._tracked: dict[int, _Tracked] = {}

    # --- RotationRepository -----------------------------------------------------------

    @_store_errors
    def add(self, rotation: Rotation) -> Rotation:
        if rotation.id is not None:
            raise ValueError(f"{rotation.ref} is already stored; add() is for new rotations")
        if not rotation.terminal:
            existing = self.active_for_secret(rotation.secret)
            if existing is not None:
                raise AlreadyActive(rotation.secret, existing.ref)
        values = _rotation_values(rotation)
        try:
            result = self._conn.execute(insert(ROTATIONS).values(**values, revision=0))
        except IntegrityError:
            # Another start won the race between our check and our insert (the partial
            # unique index). The transaction is unusable now: roll it back and say who won.
            self._conn.rollback()
            self.forget_all()
            self._audit.forget_pending()
            winner = self._active_id(rotation.secret)
            if winner is None:
                raise
            raise AlreadyActive(rotation.secret, f"R-{winner}") from None
        rotation_id = _new_id(result)
        rotation.id = rotation_id
        rotation.revision = 0
        if rotation.consumers:
            self._conn.execute(
                insert(STEPS), [_step_values(rotation_id, c) for c in rotation.consumers.values()]
            )
        self._sync_versions(rotation)
        self._tracked[rotation_id] = _Tracked(rotation, loaded_revision=0, snapshot=None)
        return rotation

    @_store_errors
    def get(self, rotation_id: int) -> Rotation:
        tracked = self._tracked.get(rotation_id)
        if tracked is not None:
            return tracked.rotation
        rows = self._load(ROTATIONS.c.id == rotation_id)
        if not rows:
            raise RotationNotFound(f"R-{rotation_id}")
        return rows[0]

    @_store_errors
    def active_for_secret(self, secret: str) -> Rotation | None:
        rows = self._load(
            ROTATIONS.c.secret == secret, ROTATIONS.c.phase.not_in(TERMINAL_PHASE_VALUES)
        )
        return rows[0] if rows else None

    @_store_errors
    def list_active(self) -> list[Rotation]:
        return self._load(ROTATIONS.c.phase.not_in(TERMINAL_PHASE_VALUES))

    @_store_errors
    def history(self, secret: str, limit: int = 20) -> list[Rotation]:
        return self._load(ROTATIONS.c.secret == secret, newest_first=True, limit=limit)

    # --- beyond the Protocol ----------------------------------------------------------

    @_store_errors
    def credential_versions(self, rotation_id: int) -> list[CredentialVersion]:
        """The version references and labels stored for a rotation (never values)."""
        rows = self._conn.execute(
            select(VERSIONS).where(VERSIONS.c.rotation_id == rotation_id).order_by(VERSIONS.c.id)
        ).mappings()
        return [
            CredentialVersion(
                rotation_id=r["rotation_id"],
                secret=r["secret"],
                store_path=r["store_path"],
                version=r["version"],
                key_id=r["key_id"],
                label=r["label"],
            )
            for r in rows
        ]

    # --- unit-of-work hooks -----------------------------------------------------------

    def write_changes(self) -> None:
        """Write every tracked rotation that changed or has events; raises ChangedMeanwhile."""
        for tracked in self._tracked.values():
            rotation = tracked.rotation
            snapshot = _snapshot(rotation)
            if snapshot == tracked.snapshot and not rotation.events:
                tracked.written_revision = None
                continue
            assert rotation.id is not None
            result = self._conn.execute(
                update(ROTATIONS)
                .where(
                    ROTATIONS.c.id == rotation.id, ROTATIONS.c.revision == tracked.loaded_revision
                )
                .values(**_rotation_values(rotation), revision=ROTATIONS.c.revision + 1)
            )
            if result.rowcount != 1:
                raise ChangedMeanwhile(rotation.ref)
            before = tracked.snapshot[1] if tracked.snapshot is not None else {}
            self._write_steps(rotation.id, rotation.consumers.values(), before)
            self._sync_versions(rotation)
            self._audit.insert(
                e if e.rotation_id is not None else _with_rotation_id(e, rotation.id)
                for e in rotation.events
            )
            tracked.written_revision = tracked.loaded_revision + 1

    def committed(self) -> None:
        """The transaction committed: the written rotations are now at their new revision."""
        for tracked in self._tracked.values():
            if tracked.written_revision is None:
                continue
            tracked.rotation.revision = tracked.written_revision
            tracked.rotation.events.clear()
            tracked.loaded_revision = tracked.written_revision
            tracked.snapshot = _snapshot(tracked.rotation)
            tracked.written_revision = None

    def forget_all(self) -> None:
        """After a rollback nothing tracked may be written by a later commit."""
        self._tracked.clear()

    # --- internals --------------------------------------------------------------------

    def _active_id(self, secret: str) -> int | None:
        found = self._conn.execute(
            select(ROTATIONS.c.id).where(
                ROTATIONS.c.secret == secret, ROTATIONS.c.phase.not_in(TERMINAL_PHASE_VALUES)
            )
        ).scalar_one_or_none()
        return int(found) if found is not None else None

    def _load(
        self, *where: Any, newest_first: bool = False, limit: int | None = None
    ) -> list[Rotation]:
        order = ROTATIONS.c.id.desc() if newest_first else ROTATIONS.c.id
        stmt = select(ROTATIONS).where(*where).order_by(order)
        if limit is not None:
            stmt = stmt.limit(limit)
        rows = [RotationRow(**m) for m in self._conn.execute(stmt).mappings()]
        fresh = [r.id for r in rows if r.id is not None and r.id not in self._tracked]
        steps: dict[int, list[Row[Any]]] = {i: [] for i in fresh}
        if fresh:
            # Plain rows, not ConsumerStepRow objects: SQLModel's instrumented constructor
            # cost ~0.1 ms a row, i.e. most of a click on a rotation with hundreds of consumers.
            for step in self._conn.execute(
                select(STEPS).where(STEPS.c.rotation_id.in_(fresh)).order_by(STEPS.c.id)
            ):
                steps[step.rotation_id].append(step)
        out: list[Rotation] = []
        for row in rows:
            assert row.id is not None
            tracked = self._tracked.get(row.id)
            if tracked is None:
                # The same rotation is one object per unit of work, however it was reached.
                rotation = _rotation_from_rows(row, steps[row.id])
                tracked = _Tracked(
                    rotation, loaded_revision=row.revision, snapshot=_snapshot(rotation)
                )
                self._tracked[row.id] = tracked
            out.append(tracked.rotation)
        return out

    def _write_steps(
        self,
        rotation_id: int,
        consumers: Iterable[ConsumerProgress],
        before: Mapping[str, tuple[Any, ...]],
    ) -> None:
        for c in consumers:
            if before.get(c.name) == _consumer_tuple(c):
                continue
            values = _step_values(rotation_id, c)
            result = self._conn.execute(
                update(STEPS)
                .where(STEPS.c.rotation_id == rotation_id, STEPS.c.name == c.name)
                .values(**values)
            )
            if result.rowcount == 0:
                self._conn.execute(insert(STEPS).values(**values))

    def _sync_versions(self, rotation: Rotation) -> None:
        assert rotation.id is not None
        wanted = {v: (key_id, label) for v, key_id, label in credential_labels(rotation)}
        stored = {
            r["version"]: (r["key_id"], r["label"])
            for r in self._conn.execute(
                select(VERSIONS.c.version, VERSIONS.c.key_id, VERSIONS.c.label).where(
                    VERSIONS.c.rotation_id == rotation.id
                )
            ).mappings()
        }
        gone = [v for v in stored if v not in wanted]
        if gone:
            self._conn.execute(
                delete(VERSIONS).where(
                    VERSIONS.c.rotation_id == rotation.id, VERSIONS.c.version.in_(gone)
                )
            )
        for version, (key_id, label) in wanted.items():
            if version not in stored:
                self._conn.execute(
                    insert(VERSIONS).values(
                        rotation_id=rotation.id,
                        secret=rotation.secret,
                        store_path=rotation.store_path,
                        version=version,
                        key_id=key_id,
                        label=label,
                    )
                )
            elif stored[version] != (key_id, label):
                self._conn.execute(
                    update(VERSIONS)
                    .where(VERSIONS.c.rotation_id == rotation.id, VERSIONS.c.version == version)
                    .values(key_id=key_id, label=label, store_path=rotation.store_path)
                )


def _with_rotation_id(event: AuditEvent, rotation_id: int) -> AuditEvent:
    return AuditEvent(
        at=event.at,
        actor=event.actor,
        action=event.action,
        secret=event.secret,
        rotation_id=rotation_id,
        consumer=event.consumer,
        before=event.before,
        after=event.after,
        reason=event.reason,
        detail=dict(event.detail),
    )


# --- alerts ---------------------------------------------------------------------------


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
    row = AlertRow(**m)
    return Alert(
        id=row.id,
        consumer=row.consumer,
        secret=row.secret,
        lane=row.lane,
        failure_class=row.failure_class,
        reason=row.reason,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        source=row.source,
        rotation_id=row.rotation_id,
        phase_at_alert=row.phase_at_alert,
        began_during_rotation=bool(row.began_during_rotation),
        status=AlertStatus(row.status),
        count=row.count,
        channel=row.channel,
        message_ts=row.message_ts,
        resolved_by=row.resolved_by,
    )


class SqlAlertRepository(_SqlRepository):
    """AlertRepository: alerts are written at once (``add`` assigns the id)."""

    @_store_errors
    def add(self, alert: Alert) -> Alert:
        if alert.id is not None:
            raise ValueError(f"{alert.ref} is already stored; use save()")
        result = self._conn.execute(insert(ALERTS).values(**_alert_values(alert)))
        alert.id = _new_id(result)
        return alert

    @_store_errors
    def get(self, alert_id: int) -> Alert:
        m = self._conn.execute(select(ALERTS).where(ALERTS.c.id == alert_id)).mappings().first()
        if m is None:
            raise RotabotError(f"no alert A-{alert_id}")
        return _alert_from_row(m)

    @_store_errors
    def save(self, alert: Alert) -> None:
        if alert.id is None:
            raise ValueError("an alert must be added before it is saved")
        result = self._conn.execute(
            update(ALERTS).where(ALERTS.c.id == alert.id).values(**_alert_values(alert))
        )
        if result.rowcount != 1:
            raise RotabotError(f"no alert {alert.ref}")

    @_store_errors
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

    @_store_errors
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

    @_store_errors
    def recent(self, limit: int = 10) -> list[Alert]:
        stmt = select(ALERTS).order_by(ALERTS.c.last_seen.desc(), ALERTS.c.id.desc()).limit(limit)
        return [_alert_from_row(m) for m in self._conn.execute(stmt).mappings()]


# --- audit ----------------------------------------------------------------------------


def _audit_values(event: AuditEvent) -> dict[str, Any]:
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


def _audit_from_row(m: RowMapping) -> AuditEvent:
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


class SqlAuditLog(_SqlRepository):
    """AuditLog: append-only. There is deliberately no update or delete here, and the
    database refuses both (triggers installed by the migration).

    Appended events are held until the unit of work commits (or a read needs them), so a
    SQLite writer lock is taken as late as possible; they commit with the state change.
    """

    # Rows fetched per round trip while exporting.
    EXPORT_BATCH = 500

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._pending: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> None:
        self._pending.append(event)

    @_store_errors
    def for_secret(self, secret: str, limit: int = 50) -> list[AuditEvent]:
        """The latest ``limit`` events of a secret, newest first."""
        self.write_pending()
        stmt = (
            select(AUDIT).where(AUDIT.c.secret == secret).order_by(AUDIT.c.id.desc()).limit(limit)
        )
        return [_audit_from_row(m) for m in self._conn.execute(stmt).mappings()]

    @_store_errors
    def for_rotation(self, rotation_id: int) -> list[AuditEvent]:
        """Every event of a rotation, in the order recorded."""
        self.write_pending()
        stmt = select(AUDIT).where(AUDIT.c.rotation_id == rotation_id).order_by(AUDIT.c.id)
        return [_audit_from_row(m) for m in self._conn.execute(stmt).mappings()]

    def export(self, since: datetime | None = None) -> Iterator[AuditEvent]:
        """Every event at or after ``since``, oldest first (by time, then by record order).

        Read in batches by keyset so a large log never sits in memory at once.
        """
        self.write_pending_guarded()
        last: tuple[datetime, int] | None = None
        while True:
            stmt = select(AUDIT)
            if since is not None:
                stmt = stmt.where(AUDIT.c.at >= since)
            if last is not None:
                at, ident = last
                stmt = stmt.where((AUDIT.c.at > at) | ((AUDIT.c.at == at) & (AUDIT.c.id > ident)))
            stmt = stmt.order_by(AUDIT.c.at, AUDIT.c.id).limit(self.EXPORT_BATCH)
            try:
                batch = list(self._conn.execute(stmt).mappings())
            except (OperationalError, InterfaceError) as exc:
                raise unavailable(self._conn.engine.url, exc) from None
            for m in batch:
                yield _audit_from_row(m)
            if len(batch) < self.EXPORT_BATCH:
                return
            last = (batch[-1]["at"], int(batch[-1]["id"]))

    # --- unit-of-work hooks -----------------------------------------------------------

    def insert(self, events: Iterable[AuditEvent]) -> None:
        rows = [_audit_values(e) for e in events]
        if rows:
            self._conn.execute(insert(AUDIT), rows)

    def write_pending(self) -> None:
        pending, self._pending = self._pending, []
        self.insert(pending)

    @_store_errors
    def write_pending_guarded(self) -> None:
        self.write_pending()

    def forget_pending(self) -> None:
        self._pending.clear()


class SqlReminderLog:
    """ReminderLog (bot/reminders.py) on the ``reminders_sent`` table.

    Each call is its own short transaction: a notice is claimed (committed) before it is
    sent, and the unique key on (rotation, consumer, kind) lets exactly one replica win.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def sent(self, rotation_id: int) -> set[tuple[str, str]]:
        stmt = select(REMINDERS.c.consumer, REMINDERS.c.kind).where(
            REMINDERS.c.rotation_id == rotation_id
        )
        try:
            with self._engine.connect() as conn:
                return {(str(r.consumer), str(r.kind)) for r in conn.execute(stmt)}
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def claim(self, rotation_id: int, consumer: str, kind: str, at: datetime) -> bool:
        values = {"rotation_id": rotation_id, "consumer": consumer, "kind": kind, "sent_at": at}
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(REMINDERS).values(**values))
        except IntegrityError:
            return False  # already sent, by this replica or another one
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None
        return True

    def release(self, rotation_id: int, consumer: str, kind: str) -> None:
        stmt = delete(REMINDERS).where(
            REMINDERS.c.rotation_id == rotation_id,
            REMINDERS.c.consumer == consumer,
            REMINDERS.c.kind == kind,
        )
        try:
            with self._engine.begin() as conn:
                conn.execute(stmt)
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None


# --- scheduled rotations --------------------------------------------------------------


def _finding_dicts(findings: Iterable[ReviewFinding]) -> str:
    return json.dumps(
        [
            {"severity": f.severity, "subject": f.subject, "message": f.message, "code": f.code}
            for f in findings
        ]
    )


def _schedule_from_row(m: RowMapping) -> ScheduledRotation:
    row = ScheduledRotationRow(**m)
    findings = tuple(
        ReviewFinding(
            severity=str(f["severity"]),
            subject=str(f["subject"]),
            message=str(f["message"]),
            code=str(f.get("code", "")),
        )
        for f in json.loads(row.findings or "[]")
    )
    return ScheduledRotation(
        id=row.id,
        secret=row.secret,
        at=row.at,
        created_by=row.created_by,
        created_at=row.created_at,
        status=ScheduleStatus(row.status),
        review_channel=row.review_channel,
        review_ts=row.review_ts,
        reviewed_at=row.reviewed_at,
        findings=findings,
        rotation_id=row.rotation_id,
        outcome=row.outcome,
        changed_at=row.changed_at,
    )


def _schedule_values(item: ScheduledRotation) -> dict[str, Any]:
    return {
        "secret": item.secret,
        "at": item.at,
        "created_by": item.created_by,
        "created_at": item.created_at,
        "status": item.status.value,
        "review_channel": item.review_channel,
        "review_ts": item.review_ts,
        "reviewed_at": item.reviewed_at,
        "findings": _finding_dicts(item.findings),
        "rotation_id": item.rotation_id,
        "outcome": item.outcome,
        "changed_at": item.changed_at,
    }


_TRANSITION_FIELDS = frozenset({"findings", "reviewed_at", "rotation_id", "outcome"})


def _with_schedule(event: AuditEvent, ref: str) -> AuditEvent:
    return dataclasses.replace(event, detail={**event.detail, "schedule": ref})


class SqlScheduleRepository:
    """ScheduleRepository (bot/schedule_service.py): schedules, owners' confirmations and
    max_age bookkeeping. Each method is one short transaction; a state change and its audit
    event commit together, and every claim is a compare-and-set or a unique row, so two
    replicas (or a restart mid-step) never take the same step twice."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def _audit(self, conn: Connection, event: AuditEvent) -> None:
        conn.execute(insert(AUDIT).values(**_audit_values(event)))

    def add(
        self,
        item: ScheduledRotation,
        *,
        event: AuditEvent,
        replaces: ScheduledRotation | None,
        replaced_event: AuditEvent | None,
    ) -> ScheduledRotation:
        if item.id is not None:
            raise ValueError(f"{item.ref} is already stored")
        try:
            with self._begin() as conn:
                if replaces is not None and replaces.id is not None:
                    result = conn.execute(
                        update(SCHEDULES)
                        .where(
                            SCHEDULES.c.id == replaces.id,
                            SCHEDULES.c.status.in_(OPEN_STATUS_VALUES),
                        )
                        .values(
                            status=ScheduleStatus.CANCELLED.value,
                            outcome=replaced_event.reason if replaced_event else None,
                            changed_at=event.at,
                        )
                    )
                    if result.rowcount == 1 and replaced_event is not None:
                        self._audit(conn, replaced_event)
                item.changed_at = item.created_at
                new_id = _new_id(conn.execute(insert(SCHEDULES).values(**_schedule_values(item))))
                item.id = new_id
                self._audit(conn, _with_schedule(event, item.ref))
        except IntegrityError:
            item.id = None
            raise RotabotError(
                f"another schedule for {item.secret} was made at the same moment; "
                "look at it and try again if it is not what you want"
            ) from None
        return item

    def get(self, schedule_id: int) -> ScheduledRotation:
        with self._begin() as conn:
            m = conn.execute(select(SCHEDULES).where(SCHEDULES.c.id == schedule_id)).mappings()
            row = m.first()
        if row is None:
            raise ScheduleNotFound(f"SR-{schedule_id}")
        return _schedule_from_row(row)

    def open_for_secret(self, secret: str) -> ScheduledRotation | None:
        with self._begin() as conn:
            row = (
                conn.execute(
                    select(SCHEDULES).where(
                        SCHEDULES.c.secret == secret, SCHEDULES.c.status.in_(OPEN_STATUS_VALUES)
                    )
                )
                .mappings()
                .first()
            )
        return _schedule_from_row(row) if row is not None else None

    def list_open(self) -> list[ScheduledRotation]:
        stmt = (
            select(SCHEDULES)
            .where(SCHEDULES.c.status.in_(OPEN_STATUS_VALUES))
            .order_by(SCHEDULES.c.at, SCHEDULES.c.id)
        )
        with self._begin() as conn:
            return [_schedule_from_row(m) for m in conn.execute(stmt).mappings()]

    def transition(
        self,
        item: ScheduledRotation,
        expected: Iterable[ScheduleStatus],
        new: ScheduleStatus,
        *,
        event: AuditEvent,
    ) -> bool:
        assert item.id is not None
        # Only what a transition decides; the review message is set by set_review_message and
        # the rest never changes, so a copy loaded a while ago cannot undo another write.
        values = {k: v for k, v in _schedule_values(item).items() if k in _TRANSITION_FIELDS}
        values["status"] = new.value
        values["changed_at"] = event.at
        with self._begin() as conn:
            result = conn.execute(
                update(SCHEDULES)
                .where(
                    SCHEDULES.c.id == item.id,
                    SCHEDULES.c.status.in_(sorted(s.value for s in expected)),
                )
                .values(**values)
            )
            if result.rowcount != 1:
                return False  # another replica (or an earlier tick) got there first
            self._audit(conn, event)
        item.status, item.changed_at = new, event.at
        return True

    def list_starting(self) -> list[ScheduledRotation]:
        """Schedules claimed for starting whose rotation is not recorded (yet)."""
        stmt = (
            select(SCHEDULES)
            .where(
                SCHEDULES.c.status == ScheduleStatus.STARTED.value,
                SCHEDULES.c.rotation_id.is_(None),
            )
            .order_by(SCHEDULES.c.id)
        )
        with self._begin() as conn:
            return [_schedule_from_row(m) for m in conn.execute(stmt).mappings()]

    def set_review_message(self, schedule_id: int, channel: str, ts: str) -> None:
        with self._begin() as conn:
            conn.execute(
                update(SCHEDULES)
                .where(SCHEDULES.c.id == schedule_id)
                .values(review_channel=channel, review_ts=ts)
            )

    def record(self, event: AuditEvent) -> None:
        with self._begin() as conn:
            self._audit(conn, event)

    def confirm(self, schedule_id: int, confirmation: Confirmation, *, event: AuditEvent) -> bool:
        values = {
            "schedule_id": schedule_id,
            "owner": confirmation.owner,
            "confirmed_by": confirmation.confirmed_by,
            "confirmed_at": confirmation.confirmed_at,
        }
        try:
            with self._begin() as conn:
                conn.execute(insert(CONFIRMATIONS).values(**values))
                self._audit(conn, event)
        except IntegrityError:
            return False  # this owner had already confirmed
        return True

    def confirmations(self, schedule_id: int) -> list[Confirmation]:
        stmt = (
            select(CONFIRMATIONS)
            .where(CONFIRMATIONS.c.schedule_id == schedule_id)
            .order_by(CONFIRMATIONS.c.id)
        )
        with self._begin() as conn:
            rows = [ReadinessConfirmationRow(**m) for m in conn.execute(stmt).mappings()]
        return [
            Confirmation(owner=r.owner, confirmed_by=r.confirmed_by, confirmed_at=r.confirmed_at)
            for r in rows
        ]

    def first_seen(self, secret: str, now: datetime) -> datetime:
        stmt = select(SEEN.c.first_seen).where(SEEN.c.secret == secret)
        with self._begin() as conn:
            found = conn.execute(stmt).scalar_one_or_none()
        if found is not None:
            return cast(datetime, found)
        try:
            with self._begin() as conn:
                conn.execute(insert(SEEN).values(secret=secret, first_seen=now))
            return now
        except IntegrityError:
            with self._begin() as conn:  # another replica recorded it first: theirs stands
                return cast(datetime, conn.execute(stmt).scalar_one())

    def last_rotated(self, secret: str) -> datetime | None:
        stmt = select(func.max(ROTATIONS.c.finished_at)).where(
            ROTATIONS.c.secret == secret, ROTATIONS.c.phase == Phase.REVOKED.value
        )
        with self._begin() as conn:
            return cast("datetime | None", conn.execute(stmt).scalar_one_or_none())

    def claim_due_reminder(self, secret: str, due_since: datetime, slot: int, at: datetime) -> bool:
        values = {"secret": secret, "due_since": due_since, "slot": slot, "sent_at": at}
        try:
            with self._begin() as conn:
                conn.execute(insert(DUE_REMINDERS).values(**values))
        except IntegrityError:
            return False
        return True

    def release_due_reminder(self, secret: str, due_since: datetime, slot: int) -> None:
        with self._begin() as conn:
            conn.execute(
                delete(DUE_REMINDERS).where(
                    DUE_REMINDERS.c.secret == secret,
                    DUE_REMINDERS.c.due_since == due_since,
                    DUE_REMINDERS.c.slot == slot,
                )
            )
