"""Scheduled rotations and max_age, as pure functions of stored state and the time.

Nothing here reads a clock, a database or Slack: the schedule service passes ``now`` in, so
every decision (review due, start due, rotation overdue, reminder due) is tested by moving
time rather than by waiting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from bot.domain.durations import format_duration
from bot.domain.errors import RotabotError


class ScheduleStatus(StrEnum):
    SCHEDULED = "scheduled"  # waiting for the readiness review
    REVIEW_POSTED = "review-posted"  # owners are asked to confirm
    READINESS_PASSED = "readiness-passed"  # every owner confirmed, nothing blocking
    STARTED = "started"  # the rotation was started on the day
    NEEDS_ADMIN = "needs-admin"  # readiness did not pass: admins decide
    CANCELLED = "cancelled"  # replaced by a later schedule for the same secret


# A secret has at most one schedule in these states (the database enforces it too).
OPEN_STATUSES: frozenset[ScheduleStatus] = frozenset(
    {ScheduleStatus.SCHEDULED, ScheduleStatus.REVIEW_POSTED, ScheduleStatus.READINESS_PASSED}
)
OPEN_STATUS_VALUES: tuple[str, ...] = tuple(sorted(s.value for s in OPEN_STATUSES))

# A start claimed this long ago without a rotation recorded means the bot stopped mid-start.
STALE_START = timedelta(minutes=2)

# How often an overdue secret is reminded about again (the first reminder comes when it
# becomes due). A week: often enough not to be forgotten, rare enough not to be muted.
DUE_REMIND_EVERY = timedelta(days=7)


class ScheduleAction(StrEnum):
    POST_REVIEW = "post-review"
    START = "start"  # the time has come: start if readiness passed, else ask the admins


BLOCKING = "blocking"
WARNING = "warning"


@dataclass(frozen=True)
class ReviewFinding:
    """One line of a readiness review, in words; ``blocking`` ones stop an unattended start."""

    severity: str  # BLOCKING or WARNING
    subject: str  # "catalog", "store" or "issuer"
    message: str
    code: str = ""

    @property
    def blocking(self) -> bool:
        return self.severity == BLOCKING


@dataclass
class ScheduledRotation:
    """`/rotate schedule SECRET at TIME`: one planned rotation and where its review stands."""

    secret: str
    at: datetime
    created_by: str
    created_at: datetime
    status: ScheduleStatus = ScheduleStatus.SCHEDULED
    id: int | None = None
    review_channel: str | None = None
    review_ts: str | None = None
    reviewed_at: datetime | None = None
    findings: tuple[ReviewFinding, ...] = ()
    rotation_id: int | None = None  # the rotation it started
    outcome: str | None = None  # why it needs an admin, or what replaced it
    changed_at: datetime | None = None  # when the status last changed
    occurrence: str | None = None  # a recurring rotation's occurrence key (`every:`)
    reminded_at: datetime | None = None  # the owners still missing were reminded
    # A hard cutover's review, opened by `/rotate start`: the rotation starts the moment every
    # owner confirmed (and the back ends answer); ``at`` is when the admins are asked instead.
    start_when_ready: bool = False

    @property
    def ref(self) -> str:
        return f"SR-{self.id}" if self.id is not None else "SR-?"

    @property
    def blocking(self) -> tuple[str, ...]:
        return tuple(f.message for f in self.findings if f.blocking)

    @property
    def open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class Confirmation:
    """An owner (user or user group id) confirmed ready, by whom (a member, for a group)."""

    owner: str
    confirmed_by: str
    confirmed_at: datetime


class ScheduleNotFound(RotabotError):
    def __init__(self, ref: str) -> None:
        super().__init__(f"no scheduled rotation {ref}")


class BadTime(ValueError):
    """A schedule time that cannot be read; the message says what to write instead."""


_AT = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[T ](?P<time>\d{2}:\d{2}(?::\d{2})?)"
    r"(?P<zone>Z|[+-]\d{2}:?\d{2})$",
    re.IGNORECASE | re.ASCII,
)


def parse_at(text: str) -> datetime:
    """``2026-12-01T09:00Z`` (or with seconds, or an offset like ``+02:00``) as UTC.

    A time without a zone is refused: "09:00" means different instants to the admin who
    typed it and to the server, and a rotation that starts an hour off is an incident.
    """
    raw = text.strip()
    match = _AT.match(raw)
    if not match:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw, re.ASCII):
            raise BadTime(f"`{raw}` has no time of day: write it like {raw}T09:00Z")
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2})?", raw, re.ASCII | re.I):
            raise BadTime(
                f"`{raw}` has no time zone: add Z for UTC (like {raw}Z) or an offset like +02:00"
            )
        raise BadTime(f"`{raw}` is not a time: write it like 2026-12-01T09:00Z (UTC)")
    zone = match.group("zone").upper()
    if zone != "Z" and ":" not in zone:
        zone = f"{zone[:3]}:{zone[3:]}"
    iso = f"{match.group('date')}T{match.group('time')}{'+00:00' if zone == 'Z' else zone}"
    try:
        return datetime.fromisoformat(iso).astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadTime(f"`{raw}` is not a valid date and time (check the day and hour)") from None


def format_at(at: datetime) -> str:
    """The form `parse_at` reads, in UTC: 2026-12-01T09:00Z."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ" if at.second else "%Y-%m-%dT%H:%MZ")


def review_time(at: datetime, lead: timedelta) -> datetime:
    """When the readiness review for a rotation scheduled at ``at`` is posted."""
    return at - lead


