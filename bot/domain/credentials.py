"""What crosses the Store and Issuer ports: version references, minted credentials, usage
evidence and the errors back ends raise.

The Protocols themselves are in ``bot/services/ports.py``. Everything here is a reference
(path, version, key id) except ``SecretMaterial``, which is held in memory and never persisted
or printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from bot.domain.secret_material import SecretMaterial


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


def find_new_version(state: StoreState) -> str | None:
    """The version a person wrote for this rotation, or ``None`` while there is none yet.

    That is the newest live (neither destroyed nor deleted) version that is newer than the
    current one and carries no label: a version already labelled pending, previous or revoked
    belongs to a rotation, and one older than current is history, not a new credential.
    """
    floor = int(state.current) if state.current is not None else 0
    candidates = [
        int(v.version)
        for v in state.versions
        if not v.destroyed and not v.deleted and not v.labels and int(v.version) > floor
    ]
    return str(max(candidates)) if candidates else None
