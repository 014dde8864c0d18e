"""The emoji the sandbox page draws: each Slack shortcode the bot writes → a small SVG picture.

The page often runs where there is no emoji font (a CI box, a minimal Linux), and there a
character such as ⏳ draws as an empty box; a picture shipped in ``static/`` draws everywhere.
The page gets this table in ``/sandbox/config`` and shows any shortcode not in it as its text
(``:foo:``). ``tests/unit/test_sandbox_emoji.py`` scans the bot's code and fails when it writes
a shortcode missing here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Final

STATIC: Final = Path(__file__).resolve().parent / "static"

# Shortcode (without colons) → picture file in static/ (flat: the package data glob is
# `sandbox/static/*`). Two shortcodes may share a picture.
EMOJI: Final[Mapping[str, str]] = MappingProxyType(
    {
        "white_circle": "emoji-white_circle.svg",
        "large_blue_circle": "emoji-large_blue_circle.svg",
        "large_green_circle": "emoji-large_green_circle.svg",
        "red_circle": "emoji-red_circle.svg",
        "white_check_mark": "emoji-white_check_mark.svg",
        "warning": "emoji-warning.svg",
        "rotating_light": "emoji-rotating_light.svg",
        "no_entry": "emoji-no_entry.svg",
        "lock": "emoji-lock.svg",
        "hourglass": "emoji-hourglass.svg",
        "leftwards_arrow_with_hook": "emoji-leftwards_arrow_with_hook.svg",
        "grey_question": "emoji-grey_question.svg",
        "key": "emoji-key.svg",
        "arrow_right": "emoji-arrow_right.svg",
        "twisted_rightwards_arrows": "emoji-twisted_rightwards_arrows.svg",
        "no_entry_sign": "emoji-no_entry_sign.svg",
        "arrow_forward": "emoji-arrow_forward.svg",
        "eyes": "emoji-eyes.svg",
        "heavy_minus_sign": "emoji-heavy_minus_sign.svg",
        "inbox_tray": "emoji-inbox_tray.svg",
        "heavy_plus_sign": "emoji-heavy_plus_sign.svg",
        "alarm_clock": "emoji-alarm_clock.svg",
    }
)


def page_table(static_url: str = "/static/") -> dict[str, str]:
    """The table as the page receives it: shortcode → the picture's URL."""
    return {name: static_url + file for name, file in EMOJI.items()}
