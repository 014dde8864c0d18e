"""How rotabot writes into Slack mrkdwn: the one mention syntax and the one text escaper.

Owners and admins are Slack ids: a user group (``S...``) is mentioned as ``<!subteam^S...>``,
a user (``U...``, ``W...``) as ``<@U...>``. Everything else that comes from the catalog or a
person (names, descriptions, rollback notes, reasons, back-end summaries) goes through
``escape_mrkdwn`` before it is put into mrkdwn, so it is shown, never parsed: a lane called
``pr<!here>od`` or a note with ``<https://evil.example|the runbook>`` pings nobody and links
nowhere. Domain texts (reminders, refusals, alert context) and Block Kit (``handlers/blocks``,
which re-exports both) use these same two functions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# What Slack accepts inside a mention; anything else is shown as text, not as a mention.
_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]+$")


def escape_mrkdwn(text: str) -> str:
    """Slack's escaping for text shown in mrkdwn: ``&``, ``<`` and ``>`` become entities, so
    the text makes no mention, link, channel or date of its own."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(owner: str) -> str:
    """``<@U...>`` or ``<!subteam^S...>``; a value that is not a Slack id (readiness warns
    about those) is shown as escaped text instead of being put inside ``<...>``."""
    if not _SLACK_ID.match(owner):
        return escape_mrkdwn(owner)
    return f"<!subteam^{owner}>" if owner.startswith("S") else f"<@{owner}>"


def mentions(people: Sequence[str]) -> str:
    """Several people to mention in one sentence: "@Ada, @Bo and @Cy"."""
    named = [mention(p) for p in people]
    if len(named) <= 1:
        return "".join(named)
    return ", ".join(named[:-1]) + " and " + named[-1]


def address(people: Sequence[str], fallback: str = "An admin") -> str:
    """The start of a sentence that asks people to act: "@Ada and @Bo, " (or the fallback)."""
    return f"{mentions(people) if people else fallback}, "
