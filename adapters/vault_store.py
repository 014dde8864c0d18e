"""The ``vault-kv2`` store: HashiCorp Vault or OpenBao KV v2 through hvac (blocking calls)."""

# How the Store contract maps onto KV v2
# --------------------------------------
# * The pending credential is staged beside the secret, not on it: write_pending writes it to
#   ``<pending_prefix>/<path>`` on the same mount (default ``rotabot-pending/``) and returns
#   ``staged-N`` (N: the version at the staging path). A normal read of the secret's path
#   (Vault Agent, External Secrets Operator, a pod that restarts) keeps returning the current
#   credential until the switch; only rotabot, and the lane targets it writes on each lane's
#   turn, see the new one. A policy can keep the staging prefix to rotabot alone.
# * promote (the switch) copies the staged value onto the secret's path as a new KV version
#   with check-and-set (``cas`` = KV's current version), so a write by anyone else since the
#   rotation began is a StoreConflict, never a silent overwrite; it returns that version
#   number, which is what rollback and revocation use from then on. ``rotabot-promoted``
#   remembers which staged version it came from, so a retried switch is a no-op; the staged
#   copy is destroyed afterwards.
# * Pending versions written in place by rotabot before staging existed (a plain version
#   number labelled pending; rotations in flight across the upgrade) are still promoted,
#   cancelled and revoked in place.
# * Labels live in the secret's ``custom_metadata`` under ``rotabot-pending``,
#   ``rotabot-current``, ``rotabot-previous`` (one version number each) and ``rotabot-revoked``
#   (comma list, newest first). Other custom_metadata keys are preserved: a metadata write
#   replaces the whole map, so every label change is read-merge-write.
# * Labels are references for rotabot and for consumers that pin a version. A consumer that
#   reads without a version gets the newest KV version, i.e. a pending version as soon as it
#   is written; that is acceptable only because issuers keep old and new valid (overlap).
# * A secret that has versions but no rotabot labels is adopted: its newest live version is
#   treated as current (mark_pending adopts the newest live version below the one it marks).
# * restore_previous works like ``vault kv rollback``: the previous version's data is written as
#   a new version with cas = the current KV version; deleted or destroyed versions are refused.
# * retire destroys the version (data gone for good, metadata kept) and labels it revoked.
#
# OpenBao vs HashiCorp Vault (seen against OpenBao 2.7 with hvac 2.4):
# * OpenBao has check-and-set for metadata writes (``metadata_cas`` against
#   ``current_metadata_version``); Vault has neither field. When the metadata read shows
#   ``current_metadata_version`` we send ``metadata_cas``, so two bots racing on the labels get
#   a StoreConflict on OpenBao; on Vault the last label write wins (rotabot's own database lock
#   is what serialises rotations there).
# * ``bao server -dev`` writes the root token to ``~/.vault-token`` (same file name as Vault)
#   unless given ``-dev-no-store-token``; hvac silently falls back to that file when no token
#   is passed, so make_vault_client always passes the token explicitly.
# * Errors look the same: sealed is 503 "Vault is sealed", permission denied is 403, a cas
#   mismatch is 400 "check-and-set parameter did not match the current version".
#
# hvac exceptions carry the response body (``text``/``json``); none of it is forwarded: every
# message below is built from the URL, the path, the version and the HTTP status only, and
# each StoreError is raised after its except block, so the hvac exception is not even kept as
# ``__context__`` (a logged traceback cannot print it).

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import hvac
import hvac.exceptions
import hvac.utils
import requests

from adapters.vault_audit import AuditLog
from adapters.vault_audit import parse_time as _parse_time
from bot.domain.credentials import (
    StoreConflict,
    StoreError,
    StoreState,
    UsageEvidence,
    VersionInfo,
    VersionLabel,
    VersionUnavailable,
    select_field,
)
from bot.domain.secret_material import SecretMaterial

log = logging.getLogger("rotabot.vault")

