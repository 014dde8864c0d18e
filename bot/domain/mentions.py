"""How rotabot names an owner in text it writes: the one mention syntax, for users and groups.

Owners are Slack ids (the catalog refuses anything else): a user group (``S...``) is mentioned
as ``<!subteam^S...>``, a user (``U...``, ``W...``) as ``<@U...>``. Domain texts (reminders,
refusals, alert context) and Block Kit use this same function.
"""

from __future__ import annotations


def mention(owner: str) -> str:
    return f"<!subteam^{owner}>" if owner.startswith("S") else f"<@{owner}>"
