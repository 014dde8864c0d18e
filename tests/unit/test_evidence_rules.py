"""The evidence rules (bot/domain/evidence.py), the report parser and the catalog's flags, pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.catalog import parse_catalog
from bot.domain.alert_intake import SchemaError
from bot.domain.evidence import (
    EvidenceReport,
    Match,
    check_lines,
    drift_reason,
    evidence_note,
    match,
    missing_evidence,
    next_step,
    silence_reason,
)
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.services.evidence import CredentialShaped, parse_evidence

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def rotation() -> Rotation:
    r = Rotation.begin(
        secret="model-api-key", lanes=["dev", "staging", "prod"],
        consumers=[ConsumerPlan("retriever", "dev", "U0BOB", "hot"),
                   ConsumerPlan("nightly-ingest", "staging", "S0DATA", "restart"),
                   ConsumerPlan("inference-api", "prod", "U0ALICE", "hot")],
        overlap=timedelta(hours=24), observe=timedelta(hours=2), store_path="ai/k",
        actor="U0ADMIN", now=T0)
    r.id = 4
    r.prepared(old_version="6", new_version="7", old_key_id=None, new_key_id=None,
               actor="rotabot", now=T0)
    return r


def report(consumer: str = "retriever", version: str | None = "7", ok: bool = True,
           workflow: str | None = None, at: datetime = T0) -> EvidenceReport:
    return EvidenceReport(consumer=consumer, secret="model-api-key", version=version,
                          key_id=None, ok=ok, at=at, workflow=workflow)


def test_versions_compare_as_labels() -> None:
    r = rotation()
    assert match(r, report(version="v7")) is Match.NEW
    assert match(r, report(version="6")) is Match.OLD
    assert match(r, report(version="5")) is Match.OTHER


def test_new_version_distributes_then_a_passing_check_validates_in_turn_only() -> None:
    r = rotation()
    assert next_step(r, report()) is StepState.DISTRIBUTED
    # prod's turn has not come: its report moves nothing yet.
    assert next_step(r, report("inference-api")) is None
    r.mark_step("retriever", StepState.DISTRIBUTED, actor="x", now=T0)
    assert next_step(r, report()) is StepState.VALIDATED
    assert next_step(r, report(ok=False)) is None
    assert next_step(r, report(version="6")) is None


def test_named_checks_must_each_pass_on_the_new_version() -> None:
    r = rotation()
    r.mark_step("retriever", StepState.DISTRIBUTED, actor="x", now=T0)
    checks = ("inference", "retrieval")
    assert next_step(r, report(workflow="inference"), checks=checks) is None
    assert next_step(r, report(workflow="retrieval"), passed={"inference"},
                     checks=checks) is StepState.VALIDATED
    missing = missing_evidence(r, "retriever", StepState.VALIDATED,
                               reports=[report(workflow="inference")], checks=checks)
    assert missing == ("retriever (dev) requires evidence: no passing check on version 7 yet "
                       "for retrieval")


def test_check_lines_show_each_named_check_on_the_new_version() -> None:
    r = rotation()
    later = T0 + timedelta(minutes=3)
    lines = check_lines(r, ("inference", "retrieval", "ingestion"), [
        report(workflow="inference", ok=False), report(workflow="inference", at=later),
        report(version="6", workflow="retrieval")])  # the old version does not count
    assert [line.words for line in lines] == [
        "inference: passed at 09:03", "retrieval: not reported", "ingestion: not reported"]


def test_drift_needs_the_old_version_after_the_lane_moved_or_the_switch() -> None:
    r = rotation()
    assert drift_reason(r, report(version="6")) is None  # still waiting: it may run the old one
    r.mark_step("retriever", StepState.DISTRIBUTED, actor="x", now=T0)
    assert drift_reason(r, report(version="6")) == (
        "retriever (dev) reports version 6, the old credential, after its lane (dev) moved to "
        "version 7 (step: distributed)")
    assert drift_reason(r, report(version="7")) is None
    r.phase = Phase.OBSERVING
    assert drift_reason(r, report("inference-api", version="6")) == (
        "inference-api (prod) reports version 6, the old credential, after R-4 switched to "
        "version 7")


def test_silence_counts_from_the_lane_turn_or_the_last_report() -> None:
    r = rotation()
    hb = timedelta(minutes=10)
    # staging's turn has not come: silence there is not the rotation's business yet.
    assert silence_reason(r, "nightly-ingest", heartbeat=hb, last_report=None,
                          now=T0 + timedelta(hours=1)) is None
    later = T0 + timedelta(minutes=5)
    r.mark_step("retriever", StepState.DISTRIBUTED, actor="x", now=later)
    r.mark_step("retriever", StepState.VALIDATED, actor="x", now=later)
    assert silence_reason(r, "nightly-ingest", heartbeat=hb, last_report=None,
                          now=later + timedelta(minutes=9)) is None
    assert silence_reason(r, "nightly-ingest", heartbeat=hb, last_report=None,
                          now=later + timedelta(minutes=25)) == (
        "nightly-ingest has not reported for 25m since R-4 reached staging; it reports every 10m")
    last = later + timedelta(minutes=20)
    assert silence_reason(r, "nightly-ingest", heartbeat=hb, last_report=last,
                          now=later + timedelta(minutes=25)) is None
    assert "since its last report at 09:25 (R-4 is in staging)" in (
        silence_reason(r, "nightly-ingest", heartbeat=hb, last_report=last,
                       now=later + timedelta(minutes=40)) or "")


def test_the_note_says_what_was_reported_and_when() -> None:
    note = evidence_note(report(workflow="inference", at=T0 + timedelta(minutes=12)),
                         StepState.VALIDATED)
    assert note == "validated: retriever reported version 7 (inference passed) at 09:12"


# --- the body of POST /evidence -------------------------------------------------------------


def parse(data: dict[str, object]) -> EvidenceReport:
    return parse_evidence(json.dumps(data).encode(), now=T0)


def test_a_report_parses_with_defaults() -> None:
    r = parse({"consumer": "retriever", "key_id": "key_2", "at": "2026-11-25T08:59:00Z"})
    assert (r.version, r.key_id, r.ok, r.workflow) == (None, "key_2", True, None)
    assert r.at == T0 - timedelta(minutes=1)
    assert parse({"consumer": "retriever", "version": "7"}).at == T0
    assert parse({"consumer": "retriever", "version": 7}).version == "7"  # a number is fine


@pytest.mark.parametrize("data, field, words", [
    ({"consumer": "retriever", "version": "ghp_" + "a1B2" * 9}, "version", "never the value"),
    ({"consumer": "retriever", "version": "5f4dcc3b5aa765d61d8327deb882cf99"}, "version", "hash"),
    ({"consumer": "retriever", "version": "7", "password": "hunter2"}, "body", "references"),
    ({"consumer": "retriever", "version": "7", "ok": "maybe"}, "ok", "true or false"),
    ({"consumer": "re triever", "version": "7"}, "consumer", "letters, digits"),
])
def test_refusals_name_the_field_and_never_the_value(
    data: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(SchemaError) as refused:
        parse(data)
    assert refused.value.field == field and words in str(refused.value)
    for value in data.values():
        if isinstance(value, str) and value not in ("retriever", "7"):
            assert value not in str(refused.value)
    if words in ("never the value", "hash", "references"):
        assert isinstance(refused.value, CredentialShaped)


# --- the catalog ----------------------------------------------------------------------------


def test_require_evidence_per_lane_per_secret_and_per_consumer() -> None:
    catalog = parse_catalog("""\
