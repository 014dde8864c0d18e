"""SQL repository for rotations, their consumer steps and credential labels (unit of work)."""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Row, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from bot.domain.audit import AuditEvent
from bot.domain.errors import AlreadyActive, ChangedMeanwhile, RotationNotFound
from bot.domain.lifecycle import SWITCHED_PHASES, Phase, StepState
from bot.domain.rotation import ConsumerProgress, Rotation
from storage.audit import SqlAuditLog
from storage.sql_common import (
    ROTATIONS,
    STEPS,
    VERSIONS,
    SqlRepository,
    advisory_key,
    new_id,
    store_errors,
)
from storage.tables import TERMINAL_PHASE_VALUES, ConsumerStepRow, RotationRow

# The repository shares one Connection (one transaction), owned by SqlUnitOfWork, with the
# alert repository and the audit log. Rotations are tracked: every rotation loaded or added is
# remembered with the revision it was read at, and ``write_changes`` (called by the unit of
# work's commit) writes the changed ones with ``UPDATE ... WHERE id = :id AND revision =
# :loaded`` so a concurrent writer is detected.

# Rotation fields that are columns of their own (id, consumers, revision and events are not).
_ROTATION_SCALARS: tuple[str, ...] = tuple(
    f.name
    for f in fields(Rotation)
    if f.name
    not in (
        "id", "consumers", "revision", "events", "lanes", "overlap", "observe", "gated_lanes",
        "lane_writes", "cutover_window",
    )
)
_CONSUMER_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ConsumerProgress))


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
    if rotation.cutover and rotation.prepared_at is not None:
        # A hard cutover: the old value died at mint; the new one is current from the cutover
        # on (after a rollback, the re-issued one, which took its place).
        live = rotation.cutover_until is not None or phase is Phase.ROLLED_BACK
        labels: list[tuple[str, str | None, str]] = []
        if rotation.new_version is not None:
            labels.append((rotation.new_version, rotation.new_key_id,
                           "current" if live else "pending"))
        if rotation.old_version is not None and rotation.old_version != rotation.new_version:
            labels.append((rotation.old_version, rotation.old_key_id, "revoked"))
        return labels
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
        rotation.gated_lanes,
        # Text, not the dict itself: the domain adds to it in place.
        _lane_writes_json(rotation),
        rotation.overlap,
        rotation.observe,
        rotation.cutover_window,
        *(getattr(rotation, name) for name in _ROTATION_SCALARS),
    )
    return scalars, {name: _consumer_tuple(c) for name, c in rotation.consumers.items()}


class _StepsRead:
    """Steps as last read, per engine and rotation id, with the revision (and creation time)
    of the rotation they were read at: every write of a rotation's steps moves its revision in
    the same transaction (write_changes), so steps read at the revision a load finds are still
    its steps. The alert intake loads the same rotation for every batch; this spares it the
    steps query. Listener threads, timers and the intake load at once, hence the lock."""

    def __init__(self, kept: int = 64) -> None:
        self._kept = kept
        self._lock = threading.Lock()
        self._by_engine: WeakKeyDictionary[Engine, dict[int, tuple[Any, list[Row[Any]]]]] = (
            WeakKeyDictionary())

    @staticmethod
    def _at(row: RotationRow) -> tuple[int, Any]:
        return row.revision, row.created_at

    def get(self, engine: Engine, row: RotationRow) -> list[Row[Any]] | None:
        assert row.id is not None
        with self._lock:
            read = self._by_engine.get(engine, {}).get(row.id)
        return read[1] if read is not None and read[0] == self._at(row) else None

    def put(self, engine: Engine, row: RotationRow, steps: list[Row[Any]]) -> None:
        assert row.id is not None
        with self._lock:
            known = self._by_engine.setdefault(engine, {})
            known[row.id] = (self._at(row), steps)
            while len(known) > self._kept:
                known.pop(next(iter(known)))


_STEPS_READ = _StepsRead()


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
    values["gated_lanes"] = json.dumps(list(rotation.gated_lanes))
    values["lane_writes"] = _lane_writes_json(rotation)
    values["overlap_seconds"] = rotation.overlap.total_seconds()
    values["observe_seconds"] = rotation.observe.total_seconds()
    values["cutover_seconds"] = (
        rotation.cutover_window.total_seconds() if rotation.cutover_window is not None else None
    )
    return values


