"""The App Home tab: active rotations, what waits on the viewer, what is due next, recent alerts."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import Block, DividerBlock, HeaderBlock, PlainTextObject
from slack_sdk.models.views import View as SlackView

from bot.domain.alert import Alert
from bot.domain.lifecycle import PHASE_STATE, StepState
from bot.domain.rotation import ConsumerProgress, Rotation
from bot.domain.schedule import format_at
from bot.services.schedules import Upcoming
from handlers.blocks.common import (
    STEP_LABEL,
    VIEW_BLOCK_LIMIT,
    code,
    escape_mrkdwn,
    mention,
    sections,
)
from handlers.blocks.rotation import UNMAPPED_LINES, waiting_on


def home_view(
    user: str,
    active: Sequence[Rotation],
    mine: Sequence[tuple[Rotation, ConsumerProgress, StepState]],
    alerts: Sequence[Alert],
    unmapped: Sequence[tuple[Rotation, str]] = (),
    upcoming: Sequence[Upcoming] = (),
) -> SlackView:
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text="rotabot"))]
    blocks.extend(
        sections(
            [
                f"• *{r.ref}* {code(r.secret)} · {escape_mrkdwn(PHASE_STATE[r.phase])}"
                f"{waiting_on(r)}"
                for r in active
            ]
            or ["No active rotations."],
            "*Active rotations*",
        )
    )
    blocks.append(DividerBlock())
    blocks.extend(
        sections(
            [
                f"• *{r.ref}* {code(c.name)} ({escape_mrkdwn(c.lane)}): *{STEP_LABEL[s]}*"
                for r, c, s in mine
            ]
            or ["Nothing is waiting on you."],
            f"*Waiting on {mention(user)}*",
        )
    )
    if unmapped:
        # Use of an old credential nobody in the catalog accounts for: fix the map first.
        blocks.append(DividerBlock())
        blocks.extend(
            sections(
                [f"• *{r.ref}* {code(r.secret)}: {escape_mrkdwn(words[:300])}"
                 for r, words in unmapped[:UNMAPPED_LINES]],
                "*Unmapped consumers* (add their `identity:` to the catalog before revoking)",
            )
        )
    blocks.append(DividerBlock())
    blocks.extend(
        sections(
            [
                f"• {code(u.secret)} · {format_at(u.at)}"
                + (f" ({u.schedule.ref})" if u.schedule is not None else "")
                + f" · {escape_mrkdwn(u.state)}"
                for u in upcoming
            ]
            or ["Nothing is scheduled or recurring."],
            "*Due next*",
        )
    )
    blocks.append(DividerBlock())
    blocks.extend(
        sections(
            [
                f"• {a.ref} {code(a.consumer)} ({escape_mrkdwn(a.lane)}) "
                f"{escape_mrkdwn(a.failure_class)} · {a.count}x · "
                f"{a.status.value}"
                for a in alerts
            ]
            or ["No recent alerts."],
            "*Recent alerts*",
        )
    )
    return SlackView(type="home", blocks=blocks[:VIEW_BLOCK_LIMIT])