KIND = "vault-kv2"
LABEL_PREFIX = "rotabot-"
_KEY_PENDING = LABEL_PREFIX + VersionLabel.PENDING.value
_KEY_CURRENT = LABEL_PREFIX + VersionLabel.CURRENT.value
_KEY_PREVIOUS = LABEL_PREFIX + VersionLabel.PREVIOUS.value
_KEY_REVOKED = LABEL_PREFIX + VersionLabel.REVOKED.value
_KEY_PROMOTED = LABEL_PREFIX + "promoted"
_LABEL_KEYS = (_KEY_PENDING, _KEY_CURRENT, _KEY_PREVIOUS, _KEY_REVOKED, _KEY_PROMOTED)
DEFAULT_PENDING_PREFIX = "rotabot-pending"
STAGED = "staged-"
_REFERENCE = re.compile(r"^(?:[1-9][0-9]*|staged-[1-9][0-9]*)$")
# KV v2 caps a custom_metadata value at 512 bytes; the revoked list drops its oldest entries
# to fit (destroyed versions still show as destroyed in the metadata).
_MAX_METADATA_VALUE = 512
_CAS_MISMATCH = "check-and-set parameter did not match"
_METADATA_CAS_MISMATCH = "metadata check-and-set parameter does not match"


class StoreSealed(StoreError):
    """The Vault/OpenBao server is sealed (HTTP 503)."""


class StorePermissionDenied(StoreError):
    """The bot's token may not do this (HTTP 403)."""


class StoreUnreachable(StoreError):
    """The store could not be reached (connection refused, DNS, timeout)."""


def make_vault_client(
    url: str,
    *,
    env: Mapping[str, str],
    token_env: str = "VAULT_TOKEN",  # noqa: S107 - the name of a variable, not a token
    approle_role_id_env: str | None = None,
    approle_secret_id_env: str | None = None,
    namespace: str | None = None,
    timeout: float = 10,
    approle_mount: str = "approle",
) -> hvac.Client:
    """An hvac client logged in with credentials read from ``env`` (the process environment,
    as bot/runtime/settings.py captured it).

    The catalog names only the environment variables. With both AppRole variable names given,
    the client logs in with ``auth.approle.login`` (a network call); otherwise it uses the
    token in ``token_env``. Missing variables raise StoreError naming the variable.
    """
    if (approle_role_id_env is None) != (approle_secret_id_env is None):
        raise StoreError(
            f"AppRole login for {url} needs both a role_id and a secret_id environment "
            "variable name; set approle_role_id_env and approle_secret_id_env together"
        )
    if approle_role_id_env is None or approle_secret_id_env is None:
        token = _env(env, token_env, url, "the Vault/OpenBao token")
        return hvac.Client(url=url, token=token, namespace=namespace, timeout=timeout)

    role_id = _env(env, approle_role_id_env, url, "the AppRole role_id")
    secret_id = _env(env, approle_secret_id_env, url, "the AppRole secret_id")
    # token="" keeps hvac from picking up VAULT_TOKEN or ~/.vault-token on its own.
    client = hvac.Client(url=url, token="", namespace=namespace, timeout=timeout)
    failure: StoreError | None = None
    try:
        client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=approle_mount)
    except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden):
        failure = StorePermissionDenied(
            f"AppRole login at {url} (auth/{approle_mount}) was refused: check the role_id in "
            f"${approle_role_id_env} and that the secret_id in ${approle_secret_id_env} is "
            "valid, not expired and not used up"
        )
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
        failure = _transport_error(exc, url, f"log in with AppRole at auth/{approle_mount}")
    if failure is not None:
        # Raised outside the except block: the hvac exception (with the response body) must
        # not ride along as __context__.
        raise failure
    return client


def _env(env: Mapping[str, str], name: str, url: str, what: str) -> str:
    value = env.get(name, "")
    if not value:
        raise StoreError(
            f"environment variable {name} is not set: export {what} for {url} there "
            "(rotabot reads store credentials from the environment, never from the catalog)"
        )
    return value


def _errors_text(exc: hvac.exceptions.VaultError) -> str:
    return " ".join(map(str, exc.errors or ()))


