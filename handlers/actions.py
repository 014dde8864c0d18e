"""Button clicks: owners' steps, admins' switch/revoke/rollback, alert prompts.

A button's value is whatever the sender of a signed request puts in it, so it only ever names
things (a rotation, a consumer, an alert); who may act, and on what, is read from the database:
the rotation's phase and consumers, the actor's role in the catalog, the stored alert.
"""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient

from bot.domain.errors import GateClosed, RotabotError
from bot.domain.lifecycle import StepState
from bot.domain.rotation import Rotation
from bot.services.rotations import RotationService
from handlers import blocks
from handlers.commands import queued_reply, rollback_view
from handlers.deps import Deps
from handlers.ids import (
    Action,
    AlertButton,
    BadButton,
    RotationButton,
    StepButton,
    parse_value,
)
from handlers.respond import ephemeral, reported

# The steps a Step button carries (handlers/blocks/prompts.py); "failed" and "waiting" are
# never rendered on it, and a forged one would mark a consumer failed without an alert.
STEP_BUTTON_STEPS = frozenset({StepState.DISTRIBUTED, StepState.VALIDATED, StepState.SIGNED_OFF})


def _value(body: dict[str, Any]) -> str:
    return str(body["actions"][0].get("value", ""))


def _user(body: dict[str, Any]) -> str:
    return str(body["user"]["id"])


def _stored(service: RotationService, button: StepButton) -> Rotation:
    """The rotation a step button names, which must have the consumer the button names."""
    rotation = service.get(button.rotation_id)
    if button.consumer not in rotation.consumers:
        raise RotabotError(
            f"{rotation.ref} has no consumer {blocks.code(button.consumer)}, so this button is "
            f"not one rotabot showed for it; nothing changed. `/rotate status {rotation.ref}` "
            "shows its consumers and posts any prompt that is missing"
        )
    return rotation


def _alert_button(body: dict[str, Any]) -> tuple[AlertButton, int]:
    button = parse_value(AlertButton, _value(body))
    if button.rotation_id is None:  # never rendered: only alerts with a rotation offer these
        raise BadButton("this button is out of date; use `/rotate status` to get a fresh one")
    return button, button.rotation_id


def register(app: App, deps: Deps) -> None:
    service = deps.rotations

    @app.action(Action.STEP.value)

    @reported
    def step(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()
        button = parse_value(StepButton, _value(body))
        if button.step not in STEP_BUTTON_STEPS:
            raise BadButton("this button is out of date; use `/rotate status` to get a fresh one")
        _stored(service, button)
        outcome = service.step(
            button.rotation_id, button.consumer, button.step, actor=_user(body)
        )
        if not outcome.changed:
            ephemeral(
                respond,
                blocks.text_message(
                    f"`{button.consumer}` is already {blocks.step_words(button.step)}; "
                    "nothing changed."
                ),
            )
            return
        consumer = outcome.rotation.consumer(button.consumer)
        text, done = blocks.step_done(outcome.rotation, consumer, button.step, _user(body))
        container = body.get("container", {})
        # Queued in Slack's call budget: this listener's thread is not held while it waits.
        deps.notifier.replace_later(
            str(container.get("channel_id")), str(container.get("message_ts")), (text, done)
        )

    @app.action(Action.REPORT_PROBLEM.value)

    @reported
    def report_problem(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()
        button = parse_value(StepButton, _value(body))
        service.authorize_report(_stored(service, button), button.consumer, _user(body))
        client.views_open(
            trigger_id=body["trigger_id"], view=blocks.report_problem_modal(button)
        )

    def rotation_action(name: str) -> Any:
        def handler(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
            ack()
            user = _user(body)
            button = parse_value(RotationButton, _value(body))
            rid = button.rotation_id
            if name == "switch":
                service.switch(rid, actor=user)
            elif name == "switch_after_freeze":
                ephemeral(respond, queued_reply(service.queue_switch(rid, actor=user)))
            elif name == "cancel_queued_switch":
                service.cancel_queued_switch(rid, actor=user)
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
                # Admins only (no alert stands behind this button): refused and audited
                # before the confirmation opens; the submission checks again.
                service.authorize_rollback(service.get(rid), None, user)
                client.views_open(
                    trigger_id=body["trigger_id"], view=rollback_view(deps, rid, None)
                )
            elif name == "revoke":
                try:
                    service.revoke(rid, actor=user)
                except GateClosed as closed:
                    # Admins may break glass, but only with a reason, in a modal.
                    rotation = service.get(rid)
                    if service.is_admin(user, rotation.secret):
                        spec = deps.catalog.secret(rotation.secret).break_glass
                        client.views_open(
                            trigger_id=body["trigger_id"],
                            view=blocks.override_modal(
                                rotation, service.gate(rid),
                                approvals=spec.approvals if spec else None,
                                freeze=service.freeze_of(rotation.secret),
                            ),
                        )
                    else:
                        raise closed

        return handler

    app.action(Action.SWITCH.value)(reported(rotation_action("switch")))
    app.action(Action.REVOKE.value)(reported(rotation_action("revoke")))
    app.action(Action.SWITCH_AFTER_FREEZE.value)(reported(rotation_action("switch_after_freeze")))
    app.action(Action.CANCEL_QUEUED_SWITCH.value)(
        reported(rotation_action("cancel_queued_switch")))
    app.action(Action.ROLLBACK.value)(reported(rotation_action("rollback")))
    app.action(Action.RESUME.value)(reported(rotation_action("resume")))
    app.action(Action.CHECK_STORE.value)(reported(rotation_action("check_store")))

    @app.action(Action.APPROVE_BREAK_GLASS.value)

    @reported
    def approve_break_glass(
        ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient
    ) -> None:
        """A second admin: refused (and audited) before the modal opens when not an admin,
        the requester, or too late; the submission checks again."""
        ack()
        button = parse_value(RotationButton, _value(body))
        request = service.authorize_break_glass_approval(button.rotation_id, _user(body))
        client.views_open(
            trigger_id=body["trigger_id"],
            view=blocks.approve_break_glass_modal(service.get(button.rotation_id), request),
        )

    @app.action(Action.ALERT_ROLLBACK.value)

    @reported
    def alert_rollback(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        """Roll back on an alert: the stored alert decides who may, and about which consumer
        (the button's consumer is never used)."""
        ack()
        button, rotation_id = _alert_button(body)
        _, consumer = deps.alerts.authorize_alert_rollback(
            button.alert_id, rotation_id, _user(body)
        )
        client.views_open(
            trigger_id=body["trigger_id"],
            view=rollback_view(deps, rotation_id, consumer, button.alert_id),
        )

    @app.action(Action.EMERGENCY_ROTATE.value)

    @reported
    def emergency(ack: Ack, body: dict[str, Any], respond: Respond, client: WebClient) -> None:
        """An alert after revocation: confirm an urgent re-rotation (admins only)."""
        ack()
        button, rotation_id = _alert_button(body)
        _, consumer = deps.alerts.authorize_alert_emergency(
            button.alert_id, rotation_id, _user(body)
        )
        client.views_open(
            trigger_id=body["trigger_id"],
            view=rollback_view(deps, rotation_id, consumer, button.alert_id),
        )
