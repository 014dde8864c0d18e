"""Who read an old version of a KV v2 secret, from a Vault/OpenBao file audit device's log.

Each line of a file audit log is one JSON entry. A ``response`` entry of a KV v2 read holds
what identifies the reader and what it got, and that is all this module looks at:

- ``request.path`` (``<mount>/data/<path>``), ``request.operation`` (``read``), ``time``;
- ``response.data.metadata.version``: the version the reader got. It is a number, and audit
  devices HMAC only strings, so it is always readable;
- ``request.remote_address``: the client address as the server saw it (a proxy's address when
  a load balancer is in front and ``x_forwarded_for_*`` is not configured on the listener);
- ``auth.display_name`` (e.g. ``token-ingest``, ``approle``) and ``auth.accessor``. The accessor
  is HMAC'd (``hmac-sha256:…``) unless the device sets ``hmac_accessor = "false"``; the HMAC
  is stable per token, so it still tells readers apart and can be named in a consumer's
  ``identity.vault_accessor`` as it appears.

Secret values in the log are HMAC'd (unless the device sets ``log_raw``); this module never
reads ``response.data.data``, so a raw log leaks nothing through rotabot either. Entries older
than the log file (rotated away) are not seen: docs/issuers.md says so. The log is read
incrementally (only what was appended since the last check), so a large log costs its size
once, not on every gate check.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.domain.credentials import UsageEvidence, UsageSeen

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Read:
    at: datetime
    version: int
    address: str | None
    accessor: str | None
    display_name: str | None


def parse_time(value: object) -> datetime | None:
    """A Vault/OpenBao timestamp (metadata, audit entries), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        # Vault/OpenBao give nanoseconds; fromisoformat (3.11) keeps microseconds.
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _read_of(entry: dict[str, Any], data_path: str) -> _Read | None:
    """The read in ``entry`` when it is a response to a read of ``data_path``; None for
    anything else."""
    if entry.get("type") != "response":
        return None
    request = entry.get("request") or {}
    if request.get("path") != data_path or request.get("operation") != "read":
        return None
    metadata = ((entry.get("response") or {}).get("data") or {}).get("metadata") or {}
    got = metadata.get("version")
    at = parse_time(entry.get("time"))
    if not isinstance(got, int) or at is None:
        return None
    auth = entry.get("auth") or {}
    return _Read(
        at=at,
        version=got,
        address=_text(request.get("remote_address")),
        accessor=_text(auth.get("accessor")),
        display_name=_text(auth.get("display_name")),
    )


Reader = tuple[str | None, str | None, str | None]  # address, accessor, display name


@dataclass
class _Tally:
    """What the log said so far about one (path, old version, since): per reader its latest
    read of the old version and how many, and the latest read of a newer version by accessor
    and by (address, display name). Its size grows with the readers, not with the reads."""

    inode: int = -1
    offset: int = 0
    old: dict[Reader, tuple[datetime, int]] = field(default_factory=dict)
    newer_by_accessor: dict[str, datetime] = field(default_factory=dict)
    newer_by_place: dict[tuple[str, str | None], datetime] = field(default_factory=dict)

    def add(self, read: _Read, wanted: int) -> None:
        if read.version == wanted:
            key = (read.address, read.accessor, read.display_name)
            last, count = self.old.get(key, (read.at, 0))
            self.old[key] = (max(last, read.at), count + 1)
        elif read.version > wanted:
            if read.accessor is not None:
                self.newer_by_accessor[read.accessor] = max(
                    read.at, self.newer_by_accessor.get(read.accessor, read.at))
            if read.address is not None:
                place = (read.address, read.display_name)
                self.newer_by_place[place] = max(read.at, self.newer_by_place.get(place, read.at))

    def moved(self, reader: Reader, last_old: datetime) -> bool:
        # A restarted client often logs in again (a new token, so a new accessor) from the
        # same address under the same display name; either way it is the same reader.
        address, accessor, name = reader
        later = [
            self.newer_by_accessor.get(accessor) if accessor is not None else None,
            self.newer_by_place.get((address, name)) if address is not None else None,
        ]
        return any(t is not None and t > last_old for t in later)


