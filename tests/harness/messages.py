"""Recognising what the bot posted in the stand-in: a rotation's message and its prompts."""

from __future__ import annotations

from bot.sandbox.slack_standin.state import Message


def is_rotation_message(m: Message, rotation: str) -> bool:
    """Is `m` the top-level message of `rotation` (``R-1`` ...), the one kept up to date?"""
    return m.thread_ts in (None, m.ts) and m.text.startswith(rotation + " ")


def button_labels(m: Message) -> list[str]:
    """The labels of the buttons `m` shows now."""
    return [e.get("text", {}).get("text", "") for b in m.blocks if b.get("type") == "actions"
            for e in b.get("elements", [])]


def asks(m: Message, consumer: str, label: str) -> bool:
    """Is `m` the thread prompt asking `consumer`'s owner for the step named `label`, its
    button still there (not yet answered)?"""
    return m.text.startswith(consumer + " ") and label in button_labels(m)