version: 1
defaults: {channel: C0R, require_evidence: [prod]}
stores: {f: {kind: file, path: ./s}}
secrets:
  a:
    issuer: {kind: manual}
    store: {name: f, path: a}
    consumers:
      web: {owner: U0A, lane: prod, reload: hot, heartbeat: 10m, checks: [inference, retrieval]}
      job: {owner: U0A, lane: dev, reload: hot}
      opt-out: {owner: U0A, lane: prod, reload: hot, require_evidence: false}
  b:
    issuer: {kind: manual}
    store: {name: f, path: b}
    require_evidence: true
    consumers:
      job: {owner: U0A, lane: dev, reload: hot}
""", "catalog.yml")
    assert catalog.requires_evidence("a", "web")
    assert not catalog.requires_evidence("a", "job")
    assert not catalog.requires_evidence("a", "opt-out")
    assert catalog.requires_evidence("b", "job")
    web = catalog.secret("a").consumers["web"]
    assert web.heartbeat == timedelta(minutes=10) and web.checks == ["inference", "retrieval"]


# --- how the message says what a step rests on ----------------------------------------------


def test_the_message_tells_evidence_from_claims() -> None:
    from handlers.blocks import consumer_line

    r = rotation()
    r.mark_step("retriever", StepState.DISTRIBUTED, actor="U0BOB", now=T0)
    assert consumer_line(r.consumer("retriever")).endswith("*distributed* by <@U0BOB>, no evidence")
    note = evidence_note(report(at=T0 + timedelta(minutes=12)), StepState.VALIDATED)
    r.mark_step("retriever", StepState.VALIDATED, actor="rotabot (evidence)", now=T0, note=note)
    assert consumer_line(r.consumer("retriever")).endswith(
        "*validated*: retriever reported version 7 at 09:12")
