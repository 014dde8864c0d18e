"""The two ports every credential back end implements: a Store and an Issuer.

The rotation service calls only these Protocols. Implementations live one per module
(``adapters/file_store.py``, ``adapters/vault_store.py``, ``adapters/redis_acl.py``, ...).
Everything that crosses these ports is a reference (path, version, key id) except
``SecretMaterial``, which is held in memory and never persisted or printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from bot.secret_material import SecretMaterial


class VersionLabel(StrEnum):
    PENDING = "pending"
    CURRENT = "current"
    PREVIOUS = "previous"
    REVOKED = "revoked"


@dataclass(frozen=True)
class VersionInfo:
    """One stored version of a secret: a reference, never the value."""

    version: str
    labels: frozenset[VersionLabel] = frozenset()
    created_at: datetime | None = None
    destroyed: bool = False
    deleted: bool = False


@dataclass(frozen=True)
class StoreState:
    """What the store holds for one path, by label."""

    versions: tuple[VersionInfo, ...] = ()
    current: str | None = None
    pending: str | None = None
    previous: str | None = None

    def newest(self) -> VersionInfo | None:
        live = [v for v in self.versions if not v.destroyed and not v.deleted]
        return max(live, key=lambda v: int(v.version)) if live else None


class StoreError(Exception):
    """A store operation failed; the message names the store, path and cause (never a value)."""


class StoreConflict(StoreError):
    """Someone else wrote the secret meanwhile (check-and-set mismatch)."""


class VersionUnavailable(StoreError):
    """The version asked for was deleted or destroyed."""


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

    def promote(self, path: str, version: str) -> None:
        """pending -> current; the old current becomes previous (still valid)."""
        ...

    def restore_previous(self, path: str) -> str:
        """Rollback: make the previous version's data current again; returns the new current
        version. Refuses a deleted or destroyed previous version (VersionUnavailable)."""
        ...

    def retire(self, path: str, version: str) -> None:
        """After revocation: destroy the old version and label it revoked."""
        ...


@dataclass(frozen=True)
class Minted:
    """What an issuer produced. ``material`` is ``None`` when a person writes the value
    into the store themselves (the ``manual`` issuer)."""

    material: SecretMaterial | None
    key_id: str | None
    previous_key_id: str | None = None


@dataclass(frozen=True)
class UsageEvidence:
    """What the platform says about use of one credential, in words for the gate."""

    in_use: bool | None  # None: the platform cannot tell
    summary: str
    details: tuple[str, ...] = field(default_factory=tuple)


class IssuerError(Exception):
    """An issuer operation failed; the message names the issuer and cause (never a value)."""


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
