"""Alert buttons: Acknowledge, and Not related, which opens its reason modal (Roll back lives
in handlers/actions.py; the modal's submission in handlers/views.py)."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

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

    @app.action(Action.ALERT_ACK.value)
    @reported
    def acknowledge(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()  # within Slack's 3 seconds; the work below may take longer
        user = str(body["user"]["id"])
        button = parse_value(AlertButton, str(body["actions"][0].get("value", "")))
        outcome = svc.acknowledge(button.alert_id, actor=user, message=_clicked_message(body))
        if not outcome.changed:
            ephemeral(respond, blocks.text_message(
                f"{outcome.alert.ref} is already {outcome.alert.status.value}; nothing changed."))
            return
        # Every known copy of the alert (the clicked one included) is re-rendered.
        svc.refresh(button.alert_id)

    @app.action(Action.ALERT_NOT_RELATED.value)
    @reported
    def not_related(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        """Removing a blocker needs a reason: refused (and audited) before the modal opens,
        checked again on submission."""
        ack()
        user = str(body["user"]["id"])
        button = parse_value(AlertButton, str(body["actions"][0].get("value", "")))
        alert = svc.authorize_not_related(button.alert_id, user)
        message = _clicked_message(body)
        client.views_open(trigger_id=body["trigger_id"],
                          view=blocks.not_related_modal(alert, message))
