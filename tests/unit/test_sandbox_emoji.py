"""The sandbox's emoji table covers every shortcode the bot writes, and each has its picture.

The bot's shortcodes are found by scanning its source (string literals, f-string parts; not
docstrings), so a shortcode added to a message later fails here until the table has it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

from bot.sandbox.emoji import EMOJI, STATIC, page_table

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("handlers", "adapters", "bot")
# A Slack shortcode standing on its own: not part of `file:line:`, `v0:ts:body` or a time.
SHORTCODE = re.compile(r"(?<![\w:/]):([a-z][a-z0-9_+-]*):(?![\w:])")


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the Constant nodes that are docstrings (prose, not text the bot sends)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def shortcodes_in(source: str) -> Iterator[str]:
    tree = ast.parse(source)
    docs = _docstrings(tree)
    for node in ast.walk(tree):
        # f-strings' literal parts are Constant nodes too, so ast.walk reaches them.
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield from SHORTCODE.findall(node.value)


def bot_shortcodes() -> dict[str, str]:
    """Each shortcode in the bot's code → one file that writes it."""
    seen: dict[str, str] = {}
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            for name in shortcodes_in(path.read_text(encoding="utf-8")):
                seen.setdefault(name, str(path.relative_to(ROOT)))
    return seen


def test_scanner_finds_shortcodes_and_skips_prose() -> None:
    source = '''
"""Module docs with :class:`Foo` and ``v0:timestamp:body``."""
ICON = {"ok": ":white_check_mark:"}
def f(ref: str) -> str:
    """Returns ``file:line: field``."""
    return f":hourglass: {ref} at 10:30:00 in catalog.yml:14: :rotating_light:"
'''
    assert sorted(shortcodes_in(source)) == ["hourglass", "rotating_light", "white_check_mark"]


def test_every_shortcode_the_bot_writes_is_in_the_table() -> None:
    used = bot_shortcodes()
    # The scan really reads the bot's messages (STEP_ICON, alerts, reminders).
    assert {"white_circle", "hourglass", "rotating_light", "warning"} <= used.keys()
    missing = {name: where for name, where in used.items() if name not in EMOJI}
    assert not missing, (
        "the sandbox page would show these shortcodes as text; add a picture to "
        f"bot/sandbox/static/ and a row to EMOJI in bot/sandbox/emoji.py: {missing}"
    )


def test_every_picture_is_a_shipped_svg() -> None:
    for name, file in EMOJI.items():
        path = STATIC / file
        assert path.parent == STATIC, f"{name}: {file} must sit directly in static/ (package data)"
        assert path.is_file(), f"{name}: {file} is missing"
        assert path.read_text(encoding="utf-8").lstrip().startswith("<svg"), file


def test_the_page_gets_urls_under_static() -> None:
    table = page_table()
    assert table.keys() == EMOJI.keys()
    assert table["hourglass"] == "/static/emoji-hourglass.svg"
