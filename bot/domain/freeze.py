"""Freeze windows: when start, switch and revoke are refused, and when the freeze ends.

Pure arithmetic over wall-clock time in a window's IANA time zone (``zoneinfo`` is the
standard library): a window is a date range, weekly spans ("Fri 16:00-Mon 08:00", whole
days), or "outside" weekly spans (business hours only). Times are compared in UTC; spans are
laid out in local wall time, so a weekly window keeps its local hours across a DST change.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.domain.errors import RotabotError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEK = 7 * 24 * 60  # minutes
_HHMM = r"([01]?\d|2[0-4]):([0-5]\d)"
# "Fri 16:00-Mon 08:00": one continuous span, across midnight or the week's end.
_SPAN = re.compile(rf"^([a-z]{{3}})\w*\s+{_HHMM}\s*-\s*([a-z]{{3}})\w*\s+{_HHMM}$")
# "Mon-Fri 09:00-17:00" or "Sat 10:00-12:00": the same hours on each of those days.
_DAILY = re.compile(rf"^([a-z]{{3}})\w*(?:\s*-\s*([a-z]{{3}})\w*)?\s+{_HHMM}\s*-\s*{_HHMM}$")
# The audit action of an admin's override of a freeze window (detail: action, window, until).
FREEZE_OVERRIDE = "freeze.override"
# The longest chain of back-to-back windows followed when asking when a freeze ends.
_CHAIN = 64


class BadWindow(ValueError):
    """A window that cannot be read; the text says what to write instead."""


class Frozen(RotabotError):
    """An action refused inside a freeze window; the text names the window and its end."""

    def __init__(
        self, freeze: Freeze, action: str, command: str, queue_rotation: int | None = None
    ) -> None:
        self.freeze = freeze
        # A switch refused inside a window may be queued for its end (bot/domain/queued_switch).
        self.queue_rotation = queue_rotation
        queue = (
            f" Or have rotabot switch once, when it ends: `{command} --after-freeze`"
            if queue_rotation is not None else ""
        )
        super().__init__(
            f"frozen: {freeze.describe()}; {action} is refused until then, nothing changed. "
            f"An admin may override with a reason (audited and posted): `{command} "
            f'--override-freeze "why"`.{queue}'
        )


@dataclass(frozen=True)
class WeeklySpan:
    """Minutes from Monday 00:00 local: [start, end), wrapping past Sunday when end <= start."""

    start: int
    end: int

    def contains(self, minute: int) -> bool:
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def minutes_to_end(self, minute: int) -> int:
        return (self.end - minute) % _WEEK or _WEEK

    def minutes_to_start(self, minute: int) -> int:
        return (self.start - minute) % _WEEK


@dataclass(frozen=True)
class FreezeWindow:
    name: str
    zone: str  # IANA name, e.g. Europe/Berlin
    # A date range in local wall time [start, end); or weekly spans; ``outside``: frozen
    # whenever the local time is in none of the spans (business hours only).
    start: datetime | None = None
    end: datetime | None = None
    spans: tuple[WeeklySpan, ...] = ()
    outside: bool = False

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def frozen_until(self, now: datetime) -> datetime | None:
        """The UTC instant this window ends, if ``now`` (aware) is inside it; else None."""
        local = now.astimezone(self.tz)
        wall = local.replace(tzinfo=None)
        if self.start is not None and self.end is not None:
            start = self.start.replace(tzinfo=self.tz).astimezone(UTC)
            end = self.end.replace(tzinfo=self.tz).astimezone(UTC)
            return end if start <= now < end else None
        minute = wall.weekday() * 24 * 60 + wall.hour * 60 + wall.minute
        seconds = timedelta(seconds=wall.second, microseconds=wall.microsecond)
        inside = [s for s in self.spans if s.contains(minute)]
        if self.outside:
            if inside or not self.spans:
                return None
            ahead = min(s.minutes_to_start(minute) for s in self.spans)
        else:
            if not inside:
                return None
            ahead = max(s.minutes_to_end(minute) for s in inside)
        # Wall-clock arithmetic, then back to UTC: "until Mon 08:00" stays 08:00 local when
        # the weekend holds a DST change.
        end_wall = wall - seconds + timedelta(minutes=ahead)
        return _wall_to_utc(end_wall, self.tz)


def _wall_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """A local wall time as UTC. A time a DST jump skips (02:30 on the spring-forward night)
    reads with the offset before the jump (PEP 495, fold=0): an hour later on the new clock;
    a repeated one (autumn) is its first occurrence."""
    return wall.replace(tzinfo=tz).astimezone(UTC)


@dataclass(frozen=True)
class Freeze:
    """The window in force now and the instant the freeze (any chained windows) ends."""

    window: FreezeWindow
    until: datetime  # UTC

    def describe(self) -> str:
        local = self.until.astimezone(self.window.tz)
        return f"{self.window.name} until {local:%Y-%m-%d %H:%M} {self.window.zone}"

    def detail(self) -> dict[str, str]:
        return {"window": self.window.name, "until": self.until.isoformat()}


def freeze_at(windows: Sequence[FreezeWindow], now: datetime) -> Freeze | None:
    """The freeze in force at ``now`` (aware), or None. Its end follows windows that start
    where another ends (a weekend inside the year-end freeze), so waiting for ``until``
    never lands inside another window."""
    first: FreezeWindow | None = None
    until = now
    for _ in range(_CHAIN):
        ends = [(w, end) for w in windows if (end := w.frozen_until(until)) is not None]
        if not ends:
            break
        window, end = max(ends, key=lambda pair: pair[1])
        first = first or window
        until = end
    if first is None:
        return None
    return Freeze(first, until)


# --- reading what the catalog says -------------------------------------------------------


def zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadWindow(
            f"unknown time zone {name!r}: use an IANA name like Europe/Berlin or UTC"
        ) from None
    return name


def parse_dates(text: str) -> tuple[datetime, datetime]:
    """``2026-12-20T00:00 .. 2027-01-04T00:00`` (local wall times, end excluded)."""
    parts = [p.strip() for p in text.split("..")]
    if len(parts) != 2:
        raise BadWindow(f"expected 'START .. END' like '2026-12-20T00:00 .. 2027-01-04T00:00', "
                        f"got {text!r}")
    try:
        start, end = (datetime.fromisoformat(p) for p in parts)
    except ValueError:
        raise BadWindow(f"{text!r}: write each date as 2026-12-20T00:00") from None
    if start.tzinfo is not None or end.tzinfo is not None:
        raise BadWindow(f"{text!r}: leave the offset out; the window's time_zone applies")
    if end <= start:
        raise BadWindow(f"{text!r}: the end must come after the start")
    return start, end


def _day(word: str) -> int:
    try:
        return DAYS.index(word[:3].lower())
    except ValueError:
        raise BadWindow(f"unknown day {word!r}: use mon, tue, wed, thu, fri, sat, sun") from None


def _minute(h: str, m: str) -> int:
    minutes = int(h) * 60 + int(m)
    if minutes > 24 * 60:
        raise BadWindow(f"{h}:{m} is not a time of day")
    return minutes


def parse_weekly(text: str) -> tuple[WeeklySpan, ...]:
    """'Fri 16:00-Mon 08:00' (one span) or 'Mon-Fri 09:00-17:00' (those hours each day)."""
    words = " ".join(text.lower().split())
    span = _SPAN.match(words)
    if span:
        d1, h1, m1, d2, h2, m2 = span.groups()
        start = _day(d1) * 1440 + _minute(h1, m1)
        end = _day(d2) * 1440 + _minute(h2, m2)
        if start % _WEEK == end % _WEEK:
            raise BadWindow(f"{text!r} starts where it ends")
        return (WeeklySpan(start % _WEEK, end % _WEEK),)
    daily = _DAILY.match(words)
    if daily:
        d1, d2, h1, m1, h2, m2 = daily.groups()
        first, last = _day(d1), _day(d2 or d1)
        start, end = _minute(h1, m1), _minute(h2, m2)
        if start == end:
            raise BadWindow(f"{text!r} starts where it ends")
        days = [(first + i) % 7 for i in range((last - first) % 7 + 1)]
        # 22:00-06:00 runs into the next morning.
        length = (end - start) % 1440 or 1440
        return tuple(
            WeeklySpan((d * 1440 + start) % _WEEK, (d * 1440 + start + length) % _WEEK)
            for d in days
        )
    raise BadWindow(
        f"cannot read {text!r}: write 'Fri 16:00-Mon 08:00' (one span) or "
        "'Mon-Fri 09:00-17:00' (the same hours on each day)"
    )


def whole_days(days: Iterable[str]) -> tuple[WeeklySpan, ...]:
    spans = []
    for word in days:
        d = _day(word)
        spans.append(WeeklySpan(d * 1440, ((d + 1) * 1440) % _WEEK))
    if not spans:
        raise BadWindow("list at least one day, e.g. [sat, sun]")
    return tuple(spans)
