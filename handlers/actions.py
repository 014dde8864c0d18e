"""Button clicks: owners' steps, admins' switch/revoke/rollback, alert prompts."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.domain.errors import GateClosed
from bot.domain.lifecycle import StepState
from bot.runtime.bootstrap import Container
from handlers import blocks
from handlers.commands import rollback_view
from handlers.ids import Action, AlertButton, RotationButton, StepButton, parse_value
from handlers.respond import ephemeral, user_message


def _value(body: dict[str, Any]) -> str:
    return str(body["actions"][0].get("value", ""))


def _user(body: dict[str, Any]) -> str:
    return str(body["user"]["id"])


def register(app: App, c: Container) -> None:
    service = c.service

    @app.action(Action.STEP.value)
    def step(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        try:
            button = parse_value(StepButton, _value(body))
            outcome = service.step(
                button.rotation_id, button.consumer, button.step, actor=_user(body)
            )
            if not outcome.changed:
                ephemeral(
                    respond,
                    blocks.text_message(
                        f"`{button.consumer}` is already {button.step.value}; nothing changed."
                    ),
                )
                return
            consumer = outcome.rotation.consumer(button.consumer)
            text, done = blocks.step_done(outcome.rotation, consumer, button.step, _user(body))
            container = body.get("container", {})
            client.chat_update(
                channel=container.get("channel_id"),
                ts=container.get("message_ts"),
                text=text,
                blocks=[b.to_dict() for b in done],
            )
        except Exception as exc:
            ephemeral(respond, user_message(exc))

    @app.action(Action.REPORT_PROBLEM.value)
    def report_problem(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        try:
            button = parse_value(StepButton, _value(body))
            rotation = service.get(button.rotation_id)
            owner = rotation.consumer(button.consumer).owner
            user = _user(body)
            if not (service.owns(user, owner) or service.is_admin(user, rotation.secret)):
                service.step(button.rotation_id, button.consumer, StepState.FAILED, actor=user)
            client.views_open(
                trigger_id=body["trigger_id"], view=blocks.report_problem_modal(button)
            )
        except Exception as exc:
            ephemeral(respond, user_message(exc))

    def rotation_action(name: str) -> Any:
        def handler(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
            ack()
            user = _user(body)
            try:
                button = parse_value(RotationButton, _value(body))
                rid = button.rotation_id
                if name == "switch":
                    service.switch(rid, actor=user)
                elif name == "resume":
                    service.resume(rid, actor=user)
                elif name == "check_store":
                    service.prepare(rid, actor=user)
                    r = service.get(rid)
                    if r.new_version is None:
                        ephemeral(
                            respond, blocks.text_message(f"No new version at `{r.store_path}` yet.")
                        )
                elif name == "rollback":
                    client.views_open(
                        trigger_id=body["trigger_id"], view=rollback_view(c, rid, None)
                    )
                elif name == "revoke":
                    try:
                        service.revoke(rid, actor=user)
                    except GateClosed as closed:
                        # Admins may break glass, but only with a reason, in a modal.
                        rotation = service.get(rid)
                        if service.is_admin(user, rotation.secret):
                            client.views_open(
                                trigger_id=body["trigger_id"],
                                view=blocks.override_modal(rotation, service.gate(rid)),
                            )
                        else:
                            raise closed
            except Exception as exc:
                ephemeral(respond, user_message(exc))

        return handler

    app.action(Action.SWITCH.value)(rotation_action("switch"))
    app.action(Action.REVOKE.value)(rotation_action("revoke"))
    app.action(Action.ROLLBACK.value)(rotation_action("rollback"))
    app.action(Action.RESUME.value)(rotation_action("resume"))
    app.action(Action.CHECK_STORE.value)(rotation_action("check_store"))

    @app.action(Action.ALERT_ROLLBACK.value)
    def alert_rollback(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        try:
            button = parse_value(AlertButton, _value(body))
            if button.rotation_id is None:
                raise ValueError("alert has no rotation")
            rotation = service.get(button.rotation_id)
            user = _user(body)
            allowed = service.is_admin(user, rotation.secret) or (
                button.consumer is not None
                and service.owns(user, rotation.consumer(button.consumer).owner)
            )
            if not allowed:
                service.rollback(button.rotation_id, actor=user, consumer=button.consumer)
            client.views_open(
                trigger_id=body["trigger_id"],
                view=rollback_view(c, button.rotation_id, button.consumer, button.alert_id),
            )
        except Exception as exc:
            ephemeral(respond, user_message(exc))

    @app.action(Action.EMERGENCY_ROTATE.value)
    def emergency(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        """An alert after revocation: confirm an urgent re-rotation (admins only)."""
        ack()
        try:
            from bot.services.emergency import require_admin

            button = parse_value(AlertButton, _value(body))
            if button.rotation_id is None:
                raise ValueError("alert has no rotation")
            require_admin(service, service.get(button.rotation_id), _user(body))
            client.views_open(
                trigger_id=body["trigger_id"],
                view=rollback_view(c, button.rotation_id, button.consumer, button.alert_id),
            )
        except Exception as exc:
            ephemeral(respond, user_message(exc))
