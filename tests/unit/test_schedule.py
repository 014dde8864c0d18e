"""Scheduled rotations, pure: reading the time, what is due when, readiness, max_age, and the
live readiness review against a real file store and fakes of the Store/Issuer Protocols."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes import FakeBackends

from adapters.file_store import FileStore
from adapters.manual_issuer import ManualIssuer
from bot.catalog import parse_catalog
from bot.catalog.readiness import NO_HEALTH_CHECK
from bot.domain.commands import USAGE, CommandError, parse_command
from bot.domain.credentials import IssuerError, StoreError, StoreState
from bot.domain.schedule import (
    DUE_REMIND_EVERY,
    BadTime,
    ScheduleAction,
    ScheduleStatus,
    credential_age,
    due_reminder_slot,
    format_at,
    next_action,
    parse_at,
    readiness_outcome,
)
from bot.services.readiness_review import (
    ISSUER_UNUSABLE,
    STORE_UNREACHABLE,
    owners_of,
    review_readiness,
)

AT = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LEAD = timedelta(days=2)


# --- reading the time ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T09:00Z",
        "2026-12-01t09:00z",
        "2026-12-01 09:00Z",
        "2026-12-01T09:00:00Z",
        "2026-12-01T11:00+02:00",
        "2026-12-01T11:00+0200",
        "2026-12-01T04:30-04:30",
    ],
)
def test_times_in_utc_or_with_an_offset_are_the_same_instant(text: str) -> None:
    at = parse_at(text)
    assert at == AT
    assert at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("2026-12-01", "has no time of day: write it like 2026-12-01T09:00Z"),
        ("2026-12-01T09:00", "has no time zone: add Z for UTC (like 2026-12-01T09:00Z)"),
        ("tomorrow", "is not a time: write it like 2026-12-01T09:00Z (UTC)"),
        ("2026-13-01T09:00Z", "is not a valid date and time"),
        ("2026-02-30T09:00Z", "is not a valid date and time"),
        ("2026-12-01T25:00Z", "is not a valid date and time"),
        ("0001-01-01T00:00+01:00", "is not a valid date and time"),
        # Full-width digits are not ISO 8601 (Python's \d would take them).
        ("\uff12\uff10\uff12\uff16-12-01T09:00Z", "is not a time"),
    ],
)
def test_unreadable_times_say_what_to_write(text: str, says: str) -> None:
    with pytest.raises(BadTime) as info:
        parse_at(text)
    assert says in str(info.value)


def test_format_at_reads_back() -> None:
    assert format_at(AT) == "2026-12-01T09:00Z"
    assert parse_at(format_at(AT)) == AT
    odd = AT + timedelta(seconds=5)
    assert format_at(odd) == "2026-12-01T09:00:05Z"
    assert parse_at(format_at(odd)) == odd


def test_schedule_command_parses_with_or_without_at() -> None:
    for text in ("schedule model-api-key at 2026-12-01T09:00Z",
                 "schedule model-api-key AT 2026-12-01T11:00+02:00",
                 "schedule model-api-key 2026-12-01T09:00Z"):
        cmd = parse_command(text)
        assert (cmd.name, cmd.secret, cmd.at) == ("schedule", "model-api-key", AT)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("schedule", "expected a secret and a time"),
        ("schedule model-api-key", "expected a secret and a time"),
        ("schedule model-api-key at", "expected a secret and a time"),
        ("schedule model-api-key at 2026-12-01T09:00", "has no time zone"),
        ("schedule model-api-key at next tuesday", "expected a secret and a time"),
        ("schedule model-api-key at soon", "is not a time"),
    ],
)
def test_bad_schedule_commands_carry_the_usage(text: str, says: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert says in str(info.value)
    assert info.value.usage == USAGE["schedule"] == "/rotate schedule SECRET at 2026-12-01T09:00Z"


# --- what is due when ------------------------------------------------------------------


def test_review_is_due_readiness_lead_before_and_the_start_at_the_time() -> None:
    scheduled, posted = ScheduleStatus.SCHEDULED, ScheduleStatus.REVIEW_POSTED
    review_at = AT - LEAD
    assert next_action(scheduled, AT, LEAD, review_at - timedelta(seconds=1)) is None
    assert next_action(scheduled, AT, LEAD, review_at) is ScheduleAction.POST_REVIEW
    assert next_action(scheduled, AT, LEAD, AT - timedelta(seconds=1)) is (
        ScheduleAction.POST_REVIEW
    )
    # Once posted, nothing until the time itself.
    assert next_action(posted, AT, LEAD, AT - timedelta(seconds=1)) is None
    for status in (scheduled, posted, ScheduleStatus.READINESS_PASSED):
        assert next_action(status, AT, LEAD, AT) is ScheduleAction.START
        assert next_action(status, AT, LEAD, AT + timedelta(days=3)) is ScheduleAction.START
    # Finished schedules never come due again.
    for status in (ScheduleStatus.STARTED, ScheduleStatus.NEEDS_ADMIN, ScheduleStatus.CANCELLED):
        assert next_action(status, AT, LEAD, AT + timedelta(days=1)) is None
        assert next_action(status, AT, LEAD, AT - LEAD) is None


def test_a_shorter_lead_moves_the_review() -> None:
    lead = timedelta(hours=6)
    assert next_action(ScheduleStatus.SCHEDULED, AT, lead, AT - LEAD) is None
    assert next_action(ScheduleStatus.SCHEDULED, AT, lead, AT - lead) is (
        ScheduleAction.POST_REVIEW
    )


# --- readiness -------------------------------------------------------------------------


def test_readiness_passes_only_with_every_owner_and_nothing_blocking() -> None:
    owners = ("U0ALICE", "S0DATAENG")
    ok = readiness_outcome(owners, ["S0DATAENG", "U0ALICE"], [])
    assert ok.passed and ok.reasons == () and ok.missing == ()

    half = readiness_outcome(owners, ["U0ALICE", "U0ALICE"], [])
    assert not half.passed
    assert half.missing == ("S0DATAENG",)
    assert half.reasons == ("not confirmed ready by owner S0DATAENG",)

    blocked = readiness_outcome(owners, owners, ["store 'vault' cannot be read"])
    assert not blocked.passed
    assert blocked.reasons == ("store 'vault' cannot be read",)

    nobody = readiness_outcome((), [], [])
    assert not nobody.passed
    assert "no consumer owners" in nobody.reasons[0]

    # A stranger's confirmation counts for nothing.
    assert not readiness_outcome(owners, ["U0EVE", "U0ALICE"], []).passed


# --- max_age ---------------------------------------------------------------------------


def test_age_counts_from_the_last_finished_rotation_or_first_seen() -> None:
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    first_seen = now - timedelta(days=200)
    rotated = now - timedelta(days=30)
    recent = credential_age(
        last_finished=rotated, first_seen=first_seen, max_age=timedelta(days=90), now=now
    )
    assert recent.since == rotated and recent.rotated_before
    assert recent.age == timedelta(days=30) and not recent.due
    assert due_reminder_slot(recent, now) is None

    never = credential_age(
        last_finished=None, first_seen=first_seen, max_age=timedelta(days=90), now=now
    )
    assert never.since == first_seen and not never.rotated_before
    assert never.due and never.due_since == first_seen + timedelta(days=90)
    assert never.describe() == "not rotated by rotabot since first seen 200d ago (max_age 90d)"


def test_due_reminders_come_once_per_period_from_the_day_it_became_due() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    max_age = timedelta(days=90)

    def slot(at: datetime) -> int | None:
        age = credential_age(last_finished=start, first_seen=start, max_age=max_age, now=at)
        return due_reminder_slot(age, at)

    due = start + max_age
    assert slot(due - timedelta(seconds=1)) is None
    assert slot(due) == 0
    assert slot(due + DUE_REMIND_EVERY - timedelta(seconds=1)) == 0
    assert slot(due + DUE_REMIND_EVERY) == 1
    assert slot(due + 3 * DUE_REMIND_EVERY + timedelta(hours=1)) == 3


# --- the live readiness review ---------------------------------------------------------

CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  admins: [U0SECOPS]
  lanes: [dev, prod]
stores:
  files: {kind: file, path: /unused}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      ingest-dev: {owner: U0DEV, lane: dev, reload: hot,
                   health_check: {url: "http://127.0.0.1:9/healthz"}}
      inference-api: {owner: S0PROD, lane: prod, reload: hot}
      batch: {owner: U0DEV, lane: prod, reload: hot,
              health_check: {url: "http://127.0.0.1:9/healthz"}}
  cutover:
    issuer: {kind: manual, dual_valid: false}
    store: {name: files, path: ai/cutover}
    consumers:
      api: {owner: alice, lane: dev, reload: hot}
"""
NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


