"""Matching a stored key against the partial form a provider shows of it (OpenAI's
``redacted_value``, Anthropic's ``partial_key_hint``): the only link between a value rotabot
holds and the provider's key id. The value is compared in memory and never leaves here."""

from __future__ import annotations

import re

# The start and end of a key around an ellipsis or a run of asterisks.
_SHOWN = re.compile(r"(?s)(.*?)(?:\.\.\.|\u2026|\*{3,})(.*)")


def shown_key_matches(shown: str | None, value: str, *, min_visible: int) -> bool:
    """Whether ``value`` has the start and end ``shown`` shows (and is long enough to hold
    both). Fewer than ``min_visible`` visible characters conclude nothing: False."""
    match = _SHOWN.fullmatch(shown or "")
    if match is None:
        return False
    head, tail = match.group(1), match.group(2)
    if len(head) + len(tail) < min_visible or len(value) < len(head) + len(tail):
        return False
    return value.startswith(head) and value.endswith(tail)
