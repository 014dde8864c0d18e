"""Finding what the bot posted in the stand-in and pressing its buttons, waiting instead of
sleeping."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from harness.messages import asks, is_rotation_message

from bot.sandbox.slack_standin.state import Ephemeral, Message
from handlers.ids import Action

if TYPE_CHECKING:
    from conftest import Bot


def parent_message(bot: Bot, rotation: str = "R-1") -> Message:
    return bot.state.wait_for(lambda s: next(
        (m for m in s.channel_messages("C0ROTATE") if is_rotation_message(m, rotation)), None), 10)


def prompt_for(bot: Bot, consumer: str, label: str) -> Message:
    """The thread message asking `consumer`'s owner for the step named `label`."""
    return bot.state.wait_for(lambda s: next(
        (m for m in reversed(s.thread("C0ROTATE", parent_message(bot).ts))
         if asks(m, consumer, label)), None), 10)


def wait_ephemeral(bot: Bot, user: str, needle: str) -> Ephemeral:
    return bot.state.wait_for(
        lambda s: next((e for e in reversed(s.ephemerals_for(user)) if needle in e.text), None),
        10)


def click_step(bot: Bot, user: str, consumer: str, label: str) -> None:
    """`user` presses `label` on `consumer`'s prompt; returns once the prompt says who did it
    and has no buttons left."""
    prompt = prompt_for(bot, consumer, label)
    reply = bot.slack.click(user, channel="C0ROTATE", message_ts=prompt.ts,
                            action_id=Action.STEP.value)
    assert reply.status == 200
    bot.state.wait_for(lambda s: (m := s.find_message("C0ROTATE", prompt.ts)) is not None
                       and " by " in m.text and not any(b.get("type") == "actions"
                                                        for b in m.blocks), 10)


def has_button(bot: Bot, action: Action) -> bool:
    """Does the rotation message show the button for `action` now?"""
    return any(e.get("action_id") == action.value for b in parent_message(bot).blocks
               for e in b.get("elements", []))


def click_parent(bot: Bot, action: Action, user: str = "U0ADMIN") -> None:
    reply = bot.slack.click(user, channel="C0ROTATE", message_ts=parent_message(bot).ts,
                            action_id=action.value)
    assert reply.status == 200


def wait_parent(bot: Bot, needle: str, timeout: float = 15) -> str:
    """Wait until the rotation message (text or blocks) says `needle`; returns all it says."""
    def found(_: object) -> str | None:
        blob = json.dumps(parent_message(bot).blocks) + parent_message(bot).text
        return blob if needle in blob else None
    return bot.state.wait_for(found, timeout)


def switch_when_ready(bot: Bot) -> None:
    """Wait for the Switch button, press it as the admin, wait until the rotation observes."""
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    click_parent(bot, Action.SWITCH)
    bot.state.wait_for(lambda s: "observing" in parent_message(bot).text, 10)
