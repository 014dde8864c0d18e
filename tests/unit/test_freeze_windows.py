"""Freeze windows: date ranges, weekly spans across midnight and the week's end, business
hours only, DST, chained windows, and how the catalog reads them."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest

from bot.catalog import CatalogInvalid, parse_catalog
from bot.domain.freeze import FreezeWindow, freeze_at, parse_dates, parse_weekly, whole_days

BERLIN = "Europe/Berlin"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0,
        second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def weekly(text: str, tz: str = BERLIN, outside: bool = False) -> FreezeWindow:
    return FreezeWindow("weekend", tz, spans=parse_weekly(text), outside=outside)


def year_end() -> FreezeWindow:
    start, end = parse_dates("2026-12-20T00:00 .. 2027-01-04T00:00")
    return FreezeWindow("year-end freeze", BERLIN, start=start, end=end)


def test_date_range_is_local_and_excludes_its_end() -> None:
    w = year_end()
    # 2026-12-19 23:00 UTC is 2026-12-20 00:00 in Berlin (CET, +1).
    assert w.frozen_until(utc(2026, 12, 19, 22, 59)) is None
    assert w.frozen_until(utc(2026, 12, 19, 23, 0)) == utc(2027, 1, 3, 23, 0)
    assert w.frozen_until(utc(2027, 1, 3, 23, 0)) is None
    freeze = freeze_at([w], utc(2026, 12, 24, 12))
    assert freeze is not None
    assert freeze.describe() == "year-end freeze until 2027-01-04 00:00 Europe/Berlin"


def test_weekly_span_across_the_weeks_end() -> None:
    w = weekly("Fri 16:00-Mon 08:00")
    # 2026-12-04 is a Friday; Berlin is UTC+1 in December.
    assert w.frozen_until(utc(2026, 12, 4, 14, 59)) is None
    monday_8 = utc(2026, 12, 7, 7, 0)
    assert w.frozen_until(utc(2026, 12, 4, 15, 0)) == monday_8
    assert w.frozen_until(utc(2026, 12, 6, 23, 30)) == monday_8  # Sunday night
    assert w.frozen_until(utc(2026, 12, 7, 6, 59, 30)) == monday_8
    assert w.frozen_until(monday_8) is None
    assert w.frozen_until(utc(2026, 12, 9, 12)) is None  # Wednesday


def test_daily_hours_across_midnight() -> None:
    w = weekly("Mon-Fri 22:00-06:00", tz="UTC")
    assert w.frozen_until(utc(2026, 12, 1, 23, 0)) == utc(2026, 12, 2, 6, 0)  # Tue night
    assert w.frozen_until(utc(2026, 12, 2, 5, 0)) == utc(2026, 12, 2, 6, 0)
    assert w.frozen_until(utc(2026, 12, 2, 12, 0)) is None
    # Friday 22:00 runs into Saturday 06:00; Saturday 22:00 is not frozen.
    assert w.frozen_until(utc(2026, 12, 5, 3, 0)) == utc(2026, 12, 5, 6, 0)
    assert w.frozen_until(utc(2026, 12, 5, 23, 0)) is None


def test_weekend_across_spring_dst_keeps_local_hours() -> None:
    # Berlin goes to CEST (+2) on Sunday 2027-03-28: Monday 08:00 local is 06:00 UTC.
    w = weekly("Fri 16:00-Mon 08:00")
    assert w.frozen_until(utc(2027, 3, 26, 15, 30)) == utc(2027, 3, 29, 6, 0)
    # And back to CET on 2026-10-25: Monday 08:00 local is 07:00 UTC.
    assert w.frozen_until(utc(2026, 10, 23, 14, 30)) == utc(2026, 10, 26, 7, 0)


def test_a_window_ending_in_the_skipped_hour_ends_after_the_jump() -> None:
    w = weekly("Sun 01:00-Sun 02:30")
    end = w.frozen_until(utc(2027, 3, 28, 0, 30))  # 01:30 CET
    assert end is not None and end.astimezone(UTC) == utc(2027, 3, 28, 1, 30)  # 03:30 CEST


def test_whole_days_chain_into_one_freeze() -> None:
    w = FreezeWindow("weekend", "UTC", spans=whole_days(["sat", "sun"]))
    freeze = freeze_at([w], utc(2026, 12, 5, 10))  # Saturday
    assert freeze is not None and freeze.until == utc(2026, 12, 7, 0, 0)


def test_business_hours_only() -> None:
    w = weekly("Mon-Fri 09:00-17:00", tz="UTC", outside=True)
    assert w.frozen_until(utc(2026, 12, 1, 10)) is None
    assert w.frozen_until(utc(2026, 12, 1, 17)) == utc(2026, 12, 2, 9)
    assert w.frozen_until(utc(2026, 12, 4, 18)) == utc(2026, 12, 7, 9)  # Friday evening


def test_chained_windows_name_the_first_and_end_with_the_last() -> None:
    # The year-end freeze ends on Monday 2027-01-04 00:00, inside "Fri 16:00-Mon 08:00".
    freeze = freeze_at([year_end(), weekly("Fri 16:00-Mon 08:00")], utc(2026, 12, 28))
    assert freeze is not None
    assert freeze.window.name == "year-end freeze"
    assert freeze.until == utc(2027, 1, 4, 7, 0)
    assert freeze_at([year_end()], utc(2027, 1, 5)) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Fri 16:00-Fri 16:00", "starts where it ends"),
        ("Fry 16:00-Mon 08:00", "unknown day"),
        ("weekends", "cannot read"),
        ("Mon 25:00-Tue 01:00", "cannot read"),
    ],
)
def test_unreadable_weekly_spans_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_weekly(text)


CATALOG = textwrap.dedent("""\
    version: 1
    defaults:
      channel: C0ROTATE
      admins: [U0SECOPS]
      freeze:
        - {name: year-end freeze, time_zone: Europe/Berlin,
           dates: "2026-12-20T00:00 .. 2027-01-04T00:00"}
    stores:
      vault: {kind: vault-kv2, url: "http://127.0.0.1:8200", token_env: VAULT_TOKEN}
    secrets:
      api-key:
        issuer: {kind: manual}
        store: {name: vault, path: ai/api-key}
        break_glass: {approvals: 2, within: 15m}
        freeze:
          - {name: weekend, time_zone: Europe/Berlin, weekly: "Fri 16:00-Mon 08:00"}
        consumers:
          app: {owner: U0ALICE, lane: prod, reload: hot}
""")


def test_catalog_windows_add_to_the_defaults() -> None:
    catalog = parse_catalog(CATALOG)
    names = [w.name for w in catalog.freeze_windows("api-key")]
    assert names == ["year-end freeze", "weekend"]
    spec = catalog.secret("api-key").break_glass
    assert spec is not None and spec.approvals == 2 and spec.within.total_seconds() == 900


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('time_zone: Europe/Berlin, weekly: "Fri 16:00-Mon 08:00"', ""),
        ('time_zone: Mars/Olympus, weekly: "Fri 16:00-Mon 08:00"', "unknown time zone"),
        ('weekly: "Fri 16:00-Mon 08:00", days: [sat]', "exactly one of"),
        ('dates: "2027-01-04T00:00 .. 2026-12-20T00:00"', "must come after"),
    ],
)
def test_bad_windows_are_named_with_line_and_fix(bad: str, message: str) -> None:
    text = CATALOG.replace('time_zone: Europe/Berlin, weekly: "Fri 16:00-Mon 08:00"', bad)
    if not message:
        parse_catalog(text)
        return
    with pytest.raises(CatalogInvalid) as caught:
        parse_catalog(text)
    assert message in str(caught.value)
    assert "catalog.yml:16" in str(caught.value)
