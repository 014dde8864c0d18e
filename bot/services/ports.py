"""Every Protocol the use cases need: storage (unit of work, repositories), credential back ends
(Store, Issuer), the catalog's back-end registry and the owner directory.

Adapters and storage implement these structurally; they import the value types of
``bot.domain`` only, never this module."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from bot.domain.alert import Alert
from bot.domain.alert_intake import KeyState
from bot.domain.audit import AuditEvent
from bot.domain.credentials import Minted, StoreState, UsageEvidence
from bot.domain.evidence import EvidenceReport
from bot.domain.replicas import ReplicaCatalog
from bot.domain.rotation import Rotation
from bot.domain.secret_material import SecretMaterial


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

    def hold_group(self, group: str) -> None:
        """Until this transaction ends, make any other transaction holding ``group`` wait:
        the check that no partner of an exclusive group rotates, and the insert, then happen
        one start at a time across replicas."""
        ...

    def history(self, secret: str, limit: int = 20) -> list[Rotation]:
        """Rotations of a secret, newest first, terminal ones included."""
        ...


class AlertRepository(Protocol):
    def add(self, alert: Alert) -> Alert: ...

    def get(self, alert_id: int) -> Alert: ...

    def save(self, alert: Alert) -> None:
        """Write the alert's fields except ``count`` and ``last_seen`` (see add_count)."""
        ...

    def latest_for(self, consumer: str, failure_class: str, since: datetime) -> Alert | None:
        """The most recent alert of this consumer and class seen since ``since`` (coalescing)."""
        ...

    def latest_for_many(
        self, keys: Sequence[tuple[str, str]], since: datetime
    ) -> dict[tuple[str, str], Alert]:
        """``latest_for`` of many (consumer, failure class) pairs at once (a batch)."""
        ...

    def lock_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        """Hold these (consumer, failure class) pairs until the transaction ends: another
        replica's batch for the same failure waits, then coalesces into this one's alert."""
        ...

    def for_secret(self, secret: str, *, unresolved_only: bool = False,
                   since: datetime | None = None) -> list[Alert]: ...

    def recent(self, limit: int = 10) -> list[Alert]: ...

    def add_count(self, alert_id: int, n: int, seen: datetime) -> Alert:
        """Add ``n`` reports to the stored count (atomic across replicas), last seen no
        earlier than ``seen``; returns the alert as it is now."""
        ...

    def add_counts(self, counts: Mapping[int, int], seen: datetime) -> dict[int, Alert]:
        """add_count of several alerts (alert id -> reports) in one statement."""
        ...

    def take_deliveries(
        self, keys: Sequence[str], now: datetime, ttl: timedelta
    ) -> dict[str, KeyState]:
        """Hold each de-duplication key as finished for ``ttl``, in this transaction (see
        KeyState): committed with the counts they stand for, or not at all."""
        ...

    def owe_posts(self, alert_ids: Sequence[int], now: datetime) -> None:
        """Record, in this transaction, that these new alerts' Slack posts are owed (see
        AlertPostClaims.owed): committed with the alerts, so a crash cannot lose them."""
        ...


class AlertPostClaims(Protocol):
    """Once-only incident posts of new alerts across replicas and crashes: claim, post, done
    (or release when the post failed); a claim whose holder died lapses after a lease."""

    def claim(self, alert_id: int) -> bool: ...

    def done(self, alert_id: int) -> None: ...

    def release(self, alert_id: int) -> None: ...

    def owed(self) -> list[int]:
        """Alerts whose post was owed and never made (or whose holder died)."""
        ...


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

    # Read-only in the Protocol, so an implementation may declare its concrete repositories.
    @property
    def rotations(self) -> RotationRepository: ...

    @property
    def alerts(self) -> AlertRepository: ...

    @property
    def audit(self) -> AuditLog: ...

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

    def targets_for(self, secret: str) -> Mapping[str, Sequence[LaneTarget]]:
        """Lane -> where that lane's consumers read the credential ({} when none are set)."""
        ...


class ReplicaCatalogs(Protocol):
    """Which catalog (sha256) each replica runs, in the database they share."""

    def record(self, replica_id: str, catalog_sha256: str, loaded_at: datetime) -> None: ...

    def seen(self, replica_id: str, at: datetime) -> None: ...

    def newest(self) -> ReplicaCatalog | None:
        """The catalog loaded last by any replica."""
        ...


class WorkClaims(Protocol):
    """Work one process does at a time across replicas (a claim lapses after a lease, so a
    holder that died does not block it for ever)."""

    def claim(self, rotation_id: int, kind: str) -> bool:
        """True when this caller may do the work now."""
        ...

    def release(self, rotation_id: int, kind: str) -> None: ...


class WorkLocks(Protocol):
    """Work one process does at a time for one rotation, held only while it runs: a holder
    that dies lets go at once (storage/work_locks.py), so a person pressing the button
    again after a crash is not refused for a lease's length."""

    def hold(self, rotation_id: int, kind: str) -> AbstractContextManager[bool]:
        """True inside the block when this caller holds the lock; False when another process
        holds it now. Never waits."""
        ...


class EvidenceLog(Protocol):
    """Consumers' evidence reports, kept in the database every replica shares
    (storage/evidence.py)."""

    def add(self, report: EvidenceReport, received_at: datetime) -> EvidenceReport:
        """Keep one report; returns it with its id."""
        ...

    def for_rotation(
        self, rotation_id: int, consumer: str | None = None
    ) -> list[EvidenceReport]: ...

    def last_received(self, secret: str, consumer: str) -> datetime | None: ...


