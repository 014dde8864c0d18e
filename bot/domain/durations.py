"""Human durations as written in the catalog (``30s``, ``15m``, ``2h``, ``3d``) and back."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS: dict[str, int] = {"d": 86400, "h": 3600, "m": 60, "s": 1}
# One or more "<number><unit>" parts, largest unit first, optionally space-separated, so the
# output of format_duration ("1h 30m") reads back in.
_PART = re.compile(r"(\d+)([dhms])")
_WHOLE = re.compile(r"^\s*(\d+[dhms])(\s*\d+[dhms])*\s*$")

EXPECTED = "a duration like 30s, 15m, 2h or 3d"


def parse_duration(text: str) -> timedelta:
    """``"90d"`` -> ``timedelta(days=90)``; ``"1h 30m"`` works too. Raises ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"expected {EXPECTED}, got {text!r}")
    if not _WHOLE.match(text):
        raise ValueError(f"expected {EXPECTED}, got {text!r}")
    seen: list[str] = []
    seconds = 0
    for number, unit in _PART.findall(text):
        if seen and "dhms".index(unit) <= "dhms".index(seen[-1]):
            raise ValueError(
                f"expected {EXPECTED} (units largest first, each once), got {text!r}"
            )
        seen.append(unit)
        seconds += int(number) * _UNITS[unit]
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any rotation can last") from None


def format_duration(td: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` -> ``"1h 30m"``; whole seconds, ``"0s"`` for zero."""
    total = int(td.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    parts: list[str] = []
    for unit, size in _UNITS.items():
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + (" ".join(parts) if parts else "0s")
