"""In-memory fakes of the ports in bot/services/ports.py, behaving like the SQL unit of work
would. Each fake subclasses its Protocol explicitly, so mypy checks it against the port;
the unit of work (whose repositories are attributes here) is checked structurally at the end.

Rotations are deep-copied on load and on commit, so a caller that changes a loaded rotation
without committing changes nothing. Commit checks each changed rotation's revision against
the stored one and raises ChangedMeanwhile (writing nothing) on a mismatch, exactly the
guarantee the SQL repository gives.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from bot.domain.alert import Alert
from bot.domain.alert_intake import KeyState
from bot.domain.audit import AuditEvent
from bot.domain.errors import AlreadyActive, ChangedMeanwhile, RotabotError, RotationNotFound
from bot.domain.rotation import Rotation
from bot.services.ports import (
    AlertRepository,
    AuditLog,
    BackendRegistry,
    Issuer,
    LaneTarget,
    OwnerDirectory,
    RotationRepository,
    Store,
    UnitOfWork,
    UnitOfWorkFactory,
)


@dataclass
class FakeDatabase:
    """What the fake units of work share: the committed state."""

    rotations: dict[int, Rotation] = field(default_factory=dict)
    alerts: dict[int, Alert] = field(default_factory=dict)
    deliveries: dict[str, datetime] = field(default_factory=dict)  # key -> expires
    audit: list[AuditEvent] = field(default_factory=list)
    next_rotation_id: int = 1
    next_alert_id: int = 1
    commits: int = 0
    conflicts: int = 0
    # Run once each, just before the next commit checks revisions: a concurrent writer.
    before_commit: list[Callable[[], None]] = field(default_factory=list)

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)

    def events(self, rotation_id: int, action: str | None = None) -> list[AuditEvent]:
        return [e for e in self.audit
                if e.rotation_id == rotation_id and (action is None or e.action == action)]


def _state(rotation: Rotation) -> dict[str, Any]:
    """Everything stored about a rotation except what storage owns (revision, events)."""
    values = {f.name: getattr(rotation, f.name) for f in dataclasses.fields(rotation)
              if f.name not in ("revision", "events")}
    return copy.deepcopy(values)


@dataclass
class _Tracked:
    rotation: Rotation
    loaded_revision: int | None  # None: added in this unit of work
    snapshot: dict[str, Any] | None


def _stored_copy(rotation: Rotation) -> Rotation:
    stored = copy.deepcopy(rotation)
    stored.events = []
    return stored


class FakeRotationRepository(RotationRepository):
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.tracked: dict[int, _Tracked] = {}
        self.added: list[Rotation] = []

    def add(self, rotation: Rotation) -> Rotation:
        if rotation.id is not None:
            raise ValueError(f"{rotation.ref} is already stored")
        if not rotation.terminal:
            existing = self.active_for_secret(rotation.secret)
            if existing is not None:
                raise AlreadyActive(rotation.secret, existing.ref)
        # The id is taken at once, as a database sequence would (not returned on rollback).
        rotation.id = self._db.next_rotation_id
        self._db.next_rotation_id += 1
        rotation.revision = 0
        self.tracked[rotation.id] = _Tracked(rotation, loaded_revision=None, snapshot=None)
        return rotation

    def get(self, rotation_id: int) -> Rotation:
        tracked = self.tracked.get(rotation_id)
        if tracked is not None:
            return tracked.rotation
        stored = self._db.rotations.get(rotation_id)
        if stored is None:
            raise RotationNotFound(f"R-{rotation_id}")
        rotation = copy.deepcopy(stored)
        self.tracked[rotation_id] = _Tracked(rotation, loaded_revision=stored.revision,
                                             snapshot=_state(rotation))
        return rotation

    def active_for_secret(self, secret: str) -> Rotation | None:
        found = self._select(lambda r: r.secret == secret and not r.terminal)
        return found[0] if found else None

    def list_active(self) -> list[Rotation]:
        return self._select(lambda r: not r.terminal)

    def hold_group(self, group: str) -> None:
        pass  # one process, one thread per test: nothing to wait for

    def history(self, secret: str, limit: int = 20) -> list[Rotation]:
        return list(reversed(self._select(lambda r: r.secret == secret)))[:limit]

    def _select(self, keep: Callable[[Rotation], bool]) -> list[Rotation]:
        return [self.get(i) for i, r in sorted(self._db.rotations.items()) if keep(r)]

    def changed(self) -> list[_Tracked]:
        return [t for t in self.tracked.values()
                if t.loaded_revision is None or t.rotation.events
                or _state(t.rotation) != t.snapshot]


class FakeAlertRepository(AlertRepository):
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.pending: dict[int, Alert] = {}

    def add(self, alert: Alert) -> Alert:
        alert.id = self._db.next_alert_id
        self._db.next_alert_id += 1
        self.pending[alert.id] = alert
        return alert

    def get(self, alert_id: int) -> Alert:
        if alert_id in self.pending:
            return self.pending[alert_id]
        try:
            return copy.deepcopy(self._db.alerts[alert_id])
        except KeyError:
            raise RotabotError(f"no alert A-{alert_id}") from None

    def save(self, alert: Alert) -> None:
        assert alert.id is not None
        # As the SQL one: count and last_seen move only through add_count.
        current = self.get(alert.id)
        alert.count, alert.last_seen = current.count, current.last_seen
        self.pending[alert.id] = alert

    def latest_for(self, consumer: str, failure_class: str, since: datetime) -> Alert | None:
        found = [a for a in self._all() if a.consumer == consumer
                 and a.failure_class == failure_class and a.last_seen >= since]
        return max(found, key=lambda a: a.last_seen) if found else None

    def for_secret(self, secret: str, *, unresolved_only: bool = False,
                   since: datetime | None = None) -> list[Alert]:
        return [a for a in self._all() if a.secret == secret
                and (not unresolved_only or a.unresolved)
                and (since is None or a.last_seen >= since)]

    def recent(self, limit: int = 10) -> list[Alert]:
        return sorted(self._all(), key=lambda a: a.last_seen, reverse=True)[:limit]

    def latest_for_many(
        self, keys: Sequence[tuple[str, str]], since: datetime
    ) -> dict[tuple[str, str], Alert]:
        found = {k: self.latest_for(k[0], k[1], since) for k in keys}
        return {k: a for k, a in found.items() if a is not None}

    def add_counts(self, counts: Mapping[int, int], seen: datetime) -> dict[int, Alert]:
        return {i: self.add_count(i, n, seen) for i, n in counts.items()}

    def lock_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        pass  # one process, one transaction at a time

    def add_count(self, alert_id: int, n: int, seen: datetime) -> Alert:
        alert = self.get(alert_id)
        alert.count += n
        alert.last_seen = max(alert.last_seen, seen)
        self.pending[alert_id] = alert
        return alert

    def take_deliveries(
        self, keys: Sequence[str], now: datetime, ttl: timedelta
    ) -> dict[str, KeyState]:
        # Kept at once (not at commit): the fakes serve tests of one transaction at a time.
        out: dict[str, KeyState] = {}
        for key in keys:
            expires = self._db.deliveries.get(key)
            if expires is not None and expires > now:
                out[key] = KeyState.DUPLICATE
            else:
                self._db.deliveries[key] = now + ttl
                out[key] = KeyState.TAKEN
        return out

    def owe_posts(self, alert_ids: Sequence[int], now: datetime) -> None:
        pass  # the fakes post without claims

    def _all(self) -> list[Alert]:
        merged = {**{i: copy.deepcopy(a) for i, a in self._db.alerts.items()}, **self.pending}
        return [merged[i] for i in sorted(merged)]


class FakeAuditLog(AuditLog):
    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self.pending: list[AuditEvent] = []

    def append(self, event: AuditEvent) -> None:
        self.pending.append(event)

    def for_secret(self, secret: str, limit: int = 50) -> list[AuditEvent]:
        return [e for e in reversed(self._db.audit) if e.secret == secret][:limit]

    def for_rotation(self, rotation_id: int) -> list[AuditEvent]:
        return [e for e in self._db.audit if e.rotation_id == rotation_id]

    def export(self, since: datetime | None = None) -> Iterator[AuditEvent]:
        return iter([e for e in self._db.audit if since is None or e.at >= since])


class FakeUnitOfWork:
    """One transaction over a FakeDatabase: all of it is written at commit, or none."""

    # Declared as the Protocol types (attributes are invariant); the fakes are kept below.
    rotations: RotationRepository
    alerts: AlertRepository
    audit: AuditLog

    def __init__(self, db: FakeDatabase) -> None:
        self._db = db
        self._open = False

    def __enter__(self) -> Self:
        self._open = True
        self._rotations = FakeRotationRepository(self._db)
        self._alerts = FakeAlertRepository(self._db)
        self._audit = FakeAuditLog(self._db)
        self.rotations, self.alerts, self.audit = self._rotations, self._alerts, self._audit
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.rollback()
        self._open = False

    def commit(self) -> None:
        if not self._open:
            raise RuntimeError("use the unit of work inside a `with` block")
        while self._db.before_commit:
            self._db.before_commit.pop(0)()
        changed = self._rotations.changed()
        for t in changed:
            stored = self._db.rotations.get(t.rotation.id or -1)
            if t.loaded_revision is not None and (
                stored is None or stored.revision != t.loaded_revision
            ):
                self._db.conflicts += 1
                self.rollback()
                raise ChangedMeanwhile(t.rotation.ref)
        for t in changed:
            rotation = t.rotation
            assert rotation.id is not None
            rotation.revision = 0 if t.loaded_revision is None else t.loaded_revision + 1
            for e in rotation.events:
                self._db.audit.append(dataclasses.replace(e, rotation_id=rotation.id)
                                      if e.rotation_id is None else e)
            rotation.events.clear()
            self._db.rotations[rotation.id] = _stored_copy(rotation)
            t.loaded_revision, t.snapshot = rotation.revision, _state(rotation)
        self._db.audit.extend(self._audit.pending)
        for alert_id, alert in self._alerts.pending.items():
            self._db.alerts[alert_id] = copy.deepcopy(alert)
        self._audit.pending.clear()
        self._alerts.pending.clear()
        self._db.commits += 1

    def rollback(self) -> None:
        if not self._open:
            return
        self._rotations.tracked.clear()
        self._audit.pending.clear()
        self._alerts.pending.clear()


class FakeDirectory(OwnerDirectory):
    """Slack user groups and their members."""

    def __init__(self, groups: Mapping[str, set[str] | frozenset[str]] | None = None) -> None:
        self.groups = {k: frozenset(v) for k, v in (groups or {}).items()}

    def members(self, group_id: str) -> frozenset[str]:
        return self.groups.get(group_id, frozenset())


class FakeBackends(BackendRegistry):
    """A BackendRegistry handing out fixed store and issuer objects for every secret."""

    def __init__(self, store: Store, issuer: Issuer) -> None:
        self.store = store
        self.issuer = issuer

    def store_for(self, secret: str) -> Store:
        return self.store

    def issuer_for(self, secret: str) -> Issuer:
        return self.issuer

    def targets_for(self, secret: str) -> dict[str, list[LaneTarget]]:
        return self.targets

    targets: dict[str, list[LaneTarget]] = {}


if TYPE_CHECKING:
    # Structural checks: a FakeUnitOfWork is a UnitOfWork, and a bound ``uow`` is what the
    # use cases are given as their unit-of-work factory.
    _uow: UnitOfWork = FakeUnitOfWork(FakeDatabase())
    _factory: UnitOfWorkFactory = FakeDatabase().uow