def _transport_error(exc: Exception, url: str, action: str) -> StoreError:
    """Map errors common to every call (unreachable, sealed, unexpected status) to a message."""
    if isinstance(exc, requests.exceptions.Timeout):
        return StoreUnreachable(
            f"cannot reach {url}: no answer in time while trying to {action}; check that "
            "OpenBao/Vault is up and reachable from the bot, then resume the rotation"
        )
    if isinstance(exc, requests.exceptions.ConnectionError):
        return StoreUnreachable(
            f"cannot reach {url} while trying to {action}: connection failed; check the store "
            "URL in the catalog and that OpenBao/Vault is running, then resume the rotation"
        )
    if isinstance(exc, requests.exceptions.RequestException):
        return StoreUnreachable(
            f"cannot reach {url} while trying to {action} ({type(exc).__name__}); "
            "check the store URL and network, then resume the rotation"
        )
    if isinstance(exc, hvac.exceptions.VaultDown):
        if "sealed" in _errors_text(exc).lower():
            return StoreSealed(
                f"OpenBao/Vault at {url} is sealed: unseal it, then resume the rotation"
            )
        return StoreUnreachable(
            f"OpenBao/Vault at {url} is unavailable (HTTP 503) while trying to {action}: "
            "check its status (standby, maintenance), then resume the rotation"
        )
    status = _STATUS_BY_EXCEPTION.get(type(exc), "unexpected status")
    return StoreError(
        f"OpenBao/Vault at {url} failed to {action} ({status}); check the server log, "
        "then resume the rotation"
    )


_STATUS_BY_EXCEPTION: dict[type[Exception], str] = {
    hvac.exceptions.InvalidRequest: "HTTP 400",
    hvac.exceptions.Unauthorized: "HTTP 401",
    hvac.exceptions.Forbidden: "HTTP 403",
    hvac.exceptions.InvalidPath: "HTTP 404",
    hvac.exceptions.RateLimitExceeded: "HTTP 429",
    hvac.exceptions.InternalServerError: "HTTP 500",
    hvac.exceptions.VaultNotInitialized: "HTTP 501: not initialised",
    hvac.exceptions.BadGateway: "HTTP 502",
}


@dataclass(frozen=True)
class _Labels:
    pending: str | None = None
    current: str | None = None
    previous: str | None = None
    revoked: tuple[str, ...] = ()
    promoted: str | None = None  # the staged version the current one was copied from

    @classmethod
    def parse(cls, custom: Mapping[str, str]) -> _Labels:
        def one(key: str) -> str | None:
            value = custom.get(key, "").strip()
            return value if _REFERENCE.match(value) else None

        revoked = tuple(
            v.strip() for v in custom.get(_KEY_REVOKED, "").split(",") if v.strip().isdigit()
        )
        return cls(
            one(_KEY_PENDING), one(_KEY_CURRENT), one(_KEY_PREVIOUS), revoked, one(_KEY_PROMOTED)
        )

    def any(self) -> bool:
        return bool(self.pending or self.current or self.previous or self.revoked)

    def of(self, version: str) -> frozenset[VersionLabel]:
        found: set[VersionLabel] = set()
        if self.pending == version:
            found.add(VersionLabel.PENDING)
        if self.current == version:
            found.add(VersionLabel.CURRENT)
        if self.previous == version:
            found.add(VersionLabel.PREVIOUS)
        if version in self.revoked:
            found.add(VersionLabel.REVOKED)
        return frozenset(found)

    def merged_into(self, custom: Mapping[str, str]) -> dict[str, str]:
        out = {k: v for k, v in custom.items() if k not in _LABEL_KEYS}
        for key, value in (
            (_KEY_PENDING, self.pending),
            (_KEY_CURRENT, self.current),
            (_KEY_PREVIOUS, self.previous),
            (_KEY_PROMOTED, self.promoted),
        ):
            if value is not None:
                out[key] = value
        revoked = list(dict.fromkeys(self.revoked))
        while revoked and len(",".join(revoked)) > _MAX_METADATA_VALUE:
            revoked.pop()
        if revoked:
            out[_KEY_REVOKED] = ",".join(revoked)
        return out


@dataclass(frozen=True)
class _Meta:
    """The parts of a KV v2 metadata read the store uses."""

    kv_current: int  # KV's current_version: what an unpinned read returns (0: no versions)
    versions: dict[str, VersionInfo]  # without labels
    custom: dict[str, str]
    labels: _Labels
    metadata_version: int | None  # OpenBao's current_metadata_version (None on Vault)

    def live(self, version: str) -> bool:
        info = self.versions.get(version)
        return info is not None and not info.deleted and not info.destroyed

    def adopted_current(self, below: int | None = None) -> str | None:
        """The current version: the label, or for an unlabelled secret the newest live one."""
        if self.labels.any():
            return self.labels.current
        candidates = [
            int(v) for v in self.versions if self.live(v) and (below is None or int(v) < below)
        ]
        return str(max(candidates)) if candidates else None


def _version_number(version: str, path: str) -> int:
    if not version.isdigit() or int(version) < 1:
        raise StoreError(f"{version!r} is not a KV v2 version number (for {path})")
    return int(version)


