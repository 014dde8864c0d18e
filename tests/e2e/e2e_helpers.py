"""Finding what the bot posted in the stand-in, waiting instead of sleeping."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.slack_standin.state import Ephemeral, Message

if TYPE_CHECKING:
    from conftest import Bot


def parent_message(bot: Bot, rotation: str = "R-1") -> Message:
    def find(_: object) -> Message | None:
        for m in bot.state.channel_messages("C0ROTATE"):
            if m.thread_ts in (None, m.ts) and m.text.startswith(rotation + " "):
                return m
        return None
    return bot.state.wait_for(find, 10)


def prompt_for(bot: Bot, consumer: str, label: str) -> Message:
    """The thread message asking `consumer`'s owner for the step named `label`."""
    def find(_: object) -> Message | None:
        parent = parent_message(bot)
        for m in reversed(bot.state.thread("C0ROTATE", parent.ts)):
            buttons = [e for b in m.blocks if b.get("type") == "actions"
                       for e in b.get("elements", [])]
            if m.text.startswith(consumer + " ") and any(
                    e.get("text", {}).get("text") == label for e in buttons):
                return m
        return None
    return bot.state.wait_for(find, 10)


def wait_ephemeral(bot: Bot, user: str, needle: str) -> Ephemeral:
    return bot.state.wait_for(
        lambda s: next((e for e in reversed(s.ephemerals_for(user)) if needle in e.text), None),
        10)
