"""`/rotate ...` parsing: what each valid text means, and what each mistake is told."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bot.domain.commands import USAGE, Command, CommandError, parse_command

ALL_USAGE = "\n".join(USAGE.values())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("start model-api-key --overlap 24h --observe=2h --dry-run",
         Command("start", secret="model-api-key", overlap=timedelta(hours=24),
                 observe=timedelta(hours=2), dry_run=True)),
        ("start model-api-key --urgent",
         Command("start", secret="model-api-key", urgent=True)),
        ("start --observe 1h 30m-key", Command("start", secret="30m-key",
                                               observe=timedelta(hours=1))),
        # No secret: the handler opens a picker instead.
        ("start", Command("start")),
        ("status R-42", Command("status", rotation_id=42)),
        ("status r42", Command("status", rotation_id=42)),
        ("STATUS R-7", Command("status", rotation_id=7)),
        ("rollback R-3", Command("rollback", rotation_id=3)),
        ("revoke R-3", Command("revoke", rotation_id=3)),
        ('switch R-3 --override-freeze "hotfix for INC-42"',
         Command("switch", rotation_id=3, override_freeze="hotfix for INC-42")),
        ("switch R-3 --after-freeze", Command("switch", rotation_id=3, after_freeze="queue")),
        ("switch --cancel-after-freeze r3",
         Command("switch", rotation_id=3, after_freeze="cancel")),
        ("add-consumer R-7 billing-sync",
         Command("add-consumer", rotation_id=7, consumer="billing-sync")),
        ("revoke --override-freeze='the key leaked today' R-3",
         Command("revoke", rotation_id=3, override_freeze="the key leaked today")),
        ('start model-api-key --override-freeze "the key leaked today" --urgent',
         Command("start", secret="model-api-key", urgent=True,
                 override_freeze="the key leaked today")),
        ("map model-api-key", Command("map", secret="model-api-key")),
        ("history 'model-api-key'", Command("history", secret="model-api-key")),
        ("help", Command("help")),
        ("list", Command("list")),
        ("", Command("help")),
        ("   ", Command("help")),
    ],
    ids=repr,
)
def test_valid(text: str, expected: Command) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "message", "usage"),
    [
        ("strat model-api-key", "unknown subcommand `strat`. Did you mean `start`?",
         ALL_USAGE),
        ("stauts R-1", "unknown subcommand `stauts`. Did you mean `status`?", ALL_USAGE),
        ("xyzzy", "unknown subcommand `xyzzy`.", ALL_USAGE),
        ("start model-api-key --overlap", "`--overlap` needs a duration like 30m, 2h or 3d",
         USAGE["start"]),
        ("start model-api-key --observe=", "`--observe` needs a duration like 30m, 2h or 3d",
         USAGE["start"]),
        ("start model-api-key --force", "unknown flag `--force`", USAGE["start"]),
        ("start model-api-key --overlap 24x",
         "`--overlap 24x` is not a duration: use 30s, 15m, 2h or 3d", USAGE["start"]),
        ("start model-api-key --observe=soon",
         "`--observe soon` is not a duration: use 30s, 15m, 2h or 3d", USAGE["start"]),
        ("map", "expected exactly one SECRET", USAGE["map"]),
        ("history", "expected exactly one SECRET", USAGE["history"]),
        ("map a b", "expected exactly one SECRET", USAGE["map"]),
        ("status", "expected exactly one R-N", USAGE["status"]),
        ("status R-1 R-2", "expected exactly one R-N", USAGE["status"]),
        ("status 42", "`42` is not a rotation id like R-42", USAGE["status"]),
        ("cancel X-1", "`X-1` is not a rotation id like R-42", USAGE["cancel"]),
        ("start a b", "unexpected `b`: start takes one secret", USAGE["start"]),
        ("help me", "`help` takes no arguments", USAGE["help"]),
        ("list all", "`list` takes no arguments", USAGE["list"]),
        ('switch R-1 --override-freeze "now"',
         '`--override-freeze` needs a reason in quotes, a sentence long: '
         '--override-freeze "hotfix for the outage in INC-42"', USAGE["switch"]),
        ('switch R-1 --after-freeze --override-freeze "hotfix for INC-42"',
         "give one of --override-freeze, --after-freeze or --cancel-after-freeze",
         USAGE["switch"]),
        ("revoke R-1 --after-freeze", "expected exactly one R-N", USAGE["revoke"]),
        ("add-consumer R-1", "expected a rotation id and a consumer", USAGE["add-consumer"]),
        ("add-consumer billing-sync R-1", "`billing-sync` is not a rotation id like R-42",
         USAGE["add-consumer"]),
        ("revoke R-1 --override-freeze",
         '`--override-freeze` needs a reason in quotes, a sentence long: '
         '--override-freeze "hotfix for the outage in INC-42"', USAGE["revoke"]),
        ('cancel R-1 --override-freeze "cancel is never frozen"',
         "expected exactly one R-N", USAGE["cancel"]),
        ('start "model-api-key', "could not read the command: No closing quotation",
         ALL_USAGE),
    ],
    ids=repr,
)
def test_invalid(text: str, message: str, usage: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert str(info.value) == message
    assert info.value.usage == usage


def test_usage_lines_name_the_command() -> None:
    for name, line in USAGE.items():
        assert line.startswith(f"/rotate {name}")


def test_unknown_subcommand_message_is_not_a_suggestion_when_nothing_is_close() -> None:
    with pytest.raises(CommandError) as info:
        parse_command("qqqqqq")
    assert "Did you mean" not in str(info.value)


def test_huge_duration_is_a_command_error() -> None:
    # Found by the property below: a number too large for a timedelta.
    with pytest.raises(CommandError) as info:
        parse_command("start s --overlap 99999999999999d")
    assert info.value.usage == USAGE["start"]


_WORDS = st.sampled_from([
    "start", "status", "map", "help", "list", "history", "revoke", "R-1", "r9", "--overlap",
    "--observe", "--observe=", "--dry-run", "--urgent", "-x", "2h", "3d", "99999999999999d",
    "1h 30m", '"', "'", "\\", "=", "",
])
_TEXT = st.one_of(
    st.text(),
    st.lists(st.one_of(_WORDS, st.text(max_size=8)), max_size=6).map(" ".join),
)


@settings(max_examples=500)
@given(_TEXT)
@example("start s --overlap 99999999999999d")
@example("status R-\u0664\u0662")
def test_any_text_gives_a_command_or_a_command_error(text: str) -> None:
    try:
        result = parse_command(text)
    except CommandError as exc:
        assert str(exc)
        assert exc.usage
    else:
        assert isinstance(result, Command)
        assert result.name in USAGE
