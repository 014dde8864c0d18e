"""The `/rotate` slash command: ack, parse, call one service method, render."""

from __future__ import annotations

from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.models.views import View as SlackView

from bot.bootstrap import Container
from bot.commands import USAGE, Command, parse_command
from bot.dependency_map import dependency_map
from handlers import blocks
from handlers.respond import ephemeral, user_message


def register(app: App, c: Container) -> None:
    @app.command("/rotate")
    def rotate(ack: Ack, command: dict[str, Any], respond: Respond, client: WebClient) -> None:
        ack()  # Slack wants an answer within 3 s; everything below runs after it
        user = str(command.get("user_id", ""))
        try:
            parsed = parse_command(str(command.get("text", "")))
            if parsed.name == "start" and parsed.secret is None:
                client.views_open(
                    trigger_id=command["trigger_id"],
                    view=blocks.start_modal(sorted(c.catalog.secrets)),
                )
                return
            if parsed.name == "rollback" and parsed.rotation_id is not None:
                # A rollback is confirmed in a modal that says what will happen.
                client.views_open(
                    trigger_id=command["trigger_id"],
                    view=rollback_view(c, parsed.rotation_id, None),
                )
                return
            ephemeral(respond, run(c, parsed, user))
        except Exception as exc:  # every failure becomes a message the user can act on
            ephemeral(respond, user_message(exc))


def run(c: Container, cmd: Command, user: str) -> blocks.Rendered:
    service = c.service
    if cmd.name == "help":
        return blocks.help_message(list(USAGE.values()))
    if cmd.name == "list":
        return blocks.status_list(service.active())
    if cmd.name == "map":
        assert cmd.secret is not None
        return blocks.map_message(dependency_map(c.catalog, cmd.secret))
    if cmd.name == "history":
        assert cmd.secret is not None
        return blocks.history_message(cmd.secret, service.history(cmd.secret))
    if cmd.name == "start":
        assert cmd.secret is not None
        if cmd.dry_run:
            return blocks.plan_message(
                service.plan(cmd.secret, overlap=cmd.overlap, observe=cmd.observe)
            )
        rotation = service.start(
            cmd.secret, actor=user, overlap=cmd.overlap, observe=cmd.observe, urgent=cmd.urgent
        )
        return blocks.text_message(
            f"Started {rotation.ref} for `{rotation.secret}` ({rotation.phase.value}); the "
            f"rotation message is in <#{rotation.channel}>."
        )
    assert cmd.rotation_id is not None
    rid = cmd.rotation_id
    if cmd.name == "status":
        rotation = service.get(rid)
        if rotation.message_ts is None and not rotation.terminal:
            c.notifier.rotation_changed(rotation, rotation.pending_steps())  # (re)post it
        gate = service.gate(rid) if not rotation.terminal else None
        return blocks.rotation_message(rotation, gate)
    if cmd.name == "switch":
        r = service.switch(rid, actor=user)
        return blocks.text_message(f"{r.ref}: {blocks.PHASE_WORDS[r.phase]}")
    if cmd.name == "revoke":
        r = service.revoke(rid, actor=user)
        return blocks.text_message(f"{r.ref}: {blocks.PHASE_WORDS[r.phase]}")
    if cmd.name == "cancel":
        r = service.cancel(rid, actor=user, reason="/rotate cancel")
        return blocks.text_message(f"{r.ref}: {blocks.PHASE_WORDS[r.phase]}")
    if cmd.name == "resume":
        r = service.resume(rid, actor=user)
        return blocks.text_message(f"{r.ref}: {blocks.PHASE_WORDS[r.phase]}")
    raise AssertionError(f"unhandled command {cmd.name}")


def rollback_view(c: Container, rotation_id: int, consumer: str | None) -> SlackView:
    rotation = c.service.get(rotation_id)
    if rotation.terminal:
        from bot.errors import RotabotError

        if rotation.phase.value == "revoked":
            rotation.rollback(actor="", now=c.clock.now())  # raises: emergency re-rotation
        raise RotabotError(f"{rotation.ref} is {rotation.phase.value}: nothing to roll back")
    spec = c.catalog.secret(rotation.secret)
    notes = [
        f"{blocks.mention(cs.owner)} `{name}` ({cs.reload}): {cs.rollback or 'no rollback note'}"
        for name, cs in spec.consumers.items()
        if str(cs.reload) in ("restart", "staged")
    ]
    return blocks.rollback_modal(rotation, consumer, notes)
