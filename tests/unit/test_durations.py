"""Durations as written in the catalog: parsing, refusing, formatting."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.domain.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("15m", timedelta(minutes=15)),
        ("2h", timedelta(hours=2)),
        ("3d", timedelta(days=3)),
        ("90d", timedelta(days=90)),
        ("0s", timedelta(0)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2d 3h 4m 5s", timedelta(days=2, hours=3, minutes=4, seconds=5)),
        (" 45s ", timedelta(seconds=45)),
    ],
)
def test_parse_duration_accepts(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a duration like 30s, 15m, 2h or 3d, got ''"),
        ("30", "expected a duration like 30s, 15m, 2h or 3d, got '30'"),
        ("2 hours", "expected a duration like 30s, 15m, 2h or 3d, got '2 hours'"),
        ("1w", "expected a duration like 30s, 15m, 2h or 3d, got '1w'"),
        ("-5m", "expected a duration like 30s, 15m, 2h or 3d, got '-5m'"),
        ("1.5h", "expected a duration like 30s, 15m, 2h or 3d, got '1.5h'"),
        ("2H", "expected a duration like 30s, 15m, 2h or 3d, got '2H'"),
        ("30m 1h", "expected a duration like 30s, 15m, 2h or 3d (units largest first, each "
                   "once), got '30m 1h'"),
        ("1h 1h", "expected a duration like 30s, 15m, 2h or 3d (units largest first, each "
                  "once), got '1h 1h'"),
    ],
)
def test_parse_duration_refuses_with_clear_message(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == message


def test_parse_duration_refuses_non_text() -> None:
    with pytest.raises(ValueError, match=r"got 30$"):
        parse_duration(30)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(hours=2), "2h"),
        (timedelta(hours=1, minutes=30), "1h 30m"),
        (timedelta(seconds=45), "45s"),
        (timedelta(days=90), "90d"),
        (timedelta(days=1, seconds=1), "1d 1s"),
        (timedelta(0), "0s"),
        (timedelta(seconds=59, microseconds=999_999), "59s"),
        (timedelta(minutes=-5), "-5m"),
    ],
)
def test_format_duration(td: timedelta, text: str) -> None:
    assert format_duration(td) == text


@pytest.mark.parametrize("text", ["30s", "15m", "2h", "3d", "1h 30m", "2d 3h 4m 5s"])
def test_format_reads_back(text: str) -> None:
    assert format_duration(parse_duration(text)) == text
