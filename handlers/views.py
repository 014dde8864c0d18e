"""Modal submissions: start, report a problem, break-glass revoke, rollback, emergency
re-rotation, an alert marked not related."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot.domain.durations import parse_duration
from bot.domain.lifecycle import StepState
from handlers import blocks
from handlers.deps import Deps
from handlers.ids import (
    AlertButton,
    BadButton,
    NotRelatedMeta,
    RotationButton,
    StepButton,
    View,
    parse_value,
)
from handlers.respond import direct_message, reported


def _input(view: dict[str, Any], block: str) -> str | None:
    element = view["state"]["values"].get(block, {}).get("value", {})
    if "selected_option" in element:
        option = element.get("selected_option") or {}
        return str(option.get("value")) if option else None
    value = element.get("value")
    return str(value).strip() if value else None


def _view_id(view: dict[str, Any]) -> str | None:
    """The modal's id: one submitted view is one user action (a modal answered with errors
    is submitted again under the same id, but created nothing the first time)."""
    return str(view["id"]) if view.get("id") else None


def register(app: App, deps: Deps) -> None:
    service = deps.rotations

    @app.view(View.START.value)

    @reported
    def start(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        errors: dict[str, str] = {}
        durations = {}
        for field in ("overlap", "observe"):
            raw = _input(view, field)
            try:
                durations[field] = parse_duration(raw) if raw else None
            except ValueError:
                errors[field] = "Use a duration like 30m, 2h or 3d"
        if errors:
            ack(response_action="errors", errors=errors)
            return
        ack()
        user = str(body["user"]["id"])
        secret = _input(view, "secret") or ""
        if secret and service.is_cutover(secret):
            from handlers.commands import open_cutover_review

            direct_message(client, user, open_cutover_review(deps, secret, user))
            return
        r = service.start(
            secret, actor=user, overlap=durations["overlap"], observe=durations["observe"],
            action_id=_view_id(view),  # this modal, submitted twice, starts one rotation
        )
        direct_message(client, user, blocks.text_message(f"Started {r.ref} for `{secret}`."))

    @app.view(View.REPORT_PROBLEM.value)

    @reported
    def report(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        what = _input(view, "what")
        if not what:
            ack(response_action="errors", errors={"what": "Say what fails, in a sentence"})
            return
        ack()
        user = str(body["user"]["id"])
        button = parse_value(StepButton, view.get("private_metadata"))
        # Told in the rotation's thread and posted to the incident channel by the services.
        deps.alerts.report(
            button.rotation_id, button.consumer, actor=user, description=what,
            action_id=_view_id(view),  # this modal, submitted twice, adds one alert
        )

    @app.view(View.REVOKE_OVERRIDE.value)

    @reported
    def override(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        reason = _input(view, "reason") or ""
        if len(reason) < 10:
            ack(response_action="errors", errors={"reason": "Say why, in a sentence"})
            return
        ack()
        user = str(body["user"]["id"])
        button = parse_value(RotationButton, view.get("private_metadata"))
        # The thread's receipt says who broke the glass and why (handlers/notices.py); where
        # two people are needed, it asks the other admins with an Approve button.
        r = service.revoke(button.rotation_id, actor=user, override_reason=reason,
                           override_freeze=_input(view, "freeze_reason"))
        if service.two_person(r.secret) and r.phase.value in ("observing", "revocable"):
            direct_message(client, user, blocks.text_message(
                f"{r.ref}: asked another admin to approve the break-glass revoke in the "
                "thread; nothing is revoked until they do."))

    @app.view(View.APPROVE_BREAK_GLASS.value)

    @reported
    def approve(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        reason = _input(view, "reason") or ""
        if len(reason) < 10:
            ack(response_action="errors", errors={"reason": "Say why, in a sentence"})
            return
        ack()
        button = parse_value(RotationButton, view.get("private_metadata"))
        # The thread's receipts name both admins and both reasons.
        service.approve_break_glass(
            button.rotation_id, actor=str(body["user"]["id"]), reason=reason)

    @app.view(View.ROLLBACK.value)

    @reported
    def rollback(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        ack()
        user = str(body["user"]["id"])
        meta = parse_value(AlertButton, view.get("private_metadata"))
        if meta.rotation_id is None:
            raise BadButton("this confirmation is out of date; nothing changed")
        consumer = None  # opened from the rotation's message or `/rotate rollback`: admins
        if meta.alert_id or meta.consumer is not None:
            # Opened on an alert: the stored alert decides again, now (private_metadata is as
            # forgeable as a button value, and the alert may have been resolved meanwhile).
            _, consumer = deps.alerts.authorize_alert_rollback(
                meta.alert_id, meta.rotation_id, user
            )
        revoke_new = _input(view, "new_credential") == "revoke"
        r, changed = service.rollback_once(
            meta.rotation_id,
            actor=user,
            revoke_new=revoke_new,
            reason=_input(view, "reason"),
            consumer=consumer,
        )
        if not changed:
            # A second modal submitted after the first one rolled back: say so, do nothing.
            direct_message(client, user, blocks.text_message(
                f"{r.ref} is {blocks.phase_words(r)}; nothing changed."))
        # Otherwise the thread's receipt names who rolled back, why, and the owners to act;
        # the rotation's alerts are resolved and lose their buttons (AlertService).

    @app.view(View.EMERGENCY.value)

    @reported
    def emergency(ack: Ack, body: dict[str, Any], view: dict[str, Any], client: WebClient) -> None:
        ack()
        user = str(body["user"]["id"])
        from bot.services.emergency import start_emergency

        meta = parse_value(AlertButton, view.get("private_metadata"))
        if meta.rotation_id is None:
            raise BadButton("this confirmation is out of date; nothing changed")
        if meta.alert_id or meta.consumer is not None:
            # Opened on an alert: the stored alert must still offer it (start_emergency
            # checks the admin again).
            deps.alerts.authorize_alert_emergency(meta.alert_id, meta.rotation_id, user)
        outcome = start_emergency(
            service, meta.rotation_id, actor=user, reason=_input(view, "reason")
        )
        r = outcome.rotation
        if not outcome.started:
            direct_message(client, user, blocks.text_message(
                f"{r.ref} of {blocks.code(r.secret)} is already running ({r.phase.value}); "
                "nothing new was started."))
            return
        old = service.get(meta.rotation_id)
        if old.channel and old.message_ts:
            deps.notifier.post(
                old.channel,
                blocks.text_message(
                    f":rotating_light: {blocks.mention(user)} started {r.ref}, an urgent "
                    f"re-rotation of {blocks.code(r.secret)} (rollback is impossible after "
                    "revocation)."
                ),
                old.message_ts,
            )
        direct_message(client, user, blocks.text_message(
            f"Started {r.ref}, an urgent re-rotation of {blocks.code(r.secret)}."))


    @app.view(View.ALERT_NOT_RELATED.value)
    @reported
    def not_related(ack: Ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        reason = _input(view, "reason") or ""
        if len(reason) < 5:
            ack(response_action="errors", errors={"reason": "Say why it is not related"})
            return
        ack()
        meta = parse_value(NotRelatedMeta, view.get("private_metadata"))
        message = (meta.channel, meta.ts) if meta.channel and meta.ts else None
        outcome = deps.alerts.not_related(
            meta.alert_id, actor=str(body["user"]["id"]), reason=reason, message=message)
        if outcome.changed:
            deps.alerts.refresh(meta.alert_id)


__all__ = ["StepState", "register"]