def next_action(
    status: ScheduleStatus, at: datetime, lead: timedelta, now: datetime
) -> ScheduleAction | None:
    """What a schedule needs now, if anything.

    On the day, a schedule whose review was never posted (the bot was down through the
    whole lead time) goes straight to START, which asks the admins: nobody confirmed.
    """
    if status not in OPEN_STATUSES:
        return None
    if now >= at:
        return ScheduleAction.START
    if status is ScheduleStatus.SCHEDULED and now >= review_time(at, lead):
        return ScheduleAction.POST_REVIEW
    return None


def owner_reminder_due(item: ScheduledRotation, lead: timedelta, now: datetime) -> bool:
    """Whether to remind the owners who have not confirmed: once, halfway between the review
    and the start, so they hear of it again while there is still time to answer."""
    return (
        item.status is ScheduleStatus.REVIEW_POSTED
        and item.reminded_at is None
        and item.at - lead / 2 <= now < item.at
    )


@dataclass(frozen=True)
class Readiness:
    """Whether a scheduled rotation may start by itself, and if not, why (in words)."""

    passed: bool
    reasons: tuple[str, ...] = ()
    confirmed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def readiness_outcome(
    owners: Sequence[str], confirmed: Iterable[str], blocking: Sequence[str]
) -> Readiness:
    """Readiness passes when every owner confirmed and nothing blocks.

    A secret with no owners at all never passes by itself: nobody could have confirmed.
    """
    done = set(confirmed)
    have = tuple(o for o in owners if o in done)
    missing = tuple(o for o in owners if o not in done)
    reasons = list(blocking)
    if not owners:
        reasons.append("no consumer owners are listed, so nobody could confirm readiness")
    if missing:
        reasons.append("not confirmed ready by owner " + ", owner ".join(missing))
    return Readiness(passed=not reasons, reasons=tuple(reasons), confirmed=have, missing=missing)


@dataclass(frozen=True)
class Age:
    """How old a secret's credential is against its max_age."""

    since: datetime  # the last finished rotation, or when the bot first saw the secret
    age: timedelta
    max_age: timedelta
    rotated_before: bool  # False: ``since`` is when rotabot first saw it

    @property
    def due(self) -> bool:
        return self.age >= self.max_age

    @property
    def due_since(self) -> datetime:
        return self.since + self.max_age

    def describe(self) -> str:
        what = "last rotated" if self.rotated_before else "not rotated by rotabot since first seen"
        return (
            f"{what} {format_duration(_whole_days(self.age))} ago "
            f"(max_age {format_duration(self.max_age)})"
        )


def _whole_days(delta: timedelta) -> timedelta:
    # "93d ago" reads better than "8035200s ago"; below a day keep what there is.
    return timedelta(days=delta.days) if delta >= timedelta(days=1) else delta


def credential_age(
    *,
    last_finished: datetime | None,
    first_seen: datetime,
    max_age: timedelta,
    now: datetime,
) -> Age:
    since = last_finished if last_finished is not None else first_seen
    return Age(
        since=since,
        age=max(now - since, timedelta(0)),
        max_age=max_age,
        rotated_before=last_finished is not None,
    )


def due_reminder_slot(age: Age, now: datetime, every: timedelta = DUE_REMIND_EVERY) -> int | None:
    """Which reminder an overdue secret is on (0 when it just became due, 1 a period later,
    ...), or None while it is not due. A slot is posted once; the service records it."""
    if not age.due or now < age.due_since:
        return None
    return int((now - age.due_since) / every)


@dataclass(frozen=True)
class DueSecret:
    """A secret past its max_age, with the reminder slot it is on."""

    secret: str
    age: Age
    slot: int
    admins: tuple[str, ...] = field(default_factory=tuple)


# --- recurring rotation (`every:`) -------------------------------------------------------


def natural_due(*, last_finished: datetime | None, first_seen: datetime,
                every: timedelta) -> datetime:
    """When a recurring secret is next due: ``every`` after its last finished rotation, or
    after rotabot first saw it when it never rotated here."""
    return (last_finished if last_finished is not None else first_seen) + every


def spread_dues(
    dues: Sequence[tuple[str, datetime]],
    offset: timedelta,
    last_active: Mapping[str, datetime] | None = None,
) -> dict[str, datetime]:
    """Keep a group's recurring rotations at least ``offset`` apart.

    In order of their own due time (catalog order on a tie) each lands no earlier than
    ``offset`` after the one before, and no earlier than ``offset`` after another member was
    last active (``last_active``: when its running rotation started, else when its last one
    finished), so a member that ran late does not drag its partner right behind it. Only
    ever later.
    """
    active = last_active or {}
    ordered = sorted(enumerate(dues), key=lambda item: (item[1][1], item[0]))
    out: dict[str, datetime] = {}
    previous: datetime | None = None
    for _, (secret, due) in ordered:
        floors = [at + offset for other, at in active.items() if other != secret]
        if previous is not None:
            floors.append(previous + offset)
        due = max([due, *floors])
        out[secret] = previous = due
    return out


@dataclass(frozen=True)
class Occurrence:
    """A recurring secret's next occurrence: due at ``due``, starting at ``at``."""

    secret: str
    due: datetime
    at: datetime

    @property
    def key(self) -> str:
        return occurrence_key(self.secret, self.due)


def occurrence_key(secret: str, due: datetime) -> str:
    """The unique name of one occurrence: a second replica deriving it gets the same key."""
    return f"{secret}@{format_at(due)}"


def occurrence_at(due: datetime, lead: timedelta, now: datetime) -> datetime | None:
    """When an occurrence due at ``due`` should start, or None while its review is not due.

    An occurrence already overdue when derived (`every` just added to a secret last rotated
    long ago, or the bot was down) gives the owners the whole ``lead`` to confirm, instead of
    going straight to the admins because nobody could have confirmed in time.
    """
    if now < review_time(due, lead):
        return None
    return due if now <= due else now + lead
