"""The ``file`` store: secret versions as private JSON files in a local folder, for trials only.

Layout under ``root`` for a secret path ``ai/model-api-key``::

    root/ai/model-api-key/          folder, mode 0700
        meta.json                   labels and flags, references only (mode 0600)
        v1.json, v2.json, ...       one file per version: {"version": N, "data": {...}} (0600)
        .lock                       flock target serialising writers across processes

A consumer reads ``meta.json``'s ``"current"`` and then ``v<current>.json``'s ``"data"``.
Versions are never rewritten: a new value is a new file. ``retire`` deletes the file (the value
is gone; deleting is as much as a plain file system can promise) and keeps the metadata, marked
destroyed and labelled revoked, so the history stays legible.

Every file is created with ``os.open(..., O_CREAT | O_EXCL, 0o600)`` and moved into place with
``os.replace``: there is no moment at which a value is world-readable or half-written. This
store is not a secret manager (no encryption at rest, no audit, no access control beyond the
file mode); use ``vault-kv2`` for anything real.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bot.domain.credentials import (
    StoreConflict,
    StoreError,
    StoreState,
    UsageEvidence,
    VersionInfo,
    VersionLabel,
    VersionUnavailable,
)
from bot.domain.secret_material import SecretMaterial

META_NAME = "meta.json"
LOCK_NAME = ".lock"
META_FORMAT = 1

# A path component: letters, digits, '_', '-', '.', not starting with a dot (which also refuses
# '.' and '..' and keeps our own hidden lock and temp files out of reach), and not a name the
# store uses for its own files.
_COMPONENT = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
_RESERVED_SUFFIXES = (".json", ".tmp", ".lock")
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.json$")
_DIR_MODE = 0o700
_FILE_MODE = 0o600

NO_READ_LOG = "the file store keeps no record of who read a version"


@dataclass
class _VersionMeta:
    created_at: str
    destroyed: bool = False
    revoked: bool = False


@dataclass
class _Meta:
    """meta.json in memory: labels and flags by version number. Never holds a value."""

    versions: dict[str, _VersionMeta] = field(default_factory=dict)
    current: str | None = None
    pending: str | None = None
    previous: str | None = None

    def to_json(self) -> bytes:
        doc = {
            "format": META_FORMAT,
            "current": self.current,
            "pending": self.pending,
            "previous": self.previous,
            "versions": {
                v: {"created_at": m.created_at, "destroyed": m.destroyed, "revoked": m.revoked}
                for v, m in sorted(self.versions.items(), key=lambda item: int(item[0]))
            },
        }
        return (json.dumps(doc, indent=2) + "\n").encode()

    def live(self) -> list[str]:
        return [v for v, m in self.versions.items() if not m.destroyed]

    def labels_of(self, version: str) -> frozenset[VersionLabel]:
        labels: set[VersionLabel] = set()
        if self.current == version:
            labels.add(VersionLabel.CURRENT)
        if self.pending == version:
            labels.add(VersionLabel.PENDING)
        if self.previous == version:
            labels.add(VersionLabel.PREVIOUS)
        if self.versions[version].revoked:
            labels.add(VersionLabel.REVOKED)
        return frozenset(labels)


class FileStore:
    """A :class:`bot.services.ports.Store` on a local folder (``kind = "file"``), for trials."""

    kind: str = "file"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        # Only a root we create gets mode 0700; an existing folder is the operator's choice.
        self.root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FileStore(root={str(self.root)!r})"

    def reads_of(self, path: str, version: str, since: datetime) -> UsageEvidence:
        """A folder keeps no record of who read a file: say so (ReportsReads)."""
        return UsageEvidence(in_use=None, summary=NO_READ_LOG)

    # --- Store protocol -------------------------------------------------------------------

    def describe(self, path: str) -> StoreState:
        folder = self._folder(path)
        if not (folder / META_NAME).exists():
            return StoreState()
        with self._locked(path, folder, exclusive=False):
            meta = self._load_meta(path, folder)
        versions = tuple(
            VersionInfo(
                version=v,
                labels=meta.labels_of(v),
                created_at=_parse_time(m.created_at),
                destroyed=m.destroyed,
            )
            for v, m in sorted(meta.versions.items(), key=lambda item: int(item[0]))
        )
        return StoreState(
            versions=versions, current=meta.current, pending=meta.pending, previous=meta.previous
        )

    def read(self, path: str, version: str | None = None) -> SecretMaterial:
        folder = self._folder(path)
        if not (folder / META_NAME).exists():
            raise StoreError(f"file store: {path}: no such secret (nothing written yet)")
        with self._locked(path, folder, exclusive=False):
            meta = self._load_meta(path, folder)
            if version is None:
                if meta.current is None:
                    raise StoreError(f"file store: {path}: no version is labelled current")
                version = meta.current
            self._require_live(path, meta, version)
            return self._read_version(path, folder, version)

    def write_pending(
        self, path: str, material: SecretMaterial, *, expected_current: str | None
    ) -> str:
        folder = self._folder(path, create=True)
        with self._locked(path, folder, exclusive=True):
            meta = self._load_meta(path, folder)
            if expected_current is None:
                live = meta.live()
                if live:
                    raise StoreConflict(
                        f"file store: {path}: expected an empty path but version(s) "
                        f"{', '.join(sorted(live, key=int))} exist (current: "
                        f"{meta.current or 'none'}); someone else wrote meanwhile"
                    )
            elif meta.current != expected_current:
                raise StoreConflict(
                    f"file store: {path}: current version is {meta.current or 'none'}, expected "
                    f"{expected_current}; someone else wrote meanwhile"
                )
            if meta.pending is not None:
                raise StoreConflict(
                    f"file store: {path}: version {meta.pending} is already pending (another "
                    "rotation is writing, or a failed one left it: retire it first)"
                )
            version = self._add_version(path, folder, meta, material)
            meta.pending = version
            self._save_meta(path, folder, meta)
            return version

    def mark_pending(self, path: str, version: str) -> None:
        folder = self._folder(path)
        if not (folder / META_NAME).exists():
            raise StoreError(f"file store: {path}: no such secret (nothing written yet)")
        with self._locked(path, folder, exclusive=True):
            meta = self._load_meta(path, folder)
            self._require_live(path, meta, version)
            if meta.pending == version:
                return  # already pending: marking again is a no-op
            labels = meta.labels_of(version)
            if labels:
                names = ", ".join(sorted(label.value for label in labels))
                raise StoreError(
                    f"file store: {path}: version {version} is already labelled {names}; "
                    "only a new unlabelled version can become pending"
                )
            if meta.current is not None and int(version) <= int(meta.current):
                raise StoreError(
                    f"file store: {path}: version {version} is not newer than the current "
                    f"version {meta.current}"
                )
            if meta.pending is not None:
                raise StoreConflict(
                    f"file store: {path}: version {meta.pending} is already pending; "
                    f"cannot also mark version {version}"
                )
            meta.pending = version
            self._save_meta(path, folder, meta)

    def promote(self, path: str, version: str) -> str:
        # The pending version is already in place (only labels move): its reference stays.
        folder = self._folder(path)
        if not (folder / META_NAME).exists():
            raise StoreError(f"file store: {path}: no such secret (nothing written yet)")
        with self._locked(path, folder, exclusive=True):
            meta = self._load_meta(path, folder)
            _check_version_syntax(path, version)
            if meta.current == version:
                return version  # promoted already (a retry after a crash): nothing to do
            if meta.pending != version:
                raise StoreConflict(
                    f"file store: {path}: version {version} is not pending (pending: "
                    f"{meta.pending or 'none'}); someone else changed the labels meanwhile"
                )
            self._require_live(path, meta, version)
            meta.previous = meta.current
            meta.current = version
            meta.pending = None
            self._save_meta(path, folder, meta)
            return version

    def restore_previous(self, path: str) -> str:
        folder = self._folder(path)
        if not (folder / META_NAME).exists():
            raise StoreError(f"file store: {path}: no such secret (nothing written yet)")
        with self._locked(path, folder, exclusive=True):
            meta = self._load_meta(path, folder)
            previous = meta.previous
            if previous is None:
                raise VersionUnavailable(
                    f"file store: {path}: no version is labelled previous; nothing to restore "
                    "(after revocation, rollback means a new rotation)"
                )
            self._require_live(path, meta, previous)
            material = self._read_version(path, folder, previous)
            # As `vault kv rollback`: the old data comes back as a new version, so history only
            # grows and a consumer pinned to a version number never sees its data change.
            version = self._add_version(path, folder, meta, material)
            meta.previous = meta.current  # the rolled-back-from version stays valid until retired
            meta.current = version
            self._save_meta(path, folder, meta)
            return version

    def retire(self, path: str, version: str) -> None:
        folder = self._folder(path)
        if not (folder / META_NAME).exists():
            raise StoreError(f"file store: {path}: no such secret (nothing written yet)")
        with self._locked(path, folder, exclusive=True):
            meta = self._load_meta(path, folder)
            _check_version_syntax(path, version)
            entry = meta.versions.get(version)
            if entry is None:
                raise VersionUnavailable(f"file store: {path}: no version {version}")
            if meta.current == version:
                raise StoreError(
                    f"file store: {path}: refusing to retire version {version}: it is current "
                    "and consumers read it"
                )
            # Delete the value first: if we crash before saving the metadata, a retry finishes
            # the job, and meanwhile a read fails loudly rather than serving a revoked value.
            with contextlib.suppress(FileNotFoundError):
                (folder / f"v{version}.json").unlink()
            fsync_dir(folder)
            entry.destroyed = True
            entry.revoked = True
            if meta.pending == version:
                meta.pending = None
            if meta.previous == version:
                meta.previous = None
            self._save_meta(path, folder, meta)

    # --- for people and the sandbox -------------------------------------------------------

    def put(self, path: str, material: SecretMaterial) -> str:
        """Write ``material`` as a new, unlabelled version and return its number.

        This is what a person (or the sandbox) does for the ``manual`` issuer: create the
        credential at the provider, then put it here. The bot notices the new version
        (:func:`adapters.manual_issuer.find_new_version`) and labels it pending; the value
        itself never passes through the bot. The first version of an empty path becomes
        current: that is a secret being set up, not a rotation.
        """
        folder = self._folder(path, create=True)
        with self._locked(path, folder, exclusive=True):
            meta = self._load_meta(path, folder)
            first = meta.current is None and meta.pending is None and meta.previous is None
            version = self._add_version(path, folder, meta, material)
            if first:
                meta.current = version
            self._save_meta(path, folder, meta)
            return version

    # --- internals ------------------------------------------------------------------------

    def _folder(self, path: str, *, create: bool = False) -> Path:
        components = _split_path(path)
        folder = self.root
        for name in components:
            folder = folder / name
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(folder, _DIR_MODE)
            if folder.is_symlink():
                raise StoreError(f"file store: {path}: {folder.name} is a symbolic link; refused")
            if create and not folder.is_dir():
                raise StoreError(f"file store: {path}: {folder.name} exists and is not a folder")
        return folder

    @contextlib.contextmanager
    def _locked(self, path: str, folder: Path, *, exclusive: bool) -> Iterator[None]:
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(folder / LOCK_NAME, flags, _FILE_MODE)
        except OSError as exc:
            raise StoreError(f"file store: {path}: cannot open lock file: {exc.strerror}") from None
        try:
            # flock locks the open file description: it excludes other processes and other
            # threads (each call opens its own descriptor) alike.
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load_meta(self, path: str, folder: Path) -> _Meta:
        try:
            raw = (folder / META_NAME).read_bytes()
        except FileNotFoundError:
            return _Meta()
        except OSError as exc:
            raise StoreError(
                f"file store: {path}: cannot read {META_NAME}: {exc.strerror}"
            ) from None
        try:
            doc = json.loads(raw)
            meta = _Meta(
                current=_opt_str(doc["current"]),
                pending=_opt_str(doc["pending"]),
                previous=_opt_str(doc["previous"]),
                versions={
                    str(v): _VersionMeta(
                        created_at=str(m["created_at"]),
                        destroyed=bool(m["destroyed"]),
                        revoked=bool(m["revoked"]),
                    )
                    for v, m in doc["versions"].items()
                },
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StoreError(f"file store: {path}: {META_NAME} is malformed") from None
        for v in meta.versions:
            _check_version_syntax(path, v)
        for label in (meta.current, meta.pending, meta.previous):
            if label is not None and label not in meta.versions:
                raise StoreError(f"file store: {path}: {META_NAME} labels unknown version {label}")
        return meta

    def _save_meta(self, path: str, folder: Path, meta: _Meta) -> None:
        _write_private(path, folder / META_NAME, meta.to_json())

    def _require_live(self, path: str, meta: _Meta, version: str) -> None:
        _check_version_syntax(path, version)
        entry = meta.versions.get(version)
        if entry is None:
            raise VersionUnavailable(f"file store: {path}: no version {version}")
        if entry.destroyed:
            raise VersionUnavailable(
                f"file store: {path}: version {version} was destroyed (retired)"
            )

    def _add_version(self, path: str, folder: Path, meta: _Meta, material: SecretMaterial) -> str:
        # Number past anything on disk too: a crash between writing a version file and saving
        # meta.json leaves an orphan file that must never be overwritten or reused.
        on_disk = [
            int(m.group(1)) for name in os.listdir(folder) if (m := _VERSION_FILE.match(name))
        ]
        number = max([0, *map(int, meta.versions), *on_disk]) + 1
        version = str(number)
        payload = json.dumps({"version": number, "data": material.reveal()}, indent=2) + "\n"
        _write_private(path, folder / f"v{version}.json", payload.encode())
        meta.versions[version] = _VersionMeta(created_at=datetime.now(UTC).isoformat())
        return version

    def _read_version(self, path: str, folder: Path, version: str) -> SecretMaterial:
        name = f"v{version}.json"
        try:
            fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise VersionUnavailable(
                f"file store: {path}: version {version}: {name} is missing"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"file store: {path}: version {version}: cannot open {name}: {exc.strerror}"
            ) from None
        with os.fdopen(fd, "rb") as fh:
            raw = fh.read()
        # `from None` throughout: a JSON error carries the document, i.e. the value.
        try:
            doc = json.loads(raw)
            data = doc["data"]
        except (ValueError, KeyError, TypeError):
            raise StoreError(
                f"file store: {path}: version {version}: {name} is not a version file"
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise StoreError(
                f"file store: {path}: version {version}: {name} must map field names to strings"
            )
        return SecretMaterial(data)


def _split_path(path: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise StoreError("file store: empty secret path")
    if path.startswith("/") or "\\" in path or "\x00" in path:
        raise StoreError(f"file store: {path!r}: must be a relative path like 'team/app-key'")
    components = path.split("/")
    for name in components:
        if name in ("", ".", ".."):
            raise StoreError(
                f"file store: {path!r}: empty, '.' or '..' path components are refused"
            )
        if not _COMPONENT.match(name) or name.endswith(_RESERVED_SUFFIXES):
            raise StoreError(
                f"file store: {path!r}: component {name!r} must use letters, digits, '_', '-' "
                "or '.', not start with '.', and not end in .json, .tmp or .lock"
            )
    return components


def _check_version_syntax(path: str, version: str) -> None:
    # Versions become file names: only plain positive integers are accepted.
    if not isinstance(version, str) or not version.isascii() or not version.isdigit() or (
        version.startswith("0")
    ):
        raise VersionUnavailable(f"file store: {path}: {version!r} is not a version number")


def _write_private(path: str, target: Path, payload: bytes) -> None:
    """Write ``payload`` to ``target`` atomically; the file is 0600 from its first moment."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE
        )
    except OSError as exc:
        raise StoreError(
            f"file store: {path}: cannot create {target.name}: {exc.strerror}"
        ) from None
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise StoreError(
                f"file store: {path}: cannot write {target.name}: {exc.strerror}"
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(target.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable, not only the file contents (the
    env-file target uses it too)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