def _staged_number(version: str, path: str) -> int:
    number = version.removeprefix(STAGED)
    if not number.isdigit() or int(number) < 1:
        raise StoreError(f"{version!r} is not a staged version of {path}")
    return int(number)


def _as_text(value: object) -> str:
    # SecretMaterial holds strings; numbers and booleans written by people keep their JSON form.
    return value if isinstance(value, str) else json.dumps(value)


class VaultKV2Store:
    """Store on a KV v2 mount of HashiCorp Vault or OpenBao (all calls block; run off-loop)."""

    kind = KIND

    def __init__(
        self,
        client: hvac.Client,
        *,
        mount: str = "secret",
        pending_prefix: str = DEFAULT_PENDING_PREFIX,
        audit_log: str | None = None,
    ) -> None:
        self._client = client
        self._kv: Any = client.secrets.kv.v2
        self.mount = mount.strip("/")
        self.pending_prefix = pending_prefix.strip("/")
        self.url = str(client.url)
        # A file audit device's log on this host: who read an old version after the switch.
        self.audit_log = AuditLog(audit_log) if audit_log is not None else None
        self._own_accessors: frozenset[str] | None = None

    def __repr__(self) -> str:
        return f"VaultKV2Store(url={self.url!r}, mount={self.mount!r})"

    def staging_path(self, path: str) -> str:
        """Where the pending credential of ``path`` waits until the switch."""
        return f"{self.pending_prefix}/{self._clean(path)}"

    # --- usage evidence (ReportsReads) ------------------------------------------------------

    def reads_of(self, path: str, version: str, since: datetime) -> UsageEvidence:
        """Reads of ``version`` of ``path`` since ``since`` in the audit log; cannot tell
        when the catalog names no ``audit_log`` for this store."""
        if self.audit_log is None:
            return UsageEvidence(
                in_use=None,
                summary="the vault-kv2 store has no audit_log in the catalog, so reads of the "
                "old version are not seen",
            )
        return self.audit_log.reads_of_version(
            self._data_path(self._clean(path)), version, since, ignore_accessors=self._own(),
        )

    def _own(self) -> frozenset[str]:
        """rotabot's own token accessor (it reads old versions to roll back): not a consumer.
        Only comparable where the audit device logs accessors in clear (hmac_accessor=false)."""
        if self._own_accessors is None:
            try:
                accessor = self._client.auth.token.lookup_self()["data"]["accessor"]
                self._own_accessors = frozenset({str(accessor)})
            except (hvac.exceptions.VaultError, requests.RequestException, KeyError, TypeError):
                log.warning("%r: could not look up its own token accessor", self)
                return frozenset()
        return self._own_accessors

    # --- Store protocol -------------------------------------------------------------------

    def describe(self, path: str) -> StoreState:
        path = self._clean(path)
        meta = self._read_meta(path)
        staged = self._staged_versions(path)
        if meta is None and not staged:
            return StoreState()
        if meta is None:
            meta = _Meta(0, {}, {}, _Labels(), None)
        current = meta.adopted_current()
        labels = replace(meta.labels, current=current)
        versions = tuple(
            replace(info, labels=labels.of(v))
            for v, info in sorted(meta.versions.items(), key=lambda item: int(item[0]))
        ) + tuple(replace(info, labels=labels.of(info.version)) for info in staged)
        return StoreState(
            versions=versions,
            current=current,
            pending=labels.pending,
            previous=labels.previous,
        )

    def read(self, path: str, version: str | None = None) -> SecretMaterial:
        path = self._clean(path)
        if version is None:
            meta = self._read_meta(path)
            version = meta.adopted_current() if meta is not None else None
            if version is None:
                raise VersionUnavailable(
                    f"no current version of {self._data_path(path)} at {self.url}: the path is "
                    "empty or nothing is labelled current yet"
                )
        if version.startswith(STAGED):
            data = self._read_data(self.staging_path(path), str(_staged_number(version, path)))
        else:
            data = self._read_data(path, version)
        return SecretMaterial({str(k): _as_text(v) for k, v in data.items()})

    def write_pending(
        self, path: str, material: SecretMaterial, *, expected_current: str | None
    ) -> str:
        path = self._clean(path)
        meta = self._read_meta(path) or _Meta(0, {}, {}, _Labels(), None)
        current = meta.adopted_current()
        if expected_current is None:
            if current is not None or any(meta.live(v) for v in meta.versions):
                raise self._conflict(path, meta.kv_current)
        else:
            _version_number(expected_current, path)
            if meta.kv_current == 0:
                raise StoreConflict(
                    f"{self._data_path(path)} at {self.url} is empty, but version "
                    f"{expected_current} was expected there; the rotation pauses: check who "
                    "deleted it, then resume"
                )
            if current != expected_current or self._written_since(meta, current):
                raise self._conflict(path, meta.kv_current)
        if meta.labels.pending is not None and self._pending_live(path, meta):
            # Another rotation's pending credential (or a person's): never overwrite it.
            raise StoreConflict(
                f"{self._data_path(path)} at {self.url} already has a pending version "
                f"({meta.labels.pending}); the rotation pauses: finish or cancel the rotation "
                "that wrote it, then resume"
            )
        staging = self.staging_path(path)
        staged_meta = self._read_meta(staging)
        # Only rotabot writes here; cas still keeps two writers from crossing.
        number = self._put(
            staging,
            material.reveal(),
            cas=staged_meta.kv_current if staged_meta is not None else 0,
            action="stage the new version of",
        )
        version = f"{STAGED}{number}"
        # If the label write below fails, the staged version exists unlabelled: describe shows
        # it as newer than current, and mark_pending(version) resumes from there.
        meta = self._read_meta(path) or meta
        self._write_labels(path, meta, replace(
            meta.labels, current=meta.adopted_current(), pending=version))
        return version

    def mark_pending(self, path: str, version: str) -> None:
        path = self._clean(path)
        meta = self._read_meta(path) or _Meta(0, {}, {}, _Labels(), None)
        if version.startswith(STAGED):
            number = _staged_number(version, path)
            staged = self._require_meta(self.staging_path(path))
            self._require_live(staged, self.staging_path(path), str(number), "mark it pending")
            current = meta.adopted_current()
            if meta.labels.pending == version:
                return  # noticed before: harmless
            if meta.labels.pending is not None and self._pending_live(path, meta):
                raise StoreError(
                    f"cannot mark {version} of {self._data_path(path)} pending: "
                    f"{meta.labels.pending} is pending already"
                )
            self._write_labels(path, meta, replace(meta.labels, current=current, pending=version))
            return
        number = _version_number(version, path)
        self._require_live(meta, path, version, "mark it pending")
        current = meta.adopted_current(below=number)
        if meta.labels.pending == version and meta.labels.current == current:
            return  # noticed before: harmless
        if (current is not None and number <= int(current)) or meta.labels.of(version):
            raise StoreError(
                f"cannot mark version {version} of {self._data_path(path)} pending: it is "
                f"already labelled or not newer than the current version ({current or 'none'});"
                " write a new version instead"
            )
        self._write_labels(path, meta, replace(meta.labels, current=current, pending=version))

    def promote(self, path: str, version: str) -> str:
        path = self._clean(path)
        if version.startswith(STAGED):
            return self._promote_staged(path, version)
        # A pending version written in place (before staging existed): only labels move.
        _version_number(version, path)
        meta = self._require_meta(path)
        labels = meta.labels
        if labels.current == version and labels.pending != version:
            return version  # already promoted: a retried step is a no-op
        if labels.pending != version:
            raise StoreError(
                f"cannot promote version {version} of {self._data_path(path)}: it is not "
                f"labelled pending (pending: {labels.pending or 'none'}); mark it pending first"
            )
        self._require_live(meta, path, version, "promote it")
        if meta.kv_current != int(version):
            # A newer version exists: unpinned consumers read that one, not ours.
            raise self._conflict(path, meta.kv_current)
        old = meta.adopted_current(below=int(version))
        new = _Labels(
            pending=None,
            current=version,
            previous=old if old is not None else labels.previous,
            revoked=labels.revoked,
        )
        self._write_labels(path, meta, new)
        return version

    def _promote_staged(self, path: str, version: str) -> str:
        number = _staged_number(version, path)
        meta = self._read_meta(path) or _Meta(0, {}, {}, _Labels(), None)
        labels = meta.labels
        if labels.promoted == version and labels.current is not None:
            self._destroy_staged(path, number)  # a retry after a crash: finish tidying up
            return labels.current  # already promoted: a retried switch is a no-op
        if labels.pending != version:
            raise StoreError(
                f"cannot promote {version} of {self._data_path(path)}: it is not labelled "
                f"pending (pending: {labels.pending or 'none'}); mark it pending first"
            )
        data = self._read_data(self.staging_path(path), str(number))
        current = meta.adopted_current()
        written_since = self._written_since(meta, current)
        if written_since:
            # Our own copy from a switch that crashed before its labels were written is
            # adopted; anything else is someone else's write since the rotation began.
            newest = str(max(written_since))
            if len(written_since) != 1 or self._read_data(path, newest) != data:
                raise self._conflict(path, meta.kv_current)
            promoted = newest
        else:
            promoted = self._put(
                path, data, cas=meta.kv_current, action="write the new current version of"
            )
            meta = self._require_meta(path)
        self._write_labels(path, meta, _Labels(
            pending=None,
            current=promoted,
            previous=current if current is not None else labels.previous,
            revoked=labels.revoked,
            promoted=version,
        ))
        self._destroy_staged(path, number)
        return promoted

    def restore_previous(self, path: str) -> str:
        path = self._clean(path)
        meta = self._require_meta(path)
        previous = meta.labels.previous
        if previous is None:
            raise VersionUnavailable(
                f"nothing to roll back to at {self._data_path(path)} on {self.url}: no version "
                "is labelled previous (retired already?); rollback now means a new rotation"
            )
        self._require_live(meta, path, previous, "restore it")
        data = self._read_data(path, previous)
        # As `vault kv rollback`: the old data becomes a new version, cas = KV's current.
        restored = self._put(
            path, data, cas=meta.kv_current, action="write the restored version of"
        )
        meta = self._require_meta(path)
        # The rolled-back credential becomes previous (valid until its issuer revokes it and
        # retire destroys it); a pending version is abandoned by the rollback.
        self._write_labels(
            path,
            meta,
            _Labels(
                pending=None,
                current=restored,
                previous=meta.labels.current,
                revoked=meta.labels.revoked,
            ),
        )
        return restored

    def retire(self, path: str, version: str) -> None:
        path = self._clean(path)
        if version.startswith(STAGED):
            # A staged credential (a cancelled or rolled-back rotation's): destroy the copy.
            number = _staged_number(version, path)
            self._call(
                self._kv.destroy_secret_versions,
                self.staging_path(path),
                "destroy a staged version of",
                ("destroy", "update"),
                versions=[number],
            )
            meta = self._read_meta(path)
            if meta is not None and meta.labels.pending == version:
                self._write_labels(path, meta, replace(meta.labels, pending=None))
            return
        number = _version_number(version, path)
        meta = self._require_meta(path)
        if meta.adopted_current() == version:
            raise StoreError(
                f"refusing to destroy version {version} of {self._data_path(path)}: it is the "
                "current version; promote or restore another version first"
            )
        self._call(
            self._kv.destroy_secret_versions,
            path,
            "destroy a version of",
            ("destroy", "update"),
            versions=[number],
        )
        meta = self._require_meta(path)
        labels = meta.labels
        self._write_labels(
            path,
            meta,
            _Labels(
                pending=None if labels.pending == version else labels.pending,
                current=meta.adopted_current(),
                previous=None if labels.previous == version else labels.previous,
                revoked=(version, *(v for v in labels.revoked if v != version)),
                promoted=labels.promoted,
            ),
        )

    # --- helpers --------------------------------------------------------------------------

    def _put(self, path: str, data: Mapping[str, Any], *, cas: int, action: str) -> str:
        """Write ``data`` as a new KV version with check-and-set; returns its number."""
        response = self._call(
            self._kv.create_or_update_secret,
            path,
            action,
            ("data", "create", "update"),
            secret=dict(data),
            cas=cas,
        )
        return str(response["data"]["version"])

    def _staged_versions(self, path: str) -> list[VersionInfo]:
        """The live versions at the staging path, as ``staged-N`` references."""
        staged = self._read_meta(self.staging_path(path))
        if staged is None:
            return []
        return [
            replace(info, version=f"{STAGED}{v}")
            for v, info in sorted(staged.versions.items(), key=lambda item: int(item[0]))
            if staged.live(v)
        ]

    def _pending_live(self, path: str, meta: _Meta) -> bool:
        pending = meta.labels.pending
        if pending is None:
            return False
        if pending.startswith(STAGED):
            staged = self._read_meta(self.staging_path(path))
            return staged is not None and staged.live(pending.removeprefix(STAGED))
        return meta.live(pending)

    @staticmethod
    def _written_since(meta: _Meta, current: str | None) -> list[int]:
        """Live versions above current that rotabot did not retire: someone else's writes
        (a version rotabot destroyed still counts as KV's current_version, harmlessly)."""
        floor = int(current) if current is not None else 0
        return [int(v) for v in meta.versions if int(v) > floor and meta.live(v)]

    def _destroy_staged(self, path: str, number: int) -> None:
        try:
            self._call(
                self._kv.destroy_secret_versions,
                self.staging_path(path),
                "destroy the staged copy of",
                ("destroy", "update"),
                versions=[number],
            )
        except StoreError as exc:
            # The switch itself is done; a staged copy left behind equals the current value.
            log.warning("the switch of %s is done, but its staged copy stays: %s",
                        self._data_path(path), exc)

    @staticmethod
    def _clean(path: str) -> str:
        cleaned = path.strip().strip("/")
        if not cleaned:
            raise StoreError("a store path is required (e.g. ai/model-api-key)")
        return cleaned

    def _data_path(self, path: str) -> str:
        return f"{self.mount}/data/{path}"

    def _conflict(self, path: str, now: int | None = None) -> StoreConflict:
        if now is None:
            try:
                meta = self._read_meta(path)
                now = meta.kv_current if meta is not None else None
            except StoreError:
                now = None
        seen = f" (now version {now})" if now else ""
        return StoreConflict(
            f"someone else wrote {self._data_path(path)} at {self.url} meanwhile{seen}; the "
            "rotation pauses: check who wrote it, then resume"
        )

    def _call(
        self,
        method: Callable[..., Any],
        path: str,
        action: str,
        needs: tuple[str, ...],
        *,
        missing_ok: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Run one hvac call; failures become legible StoreErrors.

        ``needs`` is the API endpoint (``data``, ``metadata``, ``destroy``) followed by the
        policy capabilities the call requires, for the permission-denied message. With
        ``missing_ok`` a 404 returns None. The StoreError is raised after the except block
        so the hvac exception (it carries the response body) is not kept as __context__.
        """
        endpoint, *capabilities = needs
        api_path = f"{self.mount}/{endpoint}/{path}"
        failure: StoreError | None = None
        try:
            return method(path=path, mount_point=self.mount, **kwargs)
        except hvac.exceptions.InvalidPath:
            if not missing_ok:
                failure = VersionUnavailable(
                    f"{api_path} at {self.url} does not exist (HTTP 404): check the path "
                    "and mount in the catalog"
                )
        except hvac.exceptions.Forbidden:
            grant = ", ".join(f'"{c}"' for c in capabilities)
            failure = StorePermissionDenied(
                f"token lacks permission on {api_path} at {self.url}: grant capabilities "
                f'[{grant}] on path "{api_path}" in the bot\'s policy (see policy), or check '
                "that the token has not expired"
            )
        except hvac.exceptions.InvalidRequest as exc:
            text = _errors_text(exc)
            if _CAS_MISMATCH in text:
                failure = StoreConflict()  # filled in below, outside the except block
            elif _METADATA_CAS_MISMATCH in text:
                failure = StoreConflict(
                    f"the rotabot labels of {self._data_path(path)} at {self.url} changed "
                    "meanwhile (another rotabot or a person edited custom_metadata); the "
                    "rotation pauses: check the labels, then resume"
                )
            else:
                failure = _transport_error(exc, self.url, f"{action} {api_path}")
        except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as exc:
            failure = _transport_error(exc, self.url, f"{action} {api_path}")
        if failure is None:
            return None
        if isinstance(failure, StoreConflict) and not failure.args:
            failure = self._conflict(path)
        raise failure

    def _read_meta(self, path: str) -> _Meta | None:
        response = self._call(
            self._kv.read_secret_metadata,
            path,
            "read the metadata of",
            ("metadata", "read"),
            missing_ok=True,
        )
        if response is None:
            return None
        data: dict[str, Any] = response.get("data") or {}
        custom = {str(k): str(v) for k, v in (data.get("custom_metadata") or {}).items()}
        now = datetime.now(UTC)
        versions: dict[str, VersionInfo] = {}
        for number, info in (data.get("versions") or {}).items():
            deletion = _parse_time(info.get("deletion_time"))
            versions[str(number)] = VersionInfo(
                version=str(number),
                created_at=_parse_time(info.get("created_time")),
                destroyed=bool(info.get("destroyed")),
                # A deletion_time in the future is a scheduled delete (delete_version_after).
                deleted=deletion is not None and deletion <= now,
            )
        metadata_version = data.get("current_metadata_version")
        return _Meta(
            kv_current=int(data.get("current_version") or 0),
            versions=versions,
            custom=custom,
            labels=_Labels.parse(custom),
            metadata_version=metadata_version if isinstance(metadata_version, int) else None,
        )

    def _require_meta(self, path: str) -> _Meta:
        meta = self._read_meta(path)
        if meta is None:
            raise VersionUnavailable(
                f"{self._data_path(path)} does not exist at {self.url}: check the path in the "
                "catalog"
            )
        return meta

    def _require_live(self, meta: _Meta, path: str, version: str, purpose: str) -> None:
        info = meta.versions.get(version)
        if info is not None and not info.destroyed and not info.deleted:
            return
        if info is None:
            state = "was never written or was pruned (max_versions)"
        elif info.destroyed:
            state = "is destroyed"
        else:
            state = "is deleted (undelete it first if it should come back)"
        raise VersionUnavailable(
            f"version {version} of {self._data_path(path)} at {self.url} {state}: cannot {purpose}"
        )

    def _read_data(self, path: str, version: str) -> dict[str, Any]:
        number = _version_number(version, path)
        response = self._call(
            self._kv.read_secret_version,
            path,
            "read",
            ("data", "read"),
            missing_ok=True,
            version=number,
            raise_on_deleted_version=True,
        )
        data = (response.get("data") or {}).get("data") if response is not None else None
        if not isinstance(data, dict):
            # Deleted, destroyed or never written: say which.
            self._require_live(self._require_meta(path), path, version, "read it")
            raise VersionUnavailable(
                f"version {version} of {self._data_path(path)} at {self.url} holds no data"
            )
        return data

    def _write_labels(self, path: str, meta: _Meta, labels: _Labels) -> None:
        custom = labels.merged_into(meta.custom)
        if custom == meta.custom:
            return
        params: dict[str, Any] = {"custom_metadata": custom}
        if meta.metadata_version is not None:
            # OpenBao only: metadata check-and-set, so concurrent label writers conflict.
            params["metadata_cas"] = meta.metadata_version
        self._call(
            self._post_metadata,
            path,
            "update the labels of",
            ("metadata", "create", "update"),
            body=params,
        )

    def _post_metadata(self, *, path: str, mount_point: str, body: dict[str, Any]) -> None:
        # The request update_metadata(custom_metadata=...) sends, plus OpenBao's metadata_cas
        # which hvac's update_metadata does not know.
        url = hvac.utils.format_url(
            "/v1/{mount_point}/metadata/{path}", mount_point=mount_point, path=path
        )
        self._client.adapter.post(url=url, json=body)


class VaultKV2Target:
    """A distribution target on a KV v2 mount: a path a lane's consumers read the normal way
    (Vault Agent templates, External Secrets Operator). Each write is a new KV version with
    check-and-set on the version read just before, so a person's write in between is a
    StoreConflict, never overwritten."""

    kind = KIND

    def __init__(
        self, client: hvac.Client, *, path: str, mount: str = "secret", field: str | None = None
    ) -> None:
        self._kv2 = VaultKV2Store(client, mount=mount)
        self.path = VaultKV2Store._clean(path)
        self.field = field

    def __repr__(self) -> str:
        return f"VaultKV2Target(url={self._kv2.url!r}, path={self.where!r})"

    @property
    def where(self) -> str:
        return f"vault-kv2 {self._kv2.mount}/{self.path} at {self._kv2.url}"

    def write(self, material: SecretMaterial) -> str:
        values = select_field(material, self.field, self.where).reveal()
        store = self._kv2
        meta = store._read_meta(self.path)
        kv_current = meta.kv_current if meta is not None else 0
        if (
            meta is not None
            and meta.live(str(kv_current))
            and store._read_data(self.path, str(kv_current)) == values
        ):
            return str(kv_current)  # holds it already (a retried lane): no new version
        return store._put(
            self.path, values, cas=kv_current, action="write the lane's credential to"
        )

    def read(self) -> SecretMaterial | None:
        meta = self._kv2._read_meta(self.path)
        if meta is None or not meta.live(str(meta.kv_current)):
            return None
        data = self._kv2._read_data(self.path, str(meta.kv_current))
        return SecretMaterial({str(k): _as_text(v) for k, v in data.items()})