class OwnerDirectory(Protocol):
    """Who belongs to an owner user group (Slack usergroups, cached)."""

    def members(self, group_id: str) -> frozenset[str]: ...


@runtime_checkable
class Store(Protocol):
    """Where consumers read the secret. Versions are strings (KV v2 numbers, file counters)."""

    kind: str

    def describe(self, path: str) -> StoreState:
        """Versions and labels at ``path`` (references only)."""
        ...

    def read(self, path: str, version: str | None = None) -> SecretMaterial:
        """The material of one version (default: current), for handing to an issuer in memory."""
        ...

    def write_pending(
        self, path: str, material: SecretMaterial, *, expected_current: str | None
    ) -> str:
        """Write a new version labelled pending beside the current one (check-and-set on
        ``expected_current``; ``None`` means the path must be empty). Returns the version."""
        ...

    def mark_pending(self, path: str, version: str) -> None:
        """Label a version someone else wrote (the ``manual`` issuer) as pending."""
        ...

    def promote(self, path: str, version: str) -> str:
        """pending -> current; the old current becomes previous (still valid). Returns the
        version now current: the same reference for a store that keeps the pending version in
        place, a new one for a store that stages it elsewhere (vault-kv2 copies the staged
        value onto the secret's path only here, so a normal read sees it from now on)."""
        ...

    def restore_previous(self, path: str) -> str:
        """Rollback: make the previous version's data current again; returns the new current
        version. Refuses a deleted or destroyed previous version (VersionUnavailable)."""
        ...

    def retire(self, path: str, version: str) -> None:
        """After revocation: destroy the old version and label it revoked."""
        ...


@dataclass(frozen=True)
class LaneTarget:
    """One catalog target, built: its catalog label, the adapter, and an optional reload hook."""

    label: str
    target: Target
    hook: ReloadHook | None = None


@runtime_checkable
class Target(Protocol):
    """One place a lane's consumers read the credential from (a distribution target): a
    path on another Vault/OpenBao mount or server, a key in a dotenv file, a secret in AWS
    Secrets Manager. rotabot writes the new credential there when the lane's turn opens and
    the previous one back on rollback. A target keeps no labels: what is written is what its
    consumers read."""

    kind: str

    @property
    def where(self) -> str:
        """Where it is, in words for Slack and logs (kind and location, never a value)."""
        ...

    def write(self, material: SecretMaterial) -> str:
        """Write ``material`` (or its ``field``) so consumers read it from now on. Returns the
        version the target now holds ("" for a target without versions, like a dotenv file).
        Raises StoreError (a subclass naming the cause) and changes nothing on failure."""
        ...

    def read(self) -> SecretMaterial | None:
        """What consumers read there now (None: nothing written yet). For checks and tests."""
        ...


@runtime_checkable
class ReloadHook(Protocol):
    """A kick for consumers that need one after a target write (a deploy or restart call)."""

    @property
    def where(self) -> str:
        """The endpoint, in words (no credential, no query string)."""
        ...

    def call(self, event: Mapping[str, str]) -> str:
        """Call the hook with ``event`` (secret, rotation, lane, target; never a value).
        Returns a one-line result for the thread; raises ReloadFailed with the reason."""
        ...


# Issuer kinds whose new credential a person creates and writes into the store (the provider
# has no API to create one); rotabot notices the new version instead of minting.
PERSON_WRITES = frozenset({"manual", "anthropic"})


@runtime_checkable
class IdentifiesKeys(Protocol):
    """An issuer that can tell which provider key a stored value is (by its partial hint):
    the key ids of a person-written credential, so the old one can be revoked by the API."""

    def identify(self, material: SecretMaterial) -> str | None:
        """The provider's id of the key whose value this is; None when no key matches."""
        ...


@runtime_checkable
class TrimsAfterRevoke(Protocol):
    """An issuer whose current credential still carries the old one during the overlap (a
    webhook secret list, newest first): after revocation the store's current version and
    the targets get the trimmed credential."""

    def after_revoke(self, current: SecretMaterial) -> SecretMaterial | None:
        """``current`` without the revoked credential; None when there is nothing to drop."""
        ...


@runtime_checkable
class ReportsReads(Protocol):
    """A store that can tell who read an old version (a Vault/OpenBao file audit device):
    usage evidence beside the issuer's."""

    def reads_of(self, path: str, version: str, since: datetime) -> UsageEvidence:
        """Reads of ``path`` that got ``version`` since ``since``; ``in_use=None``, saying
        why, when the store keeps no record of reads."""
        ...


@runtime_checkable
class Issuer(Protocol):
    """What mints and revokes the credential."""

    kind: str

    @property
    def keeps_both_valid(self) -> bool:
        """True when old and new credentials are valid at once (no hard cutover)."""
        ...

    def mint(self, current: SecretMaterial | None) -> Minted:
        """Create a new credential beside ``current`` (which stays valid)."""
        ...

    def revoke(self, key_id: str | None) -> None:
        """Invalidate the credential ``key_id``. Idempotent."""
        ...

    def usage(self, key_id: str | None) -> UsageEvidence:
        """Evidence of use of credential ``key_id`` (``in_use=None`` when unknowable)."""
        ...
