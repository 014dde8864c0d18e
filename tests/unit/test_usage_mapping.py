"""Usage evidence mapped to catalog consumers by identity, and the words for who was seen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from adapters.file_store import FileStore
from bot.domain.credentials import UsageEvidence, UsageSeen
from bot.domain.usage import combined, map_usage, unmapped, usage_line, usage_words
from bot.services.ports import ReportsReads

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Ident:
    application_name: str | None = None
    address: str | None = None
    vault_accessor: str | None = None
    user: str | None = None


IDENTITIES = {
    "inference-api": Ident(application_name="inference", address="10.0.3.0/24"),
    "nightly-ingest": Ident(vault_accessor="acc-ingest"),
}


def test_a_client_maps_by_any_known_field_and_a_conflict_refuses() -> None:
    evidence = UsageEvidence(True, "3 connections", seen=(
        UsageSeen(address="10.0.3.8", application_name="inference"),
        UsageSeen(address="10.0.3.9", application_name="somebody-else"),  # same subnet
        UsageSeen(vault_accessor="acc-ingest", address="192.0.2.1"),
        UsageSeen(address="10.0.4.1"),
    ))
    mapped = map_usage(evidence, IDENTITIES)
    assert [s.consumer for s in mapped.seen] == [
        "inference-api", None, "nightly-ingest", None]
    assert [s.address for s in unmapped(mapped)] == ["10.0.3.9", "10.0.4.1"]


def test_words_name_consumers_and_strangers_with_when() -> None:
    evidence = map_usage(UsageEvidence(True, "2 reads of version 3 since the switch", seen=(
        UsageSeen(address="10.0.4.7", at=NOW - timedelta(minutes=4)),
        UsageSeen(vault_accessor="acc-ingest", at=None, how="connection"),
    )), IDENTITIES)
    assert usage_words(evidence, NOW) == (
        "2 reads of version 3 since the switch: used 4m ago by 10.0.4.7 (not in the catalog); "
        "connected now by nightly-ingest (Vault accessor acc-ingest), connection"
    )


def test_unmapped_lists_each_identity_once() -> None:
    seen = UsageSeen(address="10.0.4.1", at=NOW)
    assert len(unmapped(UsageEvidence(True, "x", seen=(seen, seen)))) == 1


def test_combined_is_in_use_when_either_saw_use_else_the_issuers_verdict() -> None:
    issuer = UsageEvidence(None, "manual issuer: cannot tell")
    quiet = UsageEvidence(False, "no reads of version 3 since the switch")
    read = UsageEvidence(True, "1 read", seen=(UsageSeen(address="10.0.4.1", at=NOW),))
    assert combined([issuer, quiet]).in_use is None
    both = combined([issuer, read])
    assert both.in_use is True
    assert both.seen == read.seen
    assert usage_line(combined([issuer, quiet]), NOW) == (
        "usage evidence: cannot tell (manual issuer: cannot tell; no reads of version 3 since "
        "the switch)")


def test_a_definite_answer_is_not_buried_in_a_store_that_cannot_tell(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    assert isinstance(store, ReportsReads)
    cannot = store.reads_of("a/b", "1", since=NOW)
    assert cannot == UsageEvidence(None, "the file store keeps no record of who read a version")
    issuer = UsageEvidence(False, "no sessions use app_a now")
    assert combined([issuer, cannot]) == issuer
    assert usage_line(combined([UsageEvidence(None, "manual issuer: no platform"), cannot]),
                      NOW) == ("usage evidence: cannot tell (manual issuer: no platform; the file "
                               "store keeps no record of who read a version)")