class BrokenStore(FileStore):
    """A store whose back end refuses us (as a sealed Vault or a bad token would)."""

    def describe(self, path: str) -> StoreState:
        raise StoreError("permission denied reading secret/metadata/" + path)


class NoIssuer(FakeBackends):
    def issuer_for(self, secret: str) -> ManualIssuer:
        raise IssuerError("issuer of model-api-key (redis-acl): environment variable "
                          "REDIS_ADMIN_URL is not set")


def test_a_reachable_secret_has_only_catalog_warnings(tmp_path: Path) -> None:
    catalog = parse_catalog(CATALOG)
    backends = FakeBackends(FileStore(tmp_path), ManualIssuer())
    review = review_readiness(catalog, backends, "model-api-key", now=NOW)
    assert review.owners == ("U0DEV", "S0PROD") == owners_of(catalog, "model-api-key")
    assert review.blocking == ()
    assert [f.code for f in review.findings] == [NO_HEALTH_CHECK]
    assert "inference-api (prod) has no health_check" in review.warnings[0]
    assert review.checked_at == NOW


def test_an_unreachable_store_blocks_and_says_which_and_why(tmp_path: Path) -> None:
    catalog = parse_catalog(CATALOG)
    backends = FakeBackends(BrokenStore(tmp_path), ManualIssuer())
    review = review_readiness(catalog, backends, "model-api-key", now=NOW)
    (store,) = [f for f in review.findings if f.subject == "store"]
    assert store.blocking and store.code == STORE_UNREACHABLE
    assert "store 'files' (file" in store.message
    assert "ai/model-api-key" in store.message and "permission denied" in store.message
    assert review.lines()[0].startswith("blocking: store: ")


def test_an_issuer_that_cannot_be_built_blocks(tmp_path: Path) -> None:
    catalog = parse_catalog(CATALOG)
    review = review_readiness(
        catalog, NoIssuer(FileStore(tmp_path), ManualIssuer()), "model-api-key", now=NOW
    )
    (issuer,) = [f for f in review.findings if f.subject == "issuer"]
    assert issuer.blocking and issuer.code == ISSUER_UNUSABLE
    assert "REDIS_ADMIN_URL is not set" in issuer.message


def test_non_slack_owners_block_and_a_hard_cutover_is_said_not_refused(tmp_path: Path) -> None:
    catalog = parse_catalog(CATALOG)
    backends = FakeBackends(FileStore(tmp_path), ManualIssuer(keeps_both_valid=False))
    review = review_readiness(catalog, backends, "cutover", now=NOW)
    assert [b for b in review.blocking if "owner 'alice'" in b]
    # A hard cutover is run, not refused: the review (every owner confirming) is what it
    # needs, so the finding warns and blocks nothing.
    assert not any("hard cutover" in b for b in review.blocking)
    # Said once, although both the catalog and the issuer know it.
    assert sum("hard cutover" in w for w in review.warnings) == 1
