"""What every surface shares: the ``Rendered`` shape, Slack's limits, the one way to mention
someone, the one mrkdwn escaper, timestamps, and the section and button helpers.

Each builder returns ``(text, blocks)``: ``text`` is the plain fallback Slack shows in
notifications and to screen readers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.domain.lifecycle import STEP_STATE, Phase, StepState

# The one mention syntax and the one mrkdwn escaper live in the domain (domain texts need
# them too); every surface here uses these re-exports.
from bot.domain.mentions import escape_mrkdwn as escape_mrkdwn
from bot.domain.mentions import mention as mention
from bot.domain.mentions import mentions as mentions
from bot.domain.rotation import Rotation
from handlers.ids import Action, RotationButton

Rendered = tuple[str, list[Block]]

# Every catalog- or user-supplied string a surface shows in mrkdwn (message `text` fallbacks
# included: Slack parses them too) goes through escape_mrkdwn, code() or told(); mention()
# output and our own fixed words are the only markup.

SECTION_LIMIT = 2900  # Slack allows 3,000 characters in a section; keep a margin
MESSAGE_BLOCK_LIMIT = 50
VIEW_BLOCK_LIMIT = 100

STEP_LABEL = {
    StepState.DISTRIBUTED: "Distributed",
    StepState.VALIDATED: "Validated",
    StepState.SIGNED_OFF: "Sign off",
}
STEP_ICON = {
    StepState.WAITING: ":white_circle:",
    StepState.DISTRIBUTED: ":large_blue_circle:",
    StepState.VALIDATED: ":large_green_circle:",
    StepState.SIGNED_OFF: ":white_check_mark:",
    StepState.FAILED: ":red_circle:",
}
PHASE_WORDS = {
    Phase.READY_CHECK: "waiting for the new credential",
    Phase.PREPARED: "prepared: new credential created beside the old one",
    Phase.DISTRIBUTING: "distributing: owners confirm their consumers have the new credential",
    Phase.VALIDATING: "validating: owners confirm their consumers work with it",
    Phase.SWITCHED: "switched: the new credential is current",
    Phase.OBSERVING: "observing: the old credential stays valid while we watch",
    Phase.REVOCABLE: "ready to revoke: every owner signed off and the window passed quietly",
    Phase.REVOKED: "done: the old credential is revoked",
    Phase.ROLLED_BACK: "rolled back: the previous credential is current again",
    Phase.CANCELLED: "cancelled",
    Phase.FAILED: "failed: paused until it is resumed, rolled back or cancelled",
}


def phase_words(rotation: Rotation) -> str:
    """The phase line of a rotation: whose turn it is, not just the state's name."""
    if rotation.ready_to_switch():  # validating, every consumer validated
        return "validated: every consumer works with the new credential; an admin switches next"
    if rotation.cutover:
        if rotation.phase is Phase.REVOKED:
            return "done: cutover finished (the old value stopped working at the cutover)"
        if rotation.phase is Phase.ROLLED_BACK and rotation.cutover_until is not None:
            return "rolled back by re-issue: another replacement is current everywhere"
        if rotation.phase is Phase.REVOCABLE:
            return "ready to finish: every owner signed off and the window passed quietly"
    return PHASE_WORDS[rotation.phase]


def step_words(state: StepState) -> str:
    return STEP_STATE[state]


_OWNER_ID = re.compile(r"\bowner ([UWS][A-Z0-9]{2,})\b")


def with_mentions(text: str) -> str:
    """The domain speaks of `owner U0ALICE`; in Slack that reads better as a mention."""
    return _OWNER_ID.sub(lambda m: "owner " + mention(m.group(1)), text)


def code(text: str) -> str:
    """A name (secret, consumer, path) in code format, escaped."""
    return f"`{escape_mrkdwn(text)}`"


def told(text: str) -> str:
    """Plain words from the domain or a back end (gate conditions, failure reasons, findings)
    for mrkdwn: escaped first, then `owner U...` becomes a mention."""
    return with_mentions(escape_mrkdwn(text))


def when(ts: datetime | None) -> str:
    if ts is None:
        return "—"
    return f"<!date^{int(ts.timestamp())}^{{date_short_pretty}} {{time}}|{ts:%Y-%m-%d %H:%M} UTC>"


def md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text)


def sections(lines: Sequence[str], heading: str | None = None) -> list[Block]:
    """Pack lines into as few sections as fit Slack's per-section limit."""
    blocks: list[Block] = []
    chunk = heading + "\n" if heading else ""
    for line in lines:
        if len(chunk) + len(line) + 1 > SECTION_LIMIT and chunk:
            blocks.append(SectionBlock(text=md(chunk.rstrip())))
            chunk = ""
        chunk += line[:SECTION_LIMIT] + "\n"
    if chunk.strip():
        blocks.append(SectionBlock(text=md(chunk.rstrip())))
    return blocks


def button(
    text: str,
    action: Action,
    value: str,
    *,
    style: str | None = None,
    confirm: ConfirmObject | None = None,
) -> ButtonElement:
    return ButtonElement(
        text=PlainTextObject(text=text),
        action_id=action.value,
        value=value,
        style=style,
        confirm=confirm,
    )


def error_message(message: str, usage: str | None = None) -> Rendered:
    message = with_mentions(message)
    lines = [f":warning: {message}"]
    if usage:
        lines.append(f"Usage:\n```{usage}```")
    return message, sections(lines)


def frozen_switch_message(message: str, rotation_id: int) -> Rendered:
    """A switch refused inside a freeze window, with the button that queues it for its end."""
    text, body = error_message(message)
    value = RotationButton(rotation_id=rotation_id).model_dump_json()
    queue = button("Switch when the freeze ends", Action.SWITCH_AFTER_FREEZE, value)
    return text, [*body, ActionsBlock(elements=[queue])]


def text_message(text: str) -> Rendered:
    return text, sections([text])