def _lane_writes_json(rotation: Rotation) -> str:
    return json.dumps({lane: list(t) for lane, t in rotation.lane_writes.items()}, sort_keys=True)


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
        gated_lanes=tuple(str(lane) for lane in json.loads(row.gated_lanes or "[]")),
        lane_writes={
            str(lane): tuple(map(str, targets))
            for lane, targets in json.loads(row.lane_writes or "{}").items()
        },
        consumers=consumers,
        overlap=timedelta(seconds=row.overlap_seconds),
        observe=timedelta(seconds=row.observe_seconds),
        cutover_window=(
            timedelta(seconds=row.cutover_seconds) if row.cutover_seconds is not None else None
        ),
        cutover_until=row.cutover_until,
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


class SqlRotationRepository(SqlRepository):
    """RotationRepository over one transaction; writes happen in ``write_changes``."""

    def __init__(self, conn: Connection, audit: SqlAuditLog) -> None:
        super().__init__(conn)
        self._audit = audit
        self._tracked: dict[int, _Tracked] = {}

    # --- RotationRepository -----------------------------------------------------------

    @store_errors
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
        rotation_id = new_id(result)
        rotation.id = rotation_id
        rotation.revision = 0
        if rotation.consumers:
            self._conn.execute(
                insert(STEPS), [_step_values(rotation_id, c) for c in rotation.consumers.values()]
            )
        self._sync_versions(rotation)
        self._tracked[rotation_id] = _Tracked(rotation, loaded_revision=0, snapshot=None)
        return rotation

    @store_errors
    def get(self, rotation_id: int) -> Rotation:
        tracked = self._tracked.get(rotation_id)
        if tracked is not None:
            return tracked.rotation
        rows = self._load(ROTATIONS.c.id == rotation_id)
        if not rows:
            raise RotationNotFound(f"R-{rotation_id}")
        return rows[0]

    @store_errors
    def hold_group(self, group: str) -> None:
        if self._conn.dialect.name != "postgresql":
            # SQLite has one writer at a time: a write that changes nothing takes the write
            # lock now instead of at the insert, so the second start waits here and then
            # reads what the first committed. (It orders every group's starts, not just one.)
            self._conn.execute(update(ROTATIONS).where(text("1 = 0")).values(id=ROTATIONS.c.id))
            return
        # A transaction-level advisory lock, released at commit or rollback; the key is a
        # stable 63-bit hash of the group's name (the same on every replica).
        key = advisory_key(f"rotabot-group:{group}")
        self._conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})

    @store_errors
    def active_for_secret(self, secret: str) -> Rotation | None:
        rows = self._load(
            ROTATIONS.c.secret == secret, ROTATIONS.c.phase.not_in(TERMINAL_PHASE_VALUES)
        )
        return rows[0] if rows else None

    @store_errors
    def list_active(self) -> list[Rotation]:
        return self._load(ROTATIONS.c.phase.not_in(TERMINAL_PHASE_VALUES))

    @store_errors
    def history(self, secret: str, limit: int = 20) -> list[Rotation]:
        return self._load(ROTATIONS.c.secret == secret, newest_first=True, limit=limit)

    # --- beyond the Protocol ----------------------------------------------------------

    @store_errors
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
        fresh = [r for r in rows if r.id is not None and r.id not in self._tracked]
        engine = self._conn.engine
        steps: dict[int | None, list[Row[Any]]] = {}
        unread: list[RotationRow] = []
        for r in fresh:
            read = _STEPS_READ.get(engine, r)
            if read is None:
                unread.append(r)
            else:
                steps[r.id] = read
        if unread:
            steps.update({r.id: [] for r in unread})
            # Plain rows, not ConsumerStepRow objects: SQLModel's instrumented constructor
            # cost ~0.1 ms a row, i.e. most of a click on a rotation with hundreds of consumers.
            for step in self._conn.execute(
                select(STEPS).where(STEPS.c.rotation_id.in_([r.id for r in unread]))
                .order_by(STEPS.c.id)
            ):
                steps[step.rotation_id].append(step)
            for r in unread:
                _STEPS_READ.put(engine, r, steps[r.id])
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
