"""Scheduled rotations in Slack: the listener of the readiness review's Confirm-ready buttons.

The review, the admins' prompt, "due" reminders and the answer to `/rotate schedule` are built
in handlers/blocks/schedule.py (with the button's value, ConfirmReadyButton); the schedule
service posts them through handlers/notices.py.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot.domain.schedule import ScheduleStatus
from handlers import blocks
from handlers.blocks.schedule import CancelReviewButton, ConfirmReadyButton
from handlers.deps import Deps
from handlers.ids import Action, parse_value
from handlers.respond import ephemeral, reported

__all__ = ["ConfirmReadyButton", "register"]


def register(app: App, deps: Deps) -> None:
    svc = deps.schedules

    @app.action(Action.CONFIRM_READY.value)

    @reported
    def confirm_ready(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()  # within Slack's 3 seconds; the work below may take longer
        user = str(body["user"]["id"])
        button = parse_value(ConfirmReadyButton, str(body["actions"][0].get("value", "")))
        outcome = svc.confirm(button.schedule_id, button.owner, actor=user)
        if not outcome.changed:
            ephemeral(
                respond,
                blocks.text_message(
                    f"{blocks.mention(button.owner)} already confirmed {outcome.item.ref}; "
                    "nothing changed."
                ),
            )
            return
        item = outcome.item
        if item.start_when_ready and item.status is ScheduleStatus.STARTED:
            ephemeral(respond, blocks.text_message(
                f"Thanks: every owner confirmed, so the hard cutover of `{item.secret}` started "
                f"(R-{item.rotation_id}): validate your consumers in its thread."))
            return
        if item.start_when_ready and item.status is ScheduleStatus.NEEDS_ADMIN:
            ephemeral(respond, blocks.text_message(
                f"Every owner confirmed, but `{item.secret}` could not start: the admins were "
                "asked (the review says why)."))
            return
        if item.start_when_ready and item.status is ScheduleStatus.READINESS_PASSED:
            ephemeral(respond, blocks.text_message(
                f"Thanks: every owner confirmed. The hard cutover of `{item.secret}` starts as "
                "soon as nothing holds it (a freeze window ends)."))
            return
        if outcome.item.status is ScheduleStatus.READINESS_PASSED:
            ephemeral(
                respond,
                blocks.text_message(
                    f"Thanks: every owner confirmed. `{outcome.item.secret}` rotates "
                    f"{blocks.when(outcome.item.at)} unless a check fails on the day."
                ),
            )
        # Otherwise the updated review message shows the confirmation; nothing to add.

    @app.action(Action.CANCEL_REVIEW.value)

    @reported
    def cancel_review(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        user = str(body["user"]["id"])
        button = parse_value(CancelReviewButton, str(body["actions"][0].get("value", "")))
        item = svc.cancel_review(button.schedule_id, actor=user)
        ephemeral(respond, blocks.text_message(
            f"{item.ref} for `{item.secret}` is {item.status.value}; nothing was minted."))
