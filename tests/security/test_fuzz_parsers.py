"""Hypothesis against the two parsers users type into: `/rotate` text and the catalog file.

parse_command answers a Command or a CommandError, nothing else; parse_catalog answers a
Catalog or a CatalogInvalid whose every error is ``file:line: ...``, on arbitrary text and on
mutations of examples/catalog.yml. Through the real app, random `/rotate` text in signed
requests never yields a 5xx, a traceback in the reply, or a message Slack would reject.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.serve import USERS
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from security_harness import FUZZ_CATALOG, BotHandle, inprocess_bot

from bot.catalog import Catalog, CatalogInvalid, parse_catalog
from bot.domain.commands import SUBCOMMANDS, Command, CommandError, parse_command

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = (ROOT / "examples" / "catalog.yml").read_text()
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+|\.py", line')
FAST = settings(max_examples=300, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Words the parser knows, so generated commands get past the first word often.
WORDS = st.sampled_from([*SUBCOMMANDS, "--overlap", "--observe", "--dry-run", "--urgent",
                         "--overlap=2h", "--observe=", "R-1", "r-2", "R-999999999", "R-",
                         "model-api-key", "24h", "1h 30m", "99999999999999999999d", "0s",
                         '"', "'", "\\", "--", "-", "R-1e3", "\u0663h", "\x00"])
COMMAND_TEXT = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(WORDS, st.text(max_size=12)), max_size=8).map(" ".join),
)


@FAST
@given(text=COMMAND_TEXT)
@example(text="start x --overlap 99999999999999999999999d")
@example(text="start x --observe " + "9" * 5000 + "s")
@example(text='status "R-1')
@example(text="status R-\u0661\u0662")
def test_parse_command_answers_a_command_or_a_command_error(text: str) -> None:
    try:
        command = parse_command(text)
    except CommandError as exc:
        assert str(exc) and exc.usage  # says what is wrong and shows the usage
        return
    assert isinstance(command, Command)
    assert command.name in SUBCOMMANDS
    if command.name in ("status", "switch", "revoke", "rollback", "cancel", "resume"):
        assert isinstance(command.rotation_id, int) and command.rotation_id >= 0


def assert_catalog_outcome(text: str) -> None:
    try:
        catalog = parse_catalog(text, "fuzz.yml")
    except CatalogInvalid as exc:
        assert exc.errors, "CatalogInvalid without errors"
        for error in exc.errors:
            assert error.line is not None and error.line >= 1, str(error)
            assert str(error).startswith(f"fuzz.yml:{error.line}: "), str(error)
        return
    assert isinstance(catalog, Catalog)


YAMLISH = st.lists(
    st.one_of(
        st.sampled_from(["version: 1", "defaults:", "  channel: C0X", "stores:", "secrets:",
                         "  s:", "    consumers:", "      c: {owner: U0A, lane: dev}",
                         "- a", "? x", "&a [*a]", "*b", "!!python/object:os.system ls",
                         "key: [1, {a: b}", "\t- tab", "%YAML 1.1", "---", "...", "'", '"',
                         "a: !!binary AAAA", "<<: *a", "a: &x 1", "b: *x", "\x00", "\ufeff",
                         "a: 1e999", "a: 0x_", "a: 2001-02-30"]),
        st.text(max_size=40),
    ),
    max_size=15,
).map("\n".join)


@FAST
@given(text=YAMLISH)
@example(text="[" * 2000 + "]" * 2000)  # deep nesting
@example(text="a: " + "{b: " * 2000 + "1" + "}" * 2000)
@example(text="a: &a [*a, *a]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c, *c]")
@example(text="version: 1\n\x85secrets: {}")
@example(text="version: 1\nsecrets:\n  a\x00b: {}\n")
@example(text="--- 1\n--- 2\n")
def test_parse_catalog_on_arbitrary_text(text: str) -> None:
    assert_catalog_outcome(text)


EXAMPLE_LINES = EXAMPLE.splitlines()


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    lines = list(EXAMPLE_LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "swap", "value", "indent",
                                     "insert", "truncate"]))
        if kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif kind == "value" and ":" in lines[i]:
            key = lines[i].split(":", 1)[0]
            value = draw(st.one_of(st.text(max_size=20), st.sampled_from(
                ["", "[]", "{}", "-1", "1e999", "null", "true", "[dev, dev]", "0s", "abc d",
                 "https://", "http://x/{key_id}", "U0", "S0X", "*nope", "&a", "!!str"])))
            lines[i] = f"{key}: {value}"
        elif kind == "indent":
            lines[i] = " " * draw(st.integers(0, 8)) + lines[i].lstrip()
        elif kind == "insert":
            lines.insert(i, draw(st.text(max_size=30)))
        elif kind == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        if not lines:
            lines = [""]
    return "\n".join(lines)


@FAST
@given(text=mutated_example())
def test_parse_catalog_on_mutations_of_the_example(text: str) -> None:
    assert_catalog_outcome(text)


def test_the_example_itself_parses() -> None:
    assert isinstance(parse_catalog(EXAMPLE, "examples/catalog.yml"), Catalog)


# --- through the real app ------------------------------------------------------------------

@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotHandle]:
    with inprocess_bot(tmp_path_factory.mktemp("fuzz-commands"), FUZZ_CATALOG) as handle:
        yield handle


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(user=st.sampled_from(sorted(USERS)), text=COMMAND_TEXT)
@example(user="U0ADMIN", text="start model-api-key --overlap 99999999999d")
@example(user="U0ADMIN", text="status R-999999999")
@example(user="U0MALLORY", text="revoke R-1")
def test_random_rotate_text_through_the_app(bot: BotHandle, user: str, text: str) -> None:
    # Slack strips NULs and caps command text; a form post cannot carry a NUL either way.
    assume("\x00" not in text)
    seen = len(bot.state.ephemerals_for(user))
    calls = len(bot.state.calls)
    reply = bot.slack.command(user, "C0ROTATE", text)
    assert reply.status < 500, reply.body
    assert not TRACEBACK.search(reply.body)
    answers = [json.dumps({"text": e.text, "blocks": e.blocks})
               for e in bot.state.ephemerals_for(user)[seen:]]
    answers += [json.dumps(c.args, default=str) for c in bot.state.calls[calls:]]
    for answer in answers:
        assert not TRACEBACK.search(answer), answer
        assert "something went wrong on rotabot's side" not in answer, answer
    assert bot.state.violations == []
