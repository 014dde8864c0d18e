"""Alert buttons: Acknowledge and Not related (Roll back lives in handlers/actions.py)."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond

from bot.services.alerts import AlertOutcome
from handlers import blocks
from handlers.deps import Deps
from handlers.ids import Action, AlertButton, parse_value
from handlers.respond import ephemeral, reported


def _clicked_message(body: dict[str, Any]) -> tuple[str, str] | None:
    container = body.get("container") or {}
    channel, ts = container.get("channel_id"), container.get("message_ts")
    return (str(channel), str(ts)) if channel and ts else None


def register(app: App, deps: Deps) -> None:
    svc = deps.alerts

    def handler(kind: str) -> Any:
        def on_click(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
            ack()  # within Slack's 3 seconds; the work below may take longer
            user = str(body["user"]["id"])
            button = parse_value(AlertButton, str(body["actions"][0].get("value", "")))
            message = _clicked_message(body)
            outcome: AlertOutcome
            if kind == "ack":
                outcome = svc.acknowledge(button.alert_id, actor=user, message=message)
            else:
                outcome = svc.not_related(button.alert_id, actor=user, message=message)
            if not outcome.changed:
                ephemeral(
                    respond,
                    blocks.text_message(
                        f"{outcome.alert.ref} is already {outcome.alert.status.value}; "
                        "nothing changed."
                    ),
                )
                return
            # The service re-renders every known copy of the alert (the clicked one
            # included), paced with the other updates of this alert.
            svc.refresh(button.alert_id)

        return on_click

    app.action(Action.ALERT_ACK.value)(reported(handler("ack")))
    app.action(Action.ALERT_NOT_RELATED.value)(reported(handler("not_related")))
