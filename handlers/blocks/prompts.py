"""The thread message asking one owner for their next step, with its buttons."""

from __future__ import annotations

from slack_sdk.models.blocks import ActionsBlock, SectionBlock

from bot.domain.lifecycle import StepState
from bot.domain.rotation import ConsumerProgress, Rotation
from handlers.blocks.common import STEP_LABEL, Rendered, button, escape_mrkdwn, md, mention
from handlers.ids import Action, StepButton


def turn_prompt(rotation: Rotation, consumer: ConsumerProgress, step: StepState) -> Rendered:
    """A thread message asking one owner for their next step (names escaped: the text
    fallback is mrkdwn too)."""
    written = rotation.lane_writes.get(consumer.lane, ())
    have = (
        # rotabot put it where this lane reads it: what is left is the consumer's reload.
        "rotabot wrote the new credential to "
        + ", ".join(f"`{escape_mrkdwn(t)}`" for t in written[:5])
        + (f" and {len(written) - 5} more" if len(written) > 5 else "")
        + "; make sure it picked it up (reload or restart as it needs)"
        if written
        else "make sure it has the new credential (pending version "
        f"{escape_mrkdwn(str(rotation.new_version))})"
    )
    ask = {
        StepState.DISTRIBUTED: f"{have}, then press *Distributed*",
        StepState.VALIDATED: "check it works with the new credential on its real dependency "
        "path, then press *Validated*",
        StepState.SIGNED_OFF: "when you are OK for the old credential to be revoked, press "
        "*Sign off*",
    }[step]
    name, lane = escape_mrkdwn(consumer.name), escape_mrkdwn(consumer.lane)
    text = f"{name} ({lane}): {mention(consumer.owner)}, {ask}"
    step_value = StepButton(
        rotation_id=rotation.id or 0, consumer=consumer.name, step=step
    ).model_dump_json()
    problem_value = StepButton(
        rotation_id=rotation.id or 0, consumer=consumer.name, step=StepState.FAILED
    ).model_dump_json()
    return text, [
        SectionBlock(
            text=md(
                f"*{name}* ({lane}, {escape_mrkdwn(consumer.reload)}) · "
                f"{mention(consumer.owner)}, {ask}."
            )
        ),
        ActionsBlock(
            elements=[
                button(STEP_LABEL[step], Action.STEP, step_value, style="primary"),
                button("Report a problem", Action.REPORT_PROBLEM, problem_value, style="danger"),
            ]
        ),
    ]
