"""Readiness findings: each fires on a crafted catalog, none on a clean one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.catalog import UnknownSecret, load_catalog, parse_catalog
from bot.catalog import readiness as r
from bot.catalog.readiness import Finding, is_slack_id, readiness_findings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yml"

RISKY = textwrap.dedent("""\
    version: 1
    defaults:
      channel: C0ROTATE
      admins: [U0SECOPS, secops-team]
      lanes: [dev, staging, prod]
      overlap: 1h
      observe: 2h
    stores:
      local: {kind: file, path: ./var/secrets}
    issuers:
      vendor:
        kind: http
        dual_valid: false
        create: {url: "https://v.example/keys", key_id_path: id, secret_path: key}
        revoke: {url: "https://v.example/keys/{key_id}"}
    secrets:
      risky:
        issuer: {name: vendor}
        store: {name: local, path: risky}
        consumers:
          api:
            owner: alice
            lane: prod
            reload: restart
          worker:
            owner: U0BOB
            lane: production
            reload: hot
            health_check: {url: "http://worker/healthz"}
      lonely:
        issuer: {kind: manual, dual_valid: false}
        store: {name: local, path: lonely}
        observe: 30m
        admins: [U0OWNER]
        consumers:
          only: {owner: S0TEAM, lane: prod, reload: staged, rollback: "redeploy previous",
                 health_check: {url: "http://only/healthz"}}
      empty:
        issuer: {kind: manual}
        store: {name: local, path: empty}
        overlap: 3h
        observe: 4h
        admins: [U0OWNER]
    """)


@pytest.fixture(scope="module")
def findings() -> list[Finding]:
    return readiness_findings(parse_catalog(RISKY))


def test_every_finding_with_field_and_line(findings: list[Finding]) -> None:
    assert [(f.code, f.secret, f.field, f.line) for f in findings] == [
        (r.ADMIN_NOT_SLACK_ID, None, "defaults.admins[1]", 4),
        (r.OWNER_NOT_SLACK_ID, "risky", "secrets.risky.consumers.api.owner", 22),
        (r.NO_HEALTH_CHECK, "risky", "secrets.risky.consumers.api", 21),
        (r.NO_ROLLBACK_NOTE, "risky", "secrets.risky.consumers.api", 21),
        (r.UNLISTED_LANE, "risky", "secrets.risky.consumers.worker.lane", 27),
        # risky is a hard cutover: no overlap for observe to outlast, so no finding on it.
        (r.HARD_CUTOVER, "risky", "secrets.risky.issuer", 18),
        (r.SINGLE_LANE, "lonely", "secrets.lonely.consumers", 35),
        (r.HARD_CUTOVER, "lonely", "secrets.lonely.issuer", 31),
        (r.NO_CONSUMERS, "empty", "secrets.empty", 38),
        (r.OBSERVE_EXCEEDS_OVERLAP, "empty", "secrets.empty.observe", 42),
    ]
    # A hard cutover is a note (what the secret is); everything else a warning (to fix).
    assert {f.code for f in findings if f.severity == r.NOTE} == {r.HARD_CUTOVER}
    assert {f.severity for f in findings if f.code != r.HARD_CUTOVER} == {r.WARNING}


def test_messages_are_actionable(findings: list[Finding]) -> None:
    by_key = {(f.code, f.secret): f.message for f in findings}
    assert by_key[(r.NO_HEALTH_CHECK, "risky")] == (
        "api (prod) has no health_check: add a health_check so api can be checked on its "
        "real dependency path, not just 'the process is up'"
    )
    assert by_key[(r.NO_ROLLBACK_NOTE, "risky")] == (
        "api (prod) reloads by restart but has no rollback note: write in rollback how to put "
        "api back on the previous credential, before rotation day rather than during an "
        "incident"
    )
    assert by_key[(r.UNLISTED_LANE, "risky")] == (
        "lane 'production' is not in lanes (dev, staging, prod): add it to lanes at its place "
        "in the validation order; until then worker validates after every listed lane"
    )
    assert by_key[(r.SINGLE_LANE, "lonely")] == (
        "all consumers of lonely are in lane 'prod', so nothing is validated in a lower-risk "
        "lane first: add the consumer's dev or staging instance in an earlier lane"
    )
    assert by_key[(r.OWNER_NOT_SLACK_ID, "risky")].startswith(
        "owner 'alice' of api is not a Slack user id (U... or W...) or user-group id (S...)"
    )
    assert by_key[(r.OBSERVE_EXCEEDS_OVERLAP, "empty")] == (
        "observe (4h) is longer than overlap (3h): the old credential must stay valid through "
        "the whole observation window; raise overlap to at least 4h or shorten observe"
    )
    assert by_key[(r.HARD_CUTOVER, "risky")].startswith(
        "hard cutover: issuer 'vendor' (http) cannot keep two credentials valid at once"
    )
    assert by_key[(r.HARD_CUTOVER, "lonely")].startswith(
        "hard cutover: issuer manual (inline) cannot keep two credentials valid at once"
    )


def test_findings_for_one_secret_include_defaults_that_apply() -> None:
    catalog = parse_catalog(RISKY)
    risky = readiness_findings(catalog, "risky")
    assert {(f.code, f.field) for f in risky} == {
        (r.ADMIN_NOT_SLACK_ID, "defaults.admins[1]"),
        (r.OWNER_NOT_SLACK_ID, "secrets.risky.consumers.api.owner"),
        (r.NO_HEALTH_CHECK, "secrets.risky.consumers.api"),
        (r.NO_ROLLBACK_NOTE, "secrets.risky.consumers.api"),
        (r.UNLISTED_LANE, "secrets.risky.consumers.worker.lane"),
        (r.HARD_CUTOVER, "secrets.risky.issuer"),
    }
    # lonely overrides admins and observe, so the defaults' problems do not apply to it.
    assert [f.code for f in readiness_findings(catalog, "lonely")] == [
        r.SINGLE_LANE, r.HARD_CUTOVER
    ]
    with pytest.raises(UnknownSecret):
        readiness_findings(catalog, "lonley")


def test_clean_example_has_no_findings() -> None:
    # Its single-key SaaS token is a hard cutover: a fact every owner must know, not a flaw.
    assert [(f.code, f.secret) for f in readiness_findings(load_catalog(EXAMPLE))] == [
        (r.HARD_CUTOVER, "crm-api-token")
    ]


def test_overlap_none_is_a_hard_cutover_with_its_window() -> None:
    catalog = parse_catalog(RISKY.replace("    overlap: 3h\n",
                                          "    overlap: none\n    cutover_window: 10m\n"))
    settings = catalog.settings_for("empty")
    assert settings.hard_cutover and settings.cutover_window.total_seconds() == 600
    assert catalog.settings_for("risky").hard_cutover  # its issuer says dual_valid: false
    findings = {f.code: f for f in readiness_findings(catalog, "empty")}
    assert r.OBSERVE_EXCEEDS_OVERLAP not in findings
    assert findings[r.HARD_CUTOVER].field == "secrets.empty.overlap"
    assert "it is marked `overlap: none`" in findings[r.HARD_CUTOVER].message
    assert "each owner validates within 10m" in findings[r.HARD_CUTOVER].message
    # An overlapping secret keeps the defaults' window and is no cutover.
    plain = parse_catalog(RISKY).settings_for("empty")
    assert not plain.hard_cutover and plain.cutover_window.total_seconds() == 1800


def test_all_consumers_in_the_first_lane_is_not_single_lane_risk() -> None:
    text = RISKY.replace("lane: prod, reload: staged", "lane: dev, reload: staged")
    codes = [f.code for f in readiness_findings(parse_catalog(text), "lonely")]
    assert r.SINGLE_LANE not in codes


def test_fixing_each_problem_removes_its_finding() -> None:
    fixed = (
        RISKY.replace("secops-team", "S0SECOPS")
        .replace("overlap: 1h", "overlap: 24h")
        .replace("owner: alice", "owner: W0ALICE")
        .replace("        reload: restart\n",
                 "        reload: restart\n        rollback: restart with the old version\n"
                 "        health_check: {url: 'http://api/healthz'}\n")
        .replace("lane: production", "lane: staging")
        .replace("dual_valid: false", "dual_valid: true")
        .replace("lane: prod, reload: staged", "lane: dev, reload: staged")
        .replace("overlap: 3h", "overlap: 5h")
    )
    assert [(f.code, f.secret) for f in readiness_findings(parse_catalog(fixed))] == [
        (r.NO_CONSUMERS, "empty")
    ]


@pytest.mark.parametrize(
    ("text", "ok"),
    [("U0ALICE", True), ("W0123ABC", True), ("S0DATAENG", True), ("alice", False),
     ("@alice", False), ("C0ROTATE", False), ("u0alice", False), ("U", False)],
)
def test_is_slack_id(text: str, ok: bool) -> None:
    assert is_slack_id(text) is ok


def test_finding_format() -> None:
    f = Finding("warning", "s", "secrets.s.consumers.c", 12, "do this")
    assert f.format("catalog.yml") == "catalog.yml:12: warning: secrets.s.consumers.c: do this"
    assert Finding("warning", None, "defaults", None, "x").format("c.yml") == (
        "c.yml: warning: defaults: x"
    )
