"""What the rotation service needs from storage, as Protocols (storage/ implements them)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

from adapters.base import Issuer, Store
from bot.alert import Alert
from bot.audit import AuditEvent
from bot.rotation import Rotation


class RotationRepository(Protocol):
    def add(self, rotation: Rotation) -> Rotation:
        """Insert a new rotation; assigns ``rotation.id`` (so ``R-<id>`` is known at once)."""
        ...

    def get(self, rotation_id: int) -> Rotation:
        """Load one rotation with its consumers; raises RotationNotFound."""
        ...

    def active_for_secret(self, secret: str) -> Rotation | None:
        """The non-terminal rotation of a secret, if any (at most one may exist)."""
        ...

    def list_active(self) -> list[Rotation]: ...

    def history(self, secret: str, limit: int = 20) -> list[Rotation]:
        """Rotations of a secret, newest first, terminal ones included."""
        ...


class AlertRepository(Protocol):
    def add(self, alert: Alert) -> Alert: ...

    def get(self, alert_id: int) -> Alert: ...

    def save(self, alert: Alert) -> None: ...

    def latest_for(self, consumer: str, failure_class: str, since: datetime) -> Alert | None:
        """The most recent alert of this consumer and class seen since ``since`` (coalescing)."""
        ...

    def for_secret(self, secret: str, *, unresolved_only: bool = False,
                   since: datetime | None = None) -> list[Alert]: ...

    def recent(self, limit: int = 10) -> list[Alert]: ...


class AuditLog(Protocol):
    """Append-only: there is deliberately no update or delete."""

    def append(self, event: AuditEvent) -> None: ...

    def for_secret(self, secret: str, limit: int = 50) -> list[AuditEvent]: ...

    def for_rotation(self, rotation_id: int) -> list[AuditEvent]: ...

    def export(self, since: datetime | None = None) -> Iterator[AuditEvent]: ...


class UnitOfWork(Protocol):
    """One transaction. ``commit`` writes every loaded or added rotation whose state changed,
    its consumer steps and its pending audit events together, guarded by the rotation's
    revision; a concurrent writer makes it raise ChangedMeanwhile and nothing is written."""

    rotations: RotationRepository
    alerts: AlertRepository
    audit: AuditLog

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


def unresolved(alerts: Sequence[Alert]) -> list[Alert]:
    return [a for a in alerts if a.unresolved]


class BackendRegistry(Protocol):
    """The configured store and issuer of each secret (built from the catalog)."""

    def store_for(self, secret: str) -> Store: ...

    def issuer_for(self, secret: str) -> Issuer: ...


class OwnerDirectory(Protocol):
    """Who belongs to an owner user group (Slack usergroups, cached)."""

    def members(self, group_id: str) -> frozenset[str]: ...
