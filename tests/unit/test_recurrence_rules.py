"""Recurring rotation (`every:`) and paired/exclusive secrets (`groups:`), pure: the date
arithmetic of occurrences and offsets, and what the catalog loader accepts and refuses."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta

import pytest

from bot.catalog import CatalogInvalid, parse_catalog
from bot.catalog.readiness import EVERY_WITHIN_LEAD, MAX_AGE_BEFORE_EVERY, readiness_findings
from bot.domain.schedule import (
    Occurrence,
    ScheduledRotation,
    ScheduleStatus,
    natural_due,
    occurrence_at,
    occurrence_key,
    owner_reminder_due,
    spread_dues,
)

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)
LEAD = 2 * DAY


# --- when an occurrence is due -------------------------------------------------------------


def test_due_counts_from_the_last_finished_rotation_else_from_first_seen() -> None:
    assert natural_due(last_finished=None, first_seen=T0, every=90 * DAY) == T0 + 90 * DAY
    finished = T0 + 95 * DAY  # a rotation that finished late moves the next one with it
    assert natural_due(last_finished=finished, first_seen=T0, every=90 * DAY) == (
        finished + 90 * DAY
    )


def test_an_occurrence_is_made_lead_before_it_is_due_and_starts_when_due() -> None:
    due = T0 + 90 * DAY
    assert occurrence_at(due, LEAD, due - LEAD - timedelta(seconds=1)) is None
    assert occurrence_at(due, LEAD, due - LEAD) == due
    assert occurrence_at(due, LEAD, due) == due


def test_an_overdue_occurrence_still_gives_the_owners_the_whole_lead() -> None:
    due = T0 + 90 * DAY
    now = due + 30 * DAY  # `every` added to a secret last rotated long ago, or the bot was down
    assert occurrence_at(due, LEAD, now) == now + LEAD


def test_the_occurrence_key_is_the_same_for_every_replica_that_derives_it() -> None:
    occurrence = Occurrence(secret="a", due=T0, at=T0 + DAY)
    assert occurrence.key == occurrence_key("a", T0) == "a@2026-12-01T09:00Z"
    assert occurrence_key("a", T0 + timedelta(seconds=1)) != occurrence.key


def test_owners_are_reminded_once_halfway_through_the_lead_while_they_are_asked() -> None:
    at = T0 + 10 * DAY
    item = ScheduledRotation(secret="a", at=at, created_by="rotabot", created_at=T0,
                             status=ScheduleStatus.REVIEW_POSTED)
    assert not owner_reminder_due(item, LEAD, at - DAY - timedelta(seconds=1))
    assert owner_reminder_due(item, LEAD, at - DAY)
    assert not owner_reminder_due(item, LEAD, at)  # on the day it starts or goes to the admins
    item.reminded_at = at - DAY
    assert not owner_reminder_due(item, LEAD, at - DAY)
    item.reminded_at, item.status = None, ScheduleStatus.READINESS_PASSED
    assert not owner_reminder_due(item, LEAD, at - DAY)  # everyone confirmed


# --- offsets keep a group's recurring rotations apart ---------------------------------------


def test_a_pair_first_seen_together_lands_offset_apart_in_catalog_order() -> None:
    due = T0 + 90 * DAY
    assert spread_dues([("a", due), ("b", due)], 7 * DAY) == {"a": due, "b": due + 7 * DAY}
    assert spread_dues([("b", due), ("a", due)], 7 * DAY) == {"b": due, "a": due + 7 * DAY}


def test_dues_already_apart_are_left_alone_and_close_ones_only_move_later() -> None:
    assert spread_dues([("a", T0), ("b", T0 + 10 * DAY)], 7 * DAY) == {
        "a": T0, "b": T0 + 10 * DAY
    }
    # b is due first; a, due two days later, is pushed to a week after b.
    assert spread_dues([("a", T0 + 2 * DAY), ("b", T0)], 7 * DAY) == {
        "b": T0, "a": T0 + 7 * DAY
    }
    three = spread_dues([("a", T0), ("b", T0), ("c", T0)], 7 * DAY)
    assert three == {"a": T0, "b": T0 + 7 * DAY, "c": T0 + 14 * DAY}


def test_a_partner_that_was_just_active_pushes_the_other_offset_after_it() -> None:
    # a ran late and finished at T0; b's own due (T0 - 1d) would put it right behind a.
    dues = [("a", T0 + 90 * DAY), ("b", T0 - DAY)]
    assert spread_dues(dues, 7 * DAY, {"a": T0}) == {"b": T0 + 7 * DAY, "a": T0 + 90 * DAY}
    # Its own last activity does not hold a secret back.
    assert spread_dues([("a", T0)], 7 * DAY, {"a": T0}) == {"a": T0}


# --- the catalog ---------------------------------------------------------------------------

CATALOG = textwrap.dedent("""\
    version: 1
    defaults:
      channel: C0ROTATE
      every: 90d
    stores:
      files: {kind: file, path: ./secrets}
    secrets:
      warehouse-a: {issuer: {kind: manual}, store: {name: files, path: a}}
      warehouse-b: {issuer: {kind: manual}, store: {name: files, path: b}, every: 30d}
      other: {issuer: {kind: manual}, store: {name: files, path: o}}
    groups:
      warehouse-pair:
        secrets: [warehouse-a, warehouse-b]
        exclusive: true
        offset: 7d
    """)


def test_every_comes_from_defaults_unless_the_secret_sets_it_and_groups_are_read() -> None:
    catalog = parse_catalog(CATALOG)
    assert catalog.settings_for("warehouse-a").every == 90 * DAY
    assert catalog.settings_for("warehouse-b").every == 30 * DAY
    assert catalog.exclusive_group("warehouse-a") == ("warehouse-pair", ("warehouse-b",))
    assert catalog.exclusive_group("other") is None
    assert catalog.offset_group("warehouse-b") == (("warehouse-a", "warehouse-b"), 7 * DAY)
    assert catalog.offset_group("other") is None


def test_a_group_that_is_not_exclusive_only_spreads_recurrences() -> None:
    catalog = parse_catalog(CATALOG.replace("exclusive: true", "exclusive: false"))
    assert catalog.exclusive_group("warehouse-a") is None
    assert catalog.offset_group("warehouse-a") is not None


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("secrets: [warehouse-a, warehouse-b]", "secrets: [warehouse-a, warehouse-c]",
         "catalog.yml:13: groups.warehouse-pair.secrets[1]: secret 'warehouse-c' is not "
         "defined under secrets (did you mean 'warehouse-b'?)"),
        ("secrets: [warehouse-a, warehouse-b]", "secrets: [warehouse-a, warehouse-a]",
         "catalog.yml:13: groups.warehouse-pair.secrets[1]: secret 'warehouse-a' is listed "
         "twice"),
        ("secrets: [warehouse-a, warehouse-b]", "secrets: [warehouse-a]",
         "catalog.yml:13: groups.warehouse-pair.secrets: list at least two secrets"),
        ("offset: 7d", "offset: soon",
         "catalog.yml:15: groups.warehouse-pair.offset:"),
        ("offset: 7d", "offset: 7d\n  again: {secrets: [other, warehouse-b]}",
         "catalog.yml:16: groups.again.secrets[1]: secret 'warehouse-b' is already in "
         "exclusive group 'warehouse-pair'; a secret may be in one exclusive group only"),
        ("every: 90d", "every: often",
         "catalog.yml:4: defaults.every:"),
    ],
)
def test_group_and_every_mistakes_are_named_with_file_and_line(
    old: str, new: str, expected: str
) -> None:
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(CATALOG.replace(old, new, 1))
    assert any(str(e).startswith(expected) for e in caught.value.errors), caught.value.errors


def test_every_within_the_lead_or_above_max_age_is_a_readiness_warning() -> None:
    text = CATALOG.replace("every: 90d", "every: 90d\n  max_age: 60d").replace(
        "path: b}, every: 30d}", "path: b}, every: 1d}")
    found = {(f.code, f.field, f.line) for f in readiness_findings(parse_catalog(text))}
    assert (EVERY_WITHIN_LEAD, "secrets.warehouse-b.every", 10) in found
    assert (MAX_AGE_BEFORE_EVERY, "defaults.every", 4) in found  # a's 90d, from defaults
    assert not any(f.secret == "warehouse-b" and f.code == MAX_AGE_BEFORE_EVERY
                   for f in readiness_findings(parse_catalog(text)))
    assert not any(f.code in (EVERY_WITHIN_LEAD, MAX_AGE_BEFORE_EVERY)
                   for f in readiness_findings(parse_catalog(CATALOG)))


def test_a_secret_may_be_in_one_exclusive_and_another_plain_group() -> None:
    text = CATALOG + "  reporting:\n    secrets: [warehouse-b, other]\n    exclusive: false\n"
    assert parse_catalog(text).exclusive_group("other") is None
