"""The incident message of an alert, with its rollback (or re-rotation) and triage buttons."""

from __future__ import annotations

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ContextBlock, SectionBlock

from bot.domain.alert import Alert, AlertStatus
from handlers.blocks.common import (
    SECTION_LIMIT,
    Rendered,
    button,
    escape_mrkdwn,
    md,
    mention,
    when,
)
from handlers.ids import Action, AlertButton

_OUTCOME = {
    AlertStatus.ACKNOWLEDGED: ":eyes: acknowledged (still blocks revocation)",
    AlertStatus.NOT_RELATED: ":heavy_minus_sign: marked not related",
    AlertStatus.RESOLVED: ":white_check_mark: resolved",
}


def alert_message(alert: Alert, context: str, rotation_id: int | None) -> Rendered:
    """``context`` is mrkdwn already (bot.domain.alert_context escapes the names in it)."""
    text = context
    value = AlertButton(
        alert_id=alert.id or 0, rotation_id=rotation_id, consumer=alert.consumer
    ).model_dump_json()
    blocks: list[Block] = [
        SectionBlock(text=md(f":rotating_light: {context}"[:SECTION_LIMIT])),
        ContextBlock(
            elements=[
                md(
                    f"{alert.ref} · class *{escape_mrkdwn(alert.failure_class)}* · "
                    f"{escape_mrkdwn(alert.reason[:200])} · seen "
                    f"{alert.count}x · last {when(alert.last_seen)} · {alert.status.value}"
                )
            ]
        ),
    ]
    if alert.resolved_by and alert.status is not AlertStatus.OPEN:
        by = mention(alert.resolved_by)  # "rotabot" is not a Slack id: shown as text
        blocks.append(ContextBlock(elements=[md(f"{_OUTCOME[alert.status]} by {by}")]))
    buttons: list[ButtonElement] = []
    if rotation_id is not None and alert.rotation_id is None and alert.unresolved:
        # After R-N revoked the old credential there is nothing to roll back to
        # (bot.domain.alert_context.prompt_rotation): offer an urgent re-rotation instead.
        buttons.append(
            button("Emergency re-rotation", Action.EMERGENCY_ROTATE, value, style="danger")
        )
    elif rotation_id is not None and alert.unresolved:
        buttons.append(
            button(f"Roll back R-{rotation_id}", Action.ALERT_ROLLBACK, value, style="danger")
        )
    if alert.unresolved:
        buttons.append(button("Not related", Action.ALERT_NOT_RELATED, value))
    if alert.status is AlertStatus.OPEN:  # once acknowledged, the button has done its work
        buttons.append(button("Acknowledge", Action.ALERT_ACK, value))
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    return text, blocks