class AuditLog:
    """One file audit device's log, read incrementally: each check reads only what was
    appended since the last one (a file audit log is append-only; a rotated or truncated file
    is read again from its start). Safe to share between threads."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, int, datetime, frozenset[str]], _Tally] = {}

    def reads_of_version(
        self,
        data_path: str,
        version: str,
        since: datetime,
        *,
        ignore_accessors: frozenset[str] = frozenset(),
    ) -> UsageEvidence:
        """Reads of ``version`` of ``data_path`` (``<mount>/data/<path>``) logged since
        ``since`` by readers that did not read a newer version afterwards, one
        :class:`UsageSeen` per reader (address, accessor, display name) with its latest read.
        ``ignore_accessors`` are rotabot's own token's (it reads old versions to roll back)."""
        where = f"audit log {self.path}"
        if not version.isdigit():
            return UsageEvidence(
                in_use=None, summary=f"version {version!r} is not a KV v2 version number")
        wanted = int(version)
        try:
            with self._lock:
                key = (data_path, wanted, since, ignore_accessors)
                tally = self._catch_up(
                    self._tallies.get(key) or _Tally(), data_path, wanted, since,
                    ignore_accessors)
                self._tallies[key] = tally
                old = dict(tally.old)
                moved = {r for r, (last, _) in old.items() if tally.moved(r, last)}
        except OSError as exc:
            # strerror, not str(exc): the message names the file and the cause, nothing more.
            return UsageEvidence(
                in_use=None,
                summary=f"cannot read the {where}: {exc.strerror or type(exc).__name__}; give "
                "rotabot read access to it or fix audit_log in the catalog",
            )
        details = (f"{sum(old[r][1] for r in moved)} read(s) of version {version} since the "
                   "switch came from readers that later read a newer version",) if moved else ()
        still = sorted(((r, v) for r, v in old.items() if r not in moved),
                       key=lambda item: item[1][0], reverse=True)
        if not still:
            return UsageEvidence(
                in_use=False,
                summary=f"no reads of version {version} of {data_path} since the switch by a "
                f"reader still on it ({where})",
                details=details,
            )
        seen = tuple(
            UsageSeen(
                address=address, vault_accessor=accessor, user=name, at=at,
                how=f"{count} read{'s' if count != 1 else ''} of version {version}",
            )
            for (address, accessor, name), (at, count) in still
        )
        total = sum(count for _, (_, count) in still)
        return UsageEvidence(
            in_use=True,
            summary=f"{total} read{'s' if total != 1 else ''} of old version {version} of "
            f"{data_path} since the switch by readers that have not read a newer one ({where})",
            details=details,
            seen=seen,
        )

    def _catch_up(
        self, tally: _Tally, data_path: str, wanted: int, since: datetime,
        ignore: frozenset[str],
    ) -> _Tally:
        """``tally`` brought up to the end of the log (a new one if the file changed)."""
        needle = f'"{data_path}"'.encode()
        with open(self.path, "rb") as log_file:
            stat = os.fstat(log_file.fileno())
            if stat.st_ino != tally.inode or stat.st_size < tally.offset:
                # First look, or the log was rotated or truncated: start again.
                tally = _Tally(inode=stat.st_ino)
            log_file.seek(tally.offset)
            for raw in log_file:
                if not raw.endswith(b"\n"):
                    break  # a line still being written: read it next time
                tally.offset += len(raw)
                if needle not in raw:  # cheap filter: most lines are about other paths
                    continue
                try:
                    entry = json.loads(raw)
                except ValueError:
                    continue
                read = _read_of(entry, data_path) if isinstance(entry, dict) else None
                if read is not None and read.at >= since and read.accessor not in ignore:
                    tally.add(read, wanted)
        return tally
