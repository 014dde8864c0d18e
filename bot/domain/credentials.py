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
        newest: VersionInfo | None = None
        for v in live:
            if newest is None or newer(v, newest):
                newest = v
        return newest

    def info(self, version: str | None) -> VersionInfo | None:
        return next((v for v in self.versions if v.version == version), None)


def newer(info: VersionInfo, than: VersionInfo | None) -> bool:
    """Whether ``info`` was written after ``than`` (None: after nothing, so True). Two
    numbered versions (KV v2, the file store) compare by number; otherwise (AWS VersionIds,
    a vault-kv2 ``staged-N`` against a number) by creation time, and without times, not."""
    if than is None:
        return True
    if info.version.isdigit() and than.version.isdigit():
        return int(info.version) > int(than.version)
    if info.created_at is not None and than.created_at is not None:
        return info.created_at > than.created_at
    return False


class StoreError(Exception):
    """A store operation failed; the message names the store, path and cause (never a value)."""


class StoreConflict(StoreError):
    """Someone else wrote the secret meanwhile (check-and-set mismatch)."""


class VersionUnavailable(StoreError):
    """The version asked for was deleted or destroyed."""


class ReloadFailed(Exception):
    """A reload hook answered with an error or could not be reached (message: endpoint and
    status, never a value or a signing key)."""


def select_field(material: SecretMaterial, field: str | None, where: str) -> SecretMaterial:
    """The part of ``material`` a target holds: the one ``field`` named in the catalog, or
    all of it. A target that holds one value (a dotenv key) calls this and then needs exactly
    one field; StoreError names the fields (never the values) when that is ambiguous."""
    values = material.reveal()
    if field is None:
        return material
    if field not in values:
        raise StoreError(
            f"{where}: the credential has no field {field!r} (it has "
            f"{', '.join(sorted(values)) or 'none'}); fix `field:` of this target in the catalog"
        )
    return SecretMaterial({field: values[field]})


def single_value(material: SecretMaterial, where: str) -> str:
    """The one value of a one-field ``material`` (after select_field)."""
    values = material.reveal()
    if len(values) != 1:
        raise StoreError(
            f"{where} holds one value but the credential has fields "
            f"{', '.join(sorted(values))}: name one with `field:` on this target in the catalog"
        )
    return next(iter(values.values()))


@dataclass(frozen=True)
class Minted:
    """What an issuer produced. ``material`` is ``None`` when a person writes the value
    into the store themselves (the ``manual`` issuer)."""

    material: SecretMaterial | None
    key_id: str | None
    previous_key_id: str | None = None


@dataclass(frozen=True)
class UsageSeen:
    """One client a platform saw using a credential: what identifies it and when, never a
    value. ``consumer`` is the catalog consumer it maps to (the rotation service fills it in
    from the consumers' ``identity``); None means nothing in the catalog matches."""

    address: str | None = None  # client IP address (without the port)
    application_name: str | None = None  # PostgreSQL application_name, Redis CLIENT SETNAME
    vault_accessor: str | None = None  # the token's accessor in a Vault/OpenBao audit log
    user: str | None = None  # the login it used: ACL user, role, Vault display_name
    at: datetime | None = None  # when last seen; None: connected right now
    how: str = ""  # "connection", "session", "read of version 3"
    consumer: str | None = None


@dataclass(frozen=True)
class UsageEvidence:
    """What the platform says about use of one credential, in words for the gate, and who
    it saw (``seen``) where it can tell."""

    in_use: bool | None  # None: the platform cannot tell
    summary: str
    details: tuple[str, ...] = field(default_factory=tuple)
    seen: tuple[UsageSeen, ...] = ()


class IssuerError(Exception):
    """An issuer operation failed; the message names the issuer and cause (never a value)."""


def standby_of(
    current: SecretMaterial | None, pair: tuple[str, str], where: str
) -> tuple[str | None, str]:
    """(active, standby) of two alternating logins (roles, users): the active one is the
    current credential's ``username``; the new credential goes to the other. A first
    rotation (no current credential) starts with the first of the pair."""
    if current is None:
        return None, pair[0]
    username = current.reveal().get("username", "")
    if username not in pair:
        raise IssuerError(
            f"{where}: the current credential's username {username!r} is neither "
            f"{pair[0]} nor {pair[1]}; the store must hold one of them"
        )
    return username, pair[1] if username == pair[0] else pair[0]


def find_new_version(state: StoreState) -> str | None:
    """The version a person wrote for this rotation, or ``None`` while there is none yet.

    That is the newest live (neither destroyed nor deleted) version that is newer than the
    current one and carries no label: a version already labelled pending, previous or revoked
    belongs to a rotation, and one older than current is history, not a new credential.
    """
    floor = state.info(state.current)
    candidates = [
        v
        for v in state.versions
        if not v.destroyed and not v.deleted and not v.labels and newer(v, floor)
    ]
    newest = StoreState(versions=tuple(candidates)).newest()
    return newest.version if newest is not None else None
