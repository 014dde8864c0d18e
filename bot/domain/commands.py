"""Parse `/rotate ...` text into a command, with errors that carry the usage line."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bot.domain.durations import parse_duration

USAGE = {
    "help": "/rotate help",
    "list": "/rotate list",
    "secrets": "/rotate secrets",
    "map": "/rotate map SECRET",
    "start": "/rotate start SECRET [--overlap 24h] [--observe 2h] [--dry-run] [--urgent] "
    '[--override-freeze "why"]',
    "status": "/rotate status R-N",
    "switch": '/rotate switch R-N [--override-freeze "why" | --after-freeze | '
    "--cancel-after-freeze]",
    "revoke": '/rotate revoke R-N [--override-freeze "why"]',
    "rollback": "/rotate rollback R-N",
    "cancel": "/rotate cancel R-N",
    "resume": "/rotate resume R-N",
    "add-consumer": "/rotate add-consumer R-N CONSUMER",
    "history": "/rotate history SECRET",
    "schedule": "/rotate schedule SECRET at 2026-12-01T09:00Z",
    "reload": "/rotate reload",
}
# What each subcommand does, for `/rotate help`; "(admins)" where only the secret's admins may.
DESCRIPTIONS = {
    "help": "this help",
    "list": "the rotations running now and whose turn it is",
    "secrets": "every secret in the catalog, with its lanes and any running rotation",
    "map": "where a secret is used: lanes, consumers, owners, health checks",
    "start": "start a rotation (admins; a hard cutover opens its readiness review first); "
    "--dry-run shows the plan and changes nothing (anyone)",
    "status": "a rotation's message, its evidence and what blocks revocation",
    "switch": "make the new credential current once every consumer validated (admins); "
    "inside a freeze, --after-freeze has rotabot switch once when it ends",
    "revoke": "revoke the old credential once the gate is open (admins)",
    "rollback": "make the previous credential current again, before revocation (admins)",
    "cancel": "stop a rotation before the switch (admins)",
    "resume": "continue a rotation paused by a failure (admins)",
    "add-consumer": "add a consumer the catalog gained (after `/rotate reload`) to a "
    "rotation in flight, before its switch (admins)",
    "history": "a secret's past rotations",
    "schedule": "plan a rotation with a readiness review before it (admins)",
    "reload": "read the catalog file again and use it if valid, on the replica that answers "
    "(admins)",
}
SUBCOMMANDS = tuple(USAGE)
_ROTATION_REF = re.compile(r"^[Rr]-?(\d{1,9})$")


class CommandError(Exception):
    """Bad input: ``str(exc)`` says what is wrong; ``usage`` is the line to show."""

    def __init__(self, message: str, usage: str) -> None:
        super().__init__(message)
        self.usage = usage


@dataclass(frozen=True)
class Command:
    name: str
    secret: str | None = None
    rotation_id: int | None = None
    overlap: timedelta | None = None
    observe: timedelta | None = None
    dry_run: bool = False
    urgent: bool = False
    extra: tuple[str, ...] = field(default_factory=tuple)
    at: datetime | None = None  # schedule: when, in UTC
    # An admin's reason to act inside a freeze window (start, switch, revoke).
    override_freeze: str | None = None
    consumer: str | None = None  # add-consumer: the catalog consumer to add
    # switch: queue it for the freeze's end ("queue"), or take a queued one back ("cancel").
    after_freeze: str | None = None


def parse_command(text: str) -> Command:
    try:
        words = shlex.split(text or "")
    except ValueError as exc:
        raise CommandError(f"could not read the command: {exc}", _all_usage()) from None
    if not words:
        return Command("help")
    name, args = words[0].lower(), words[1:]
    if name not in USAGE:
        from difflib import get_close_matches

        close = get_close_matches(name, SUBCOMMANDS, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        raise CommandError(f"unknown subcommand `{words[0]}`.{hint}", _all_usage())
    usage = USAGE[name]
    if name in ("help", "list", "secrets", "reload"):
        if args:
            raise CommandError(f"`{name}` takes no arguments", usage)
        return Command(name)
    if name in ("map", "history"):
        return Command(name, secret=_one(args, "SECRET", usage))
    if name == "start":
        return _parse_start(args, usage)
    if name == "schedule":
        return _parse_schedule(args, usage)
    if name == "add-consumer":
        if len(args) != 2:
            raise CommandError("expected a rotation id and a consumer", usage)
        return Command(name, rotation_id=_rotation_id(args[0], usage), consumer=args[1])
    override = after = None
    if name in ("switch", "revoke"):
        args, override = _take_override(args, usage)
    if name == "switch":
        flags = {"--after-freeze": "queue", "--cancel-after-freeze": "cancel"}
        chosen = [flags[a] for a in args if a in flags]
        args = [a for a in args if a not in flags]
        if len(chosen) + (override is not None) > 1:
            raise CommandError(
                "give one of --override-freeze, --after-freeze or --cancel-after-freeze", usage)
        after = chosen[0] if chosen else None
    return Command(name, rotation_id=_rotation_id(_one(args, "R-N", usage), usage),
                   override_freeze=override, after_freeze=after)


def _rotation_id(ref: str, usage: str) -> int:
    match = _ROTATION_REF.match(ref)
    if not match:
        raise CommandError(f"`{ref}` is not a rotation id like R-42", usage)
    return int(match.group(1))


def _take_override(args: list[str], usage: str) -> tuple[list[str], str | None]:
    """``--override-freeze "why"`` (or ``=why``) taken out of ``args``; the reason must say
    something."""
    rest: list[str] = []
    reason: str | None = None
    i = 0
    while i < len(args):
        flag, eq, value = args[i].partition("=")
        if flag == "--override-freeze":
            if not eq:
                i += 1
                value = args[i] if i < len(args) else ""
            if len(value.strip()) < 10:
                raise CommandError(
                    '`--override-freeze` needs a reason in quotes, a sentence long: '
                    '--override-freeze "hotfix for the outage in INC-42"', usage)
            reason = value.strip()
        else:
            rest.append(args[i])
        i += 1
    return rest, reason


def _parse_start(args: list[str], usage: str) -> Command:
    args, override = _take_override(args, usage)
    secret: str | None = None
    overlap = observe = None
    dry_run = urgent = False
    i = 0
    while i < len(args):
        word = args[i]
        if word in ("--dry-run", "--urgent"):
            dry_run = dry_run or word == "--dry-run"
            urgent = urgent or word == "--urgent"
        elif word.split("=", 1)[0] in ("--overlap", "--observe"):
            flag, _, value = word.partition("=")
            if not value:
                i += 1
                if i >= len(args):
                    raise CommandError(f"`{flag}` needs a duration like 30m, 2h or 3d", usage)
                value = args[i]
            try:
                duration = parse_duration(value)
            except ValueError:
                raise CommandError(
                    f"`{flag} {value}` is not a duration: use 30s, 15m, 2h or 3d", usage
                ) from None
            if flag == "--overlap":
                overlap = duration
            else:
                observe = duration
        elif word.startswith("-"):
            raise CommandError(f"unknown flag `{word}`", usage)
        elif secret is None:
            secret = word
        else:
            raise CommandError(f"unexpected `{word}`: start takes one secret", usage)
        i += 1
    return Command(
        "start", secret=secret, overlap=overlap, observe=observe, dry_run=dry_run, urgent=urgent,
        override_freeze=override,
    )


def _parse_schedule(args: list[str], usage: str) -> Command:
    from bot.domain.schedule import BadTime, parse_at

    # "at" is optional to type but reads naturally: `schedule x at 2026-12-01T09:00Z`.
    words = [w for i, w in enumerate(args) if not (i == 1 and w.lower() == "at")]
    if len(words) != 2:
        raise CommandError("expected a secret and a time", usage)
    try:
        at = parse_at(words[1])
    except BadTime as exc:
        raise CommandError(str(exc), usage) from None
    return Command("schedule", secret=words[0], at=at)


def _one(args: list[str], what: str, usage: str) -> str:
    if len(args) != 1:
        raise CommandError(f"expected exactly one {what}", usage)
    return args[0]


def _all_usage() -> str:
    return "\n".join(USAGE.values())
