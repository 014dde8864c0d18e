"""The audit log reader on a file written by hand: incremental reads, a line still being
written, a rotated log. (The entry shape is OpenBao's own: tests/integration/test_vault_audit.py
reads a real audit device's log.)"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from adapters.vault_audit import AuditLog

SWITCH = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
PATH = "secret/data/app/db"


def entry(minute: int, version: int, accessor: str, address: str = "10.0.3.7") -> str:
    return json.dumps({
        "time": f"2026-11-30T12:{minute:02d}:00.123456789Z", "type": "response",
        "auth": {"accessor": accessor, "display_name": f"token-{accessor}"},
        "request": {"operation": "read", "path": PATH, "remote_address": address},
        "response": {"data": {"data": {"password": "hmac-sha256:00"},
                              "metadata": {"version": version}}},
    }) + "\n"


def test_reads_only_what_was_appended_and_waits_for_a_whole_line(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.log"
    log_path.write_text(entry(1, 3, "acc-a"))
    audit = AuditLog(str(log_path))
    first = audit.reads_of_version(PATH, "3", SWITCH)
    assert [s.vault_accessor for s in first.seen] == ["acc-a"]

    half = entry(2, 3, "acc-b")
    with log_path.open("a") as f:
        f.write(half[:40])  # the server is still writing this line
    assert [s.vault_accessor for s in audit.reads_of_version(PATH, "3", SWITCH).seen] == [
        "acc-a"]
    with log_path.open("a") as f:
        f.write(half[40:] + entry(3, 4, "acc-a"))  # ...and acc-a moved to version 4
    later = audit.reads_of_version(PATH, "3", SWITCH)
    assert [s.vault_accessor for s in later.seen] == ["acc-b"]
    assert later.details == (
        "1 read(s) of version 3 since the switch came from readers that later read a newer "
        "version",)


def test_a_rotated_log_is_read_from_its_start(tmp_path: Path) -> None:
    log_path = tmp_path / "audit.log"
    log_path.write_text(entry(1, 3, "acc-a") + entry(2, 3, "acc-a"))
    audit = AuditLog(str(log_path))
    assert audit.reads_of_version(PATH, "3", SWITCH).summary.startswith("2 reads of old")
    os.rename(log_path, tmp_path / "audit.log.1")  # logrotate, then the server reopens
    log_path.write_text(entry(5, 3, "acc-c"))
    rotated = audit.reads_of_version(PATH, "3", SWITCH)
    # What was rotated away is not seen any more (docs/issuers.md says to keep the window).
    assert [s.vault_accessor for s in rotated.seen] == ["acc-c"]
