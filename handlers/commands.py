"""The `/rotate` slash command: ack, parse, call one service method, render."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.models.views import View as SlackView

from bot.catalog.dependency_map import dependency_map
from bot.domain.commands import DESCRIPTIONS, USAGE, Command, parse_command
from bot.domain.queued_switch import QueuedSwitch
from bot.domain.rotation import Rotation
from handlers import blocks
from handlers.deps import Deps
from handlers.respond import ephemeral, reported


def register(app: App, deps: Deps) -> None:
    @app.command("/rotate")
    @reported
    def rotate(ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()  # Slack wants an answer within 3 s; everything below runs after it
        user = str(command.get("user_id", ""))
        parsed = parse_command(str(command.get("text", "")))
        if parsed.name == "start" and parsed.secret is None:
            client.views_open(
                trigger_id=command["trigger_id"],
                view=blocks.start_modal(sorted(deps.catalog.secrets)),
            )
            return
        if parsed.name == "rollback" and parsed.rotation_id is not None:
            # Refused (and audited) before the modal, as the button is: admins only here.
            deps.rotations.authorize_rollback(deps.rotations.get(parsed.rotation_id), None, user)
            # A rollback is confirmed in a modal that says what will happen.
            client.views_open(
                trigger_id=command["trigger_id"],
                view=rollback_view(deps, parsed.rotation_id, None),
            )
            return
        # The trigger id names this user action: processed twice, it creates nothing new.
        ephemeral(respond, run(deps, parsed, user, action_id=command.get("trigger_id")))


def run(deps: Deps, cmd: Command, user: str, action_id: str | None = None) -> blocks.Rendered:
    service = deps.rotations
    if cmd.name == "help":
        return blocks.help_message([(USAGE[name], DESCRIPTIONS[name]) for name in USAGE])
    if cmd.name == "reload":
        if deps.catalog_keeper is None:
            return blocks.text_message("This rotabot cannot reload its catalog; restart it.")
        outcome = deps.catalog_keeper.reload(actor=user)
        problems = [f"• {blocks.escape_mrkdwn(e)}" for e in outcome.errors]
        return blocks.text_message("\n".join((outcome.summary, *problems)))
    if cmd.name == "list":
        return blocks.status_list(service.active(), len(deps.catalog.secrets))
    if cmd.name == "secrets":
        now = deps.clock.now()
        upcoming = {u.secret: u.at for u in deps.schedules.upcoming(now)}
        return blocks.secrets_message(deps.catalog, service.active(), upcoming, now)
    if cmd.name == "map":
        assert cmd.secret is not None
        return blocks.map_message(dependency_map(deps.catalog, cmd.secret))
    if cmd.name == "history":
        assert cmd.secret is not None
        return blocks.history_message(cmd.secret, service.history(cmd.secret))
    if cmd.name == "schedule":
        from handlers.blocks.schedule import scheduled_message

        assert cmd.secret is not None and cmd.at is not None
        svc = deps.schedules
        return scheduled_message(svc, svc.schedule(cmd.secret, cmd.at, actor=user))
    if cmd.name == "start":
        assert cmd.secret is not None
        if cmd.dry_run:
            # Anyone may dry-run; the store and issuer findings (they name environment
            # variables, URLs and paths) are in the plan only when `user` is an admin.
            return blocks.plan_message(
                service.plan(cmd.secret, overlap=cmd.overlap, observe=cmd.observe, viewer=user)
            )
        if service.is_cutover(cmd.secret):
            return open_cutover_review(deps, cmd.secret, user)
        rotation = service.start(
            cmd.secret, actor=user, overlap=cmd.overlap, observe=cmd.observe, urgent=cmd.urgent,
            action_id=action_id, override_freeze=cmd.override_freeze,
        )
        return blocks.text_message(
            f"Started {rotation.ref} for {blocks.code(rotation.secret)} "
            f"({blocks.phase_words(rotation)}); "
            f"the rotation message is in <#{blocks.escape_mrkdwn(rotation.channel or '')}>."
        )
    assert cmd.rotation_id is not None
    rid = cmd.rotation_id
    if cmd.name == "status":
        rotation = service.get(rid)
        if not rotation.terminal and (rotation.message_ts is None or deps.notifier.posts_once):
            # (Re)post the message and any prompt a crash left unposted (claims skip the rest)
            # and refresh the message, at most once per coalescing interval.
            deps.notifier.rotation_changed(rotation, rotation.pending_steps())
        gate = service.gate_of(rotation) if not rotation.terminal else None
        evidence = deps.health.evidence(rotation)
        return blocks.rotation_message(
            rotation, gate, evidence, service.message_context(rotation))
    if cmd.name == "add-consumer":
        assert cmd.consumer is not None
        r = service.add_consumer(rid, cmd.consumer, actor=user)
        return blocks.text_message(
            f"{r.ref}: {blocks.code(cmd.consumer)} added ({blocks.phase_words(r)}); the thread "
            "was told.")
    if cmd.name == "switch" and cmd.after_freeze == "queue":
        return queued_reply(service.queue_switch(rid, actor=user))
    if cmd.name == "switch" and cmd.after_freeze == "cancel":
        r = service.cancel_queued_switch(rid, actor=user)
        return blocks.text_message(f"{r.ref}: the queued switch is cancelled; nothing else "
                                   "changed.")
    if cmd.name == "switch":
        r = service.switch(rid, actor=user, override_freeze=cmd.override_freeze)
        return blocks.text_message(f"{r.ref}: {blocks.phase_words(r)}")
    if cmd.name == "revoke":
        r = service.revoke(rid, actor=user, override_freeze=cmd.override_freeze)
        return blocks.text_message(f"{r.ref}: {blocks.phase_words(r)}")
    if cmd.name == "cancel":
        r = service.cancel(rid, actor=user, reason="/rotate cancel")
        return blocks.text_message(f"{r.ref}: {blocks.phase_words(r)}")
    if cmd.name == "resume":
        r = service.resume(rid, actor=user)
        return blocks.text_message(f"{r.ref}: {blocks.phase_words(r)}")
    raise AssertionError(f"unhandled command {cmd.name}")


def open_cutover_review(deps: Deps, secret: str, user: str) -> blocks.Rendered:
    """A hard cutover starts with its readiness review: every owner confirms first."""
    from handlers.blocks.schedule import cutover_review_message

    svc = deps.schedules
    return cutover_review_message(svc, svc.open_cutover_review(secret, actor=user))


def queued_reply(queued: tuple[Rotation, QueuedSwitch]) -> blocks.Rendered:
    rotation, waiting = queued
    return blocks.text_message(
        f"{rotation.ref}: rotabot switches it once the freeze ends "
        f"({waiting.after:%Y-%m-%d %H:%M} UTC), if it is still ready then; the thread was told."
    )


def rollback_view(
    deps: Deps, rotation_id: int, consumer: str | None, alert_id: int = 0
) -> SlackView:
    """The confirmation modal: rollback before revocation, an emergency re-rotation after."""
    from bot.domain.errors import RotabotError
    from bot.services.emergency import URGENT_FACTOR, owners_to_act

    rotation = deps.rotations.get(rotation_id)
    if rotation.phase.value == "revoked":
        return blocks.emergency_modal(rotation, URGENT_FACTOR, alert_id, consumer)
    if rotation.terminal:
        raise RotabotError(
            f"{rotation.ref} is already {blocks.phase_words(rotation)}: nothing to roll back, "
            "nothing changed"
        )
    notes = blocks.owner_rollback_lines(owners_to_act(deps.catalog, rotation.secret))
    return blocks.rollback_modal(rotation, consumer, notes, alert_id)
