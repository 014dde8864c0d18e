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
than the log file (rotated away) are not seen: docs/issuers.md says so.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
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


def _same_reader(a: _Read, b: _Read) -> bool:
    # A restarted client often logs in again (a new token, so a new accessor) from the same
    # address under the same display name; either way it is the same reader.
    if a.accessor is not None and a.accessor == b.accessor:
        return True
    return a.address is not None and (a.address, a.display_name) == (b.address, b.display_name)


def reads_of_version(
    log_path: str,
    data_path: str,
    version: str,
    since: datetime,
    *,
    ignore_accessors: frozenset[str] = frozenset(),
) -> UsageEvidence:
    """Reads of ``version`` of ``data_path`` (``<mount>/data/<path>``) logged since ``since``
    by readers that did not read a newer version afterwards, one :class:`UsageSeen` per reader
    (address, accessor, display name) with its latest read. ``ignore_accessors`` are rotabot's
    own token's (it reads old versions to roll back)."""
    where = f"audit log {log_path}"
    if not version.isdigit():
        return UsageEvidence(
            in_use=None, summary=f"version {version!r} is not a KV v2 version number")
    wanted = int(version)
    needle = f'"{data_path}"'
    reads: list[_Read] = []
    try:
        with open(log_path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if needle not in line:  # cheap filter: most lines are about other paths
                    continue
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line being written as we read
                read = _read_of(entry, data_path) if isinstance(entry, dict) else None
                if read is not None and read.at >= since and read.accessor not in ignore_accessors:
                    reads.append(read)
    except OSError as exc:
        # strerror, not str(exc): the message names the file and the cause, nothing more.
        return UsageEvidence(
            in_use=None,
            summary=f"cannot read the {where}: {exc.strerror or type(exc).__name__}; give "
            "rotabot read access to it or fix audit_log in the catalog",
        )
    old = [r for r in reads if r.version == wanted]
    # A reader that got a newer version after its last old read has moved: not in use.
    moved = [
        r for r in old
        if any(n.version > wanted and n.at > r.at and _same_reader(r, n) for n in reads)
    ]
    latest: dict[tuple[str | None, str | None, str | None], tuple[datetime, int]] = {}
    for r in old:
        if r in moved:
            continue
        key = (r.address, r.accessor, r.display_name)
        last, count = latest.get(key, (r.at, 0))
        latest[key] = (max(last, r.at), count + 1)
    details = (f"{len(moved)} read(s) of version {version} since the switch came from readers "
               "that later read a newer version",) if moved else ()
    if not latest:
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
        for (address, accessor, name), (at, count) in sorted(
            latest.items(), key=lambda item: item[1][0], reverse=True)
    )
    total = sum(count for _, count in latest.values())
    return UsageEvidence(
        in_use=True,
        summary=f"{total} read{'s' if total != 1 else ''} of old version {version} of "
        f"{data_path} since the switch by readers that have not read a newer one ({where})",
        details=details,
        seen=seen,
    )
