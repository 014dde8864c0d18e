"""Every Slack message and view rotabot shows, composed from slack_sdk.models in one place.

Each builder returns ``(text, blocks)``: ``text`` is the plain fallback Slack shows in
notifications and to screen readers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.blocks.block_elements import RadioButtonsElement
from slack_sdk.models.blocks.blocks import InputBlock
from slack_sdk.models.views import View as SlackView

from bot.catalog.dependency_map import DependencyMap
from bot.domain.alert import Alert
from bot.domain.durations import format_duration
from bot.domain.gate import GateResult
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import ConsumerProgress, Rotation
from bot.services.emergency import OwnerNote
from bot.services.health import RotationEvidence
from bot.services.rotations import Plan
from handlers.ids import Action, AlertButton, RotationButton, StepButton, View

Rendered = tuple[str, list[Block]]

SECTION_LIMIT = 2900  # Slack allows 3,000 characters in a section; keep a margin
MESSAGE_BLOCK_LIMIT = 50
VIEW_BLOCK_LIMIT = 100
COMPACT_AFTER = 40  # consumers; past this the message shows a per-lane summary

STEP_LABEL = {
    StepState.DISTRIBUTED: "Distributed",
    StepState.VALIDATED: "Validated",
    StepState.SIGNED_OFF: "Sign off",
}
STEP_ICON = {
    StepState.WAITING: ":white_circle:",
    StepState.DISTRIBUTED: ":large_blue_circle:",
    StepState.VALIDATED: ":large_green_circle:",
    StepState.SIGNED_OFF: ":white_check_mark:",
    StepState.FAILED: ":red_circle:",
}
PHASE_WORDS = {
    Phase.READY_CHECK: "ready-check: waiting for the new credential",
    Phase.PREPARED: "prepared: new credential created beside the old one",
    Phase.DISTRIBUTING: "distributing: owners confirm their consumers have the new credential",
    Phase.VALIDATING: "validating: owners confirm their consumers work with it",
    Phase.SWITCHED: "switched: the new credential is current",
    Phase.OBSERVING: "observing: the old credential stays valid while we watch",
    Phase.REVOCABLE: "ready to revoke the old credential",
    Phase.REVOKED: "done: the old credential is revoked",
    Phase.ROLLED_BACK: "rolled back: the previous credential is current again",
    Phase.CANCELLED: "cancelled",
    Phase.FAILED: "failed: waiting to be resumed, rolled back or cancelled",
}


def mention(owner: str) -> str:
    return f"<!subteam^{owner}>" if owner.startswith("S") else f"<@{owner}>"


_OWNER_ID = re.compile(r"\bowner ([UWS][A-Z0-9]{2,})\b")


def with_mentions(text: str) -> str:
    """The domain speaks of `owner U0ALICE`; in Slack that reads better as a mention."""
    return _OWNER_ID.sub(lambda m: "owner " + mention(m.group(1)), text)


def when(ts: datetime | None) -> str:
    if ts is None:
        return "—"
    return f"<!date^{int(ts.timestamp())}^{{date_short_pretty}} {{time}}|{ts:%Y-%m-%d %H:%M} UTC>"


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text)


def _sections(lines: Sequence[str], heading: str | None = None) -> list[Block]:
    """Pack lines into as few sections as fit Slack's per-section limit."""
    blocks: list[Block] = []
    chunk = heading + "\n" if heading else ""
    for line in lines:
        if len(chunk) + len(line) + 1 > SECTION_LIMIT and chunk:
            blocks.append(SectionBlock(text=_md(chunk.rstrip())))
            chunk = ""
        chunk += line[:SECTION_LIMIT] + "\n"
    if chunk.strip():
        blocks.append(SectionBlock(text=_md(chunk.rstrip())))
    return blocks


def _button(
    text: str,
    action: Action,
    value: str,
    *,
    style: str | None = None,
    confirm: ConfirmObject | None = None,
) -> ButtonElement:
    return ButtonElement(
        text=PlainTextObject(text=text),
        action_id=action.value,
        value=value,
        style=style,
        confirm=confirm,
    )


def consumer_line(c: ConsumerProgress) -> str:
    by = f" by {mention(c.updated_by)}" if c.updated_by and c.state is not StepState.WAITING else ""
    return (
        f"{STEP_ICON[c.state]} `{c.name}` · {mention(c.owner)} · {c.reload} · *{c.state.value}*{by}"
    )


def _escape(text: str) -> str:
    """Text from back ends and consumers (application names, reasons) is shown, not parsed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


HEALTH_LINES = 20  # per message; the rest is in `/rotate status`


def evidence_blocks(rotation: Rotation, evidence: RotationEvidence) -> list[Block]:
    """Usage of the old credential (after the switch) and the latest health result per
    consumer, where known."""
    lines: list[str] = []
    usage = evidence.usage
    if usage is not None and rotation.phase in (Phase.OBSERVING, Phase.REVOCABLE):
        in_use = usage.in_use
        icon = ":grey_question:" if in_use is None else (
            ":warning:" if in_use else ":white_check_mark:"
        )
        lines.append(f"{icon} old credential: {_escape(usage.summary)[:600]}")
    known = [c for c in rotation.consumers_in_order() if c.name in evidence.health]
    for c in known[:HEALTH_LINES]:
        h = evidence.health[c.name]
        icon = ":large_green_circle:" if h.ok else ":red_circle:"
        lines.append(f"{icon} `{c.name}` health: {_escape(h.reason)[:300]} · {when(h.at)}")
    if len(known) > HEALTH_LINES:
        lines.append(f"…and {len(known) - HEALTH_LINES} more health results")
    if not lines:
        return []
    return [DividerBlock(), *_sections(lines, "*Evidence*")]


def rotation_message(
    rotation: Rotation,
    gate: GateResult | None = None,
    evidence: RotationEvidence | None = None,
) -> Rendered:
    """The one parent message of a rotation, updated in place."""
    text = f"{rotation.ref} {rotation.secret}: {PHASE_WORDS[rotation.phase]}"
    blocks: list[Block] = [
        HeaderBlock(
            text=PlainTextObject(text=f"{rotation.ref} · rotating {rotation.secret}"[:150])
        ),
        SectionBlock(
            fields=[
                _md(f"*Phase*\n{PHASE_WORDS[rotation.phase]}"),
                _md(f"*Started by*\n{mention(rotation.started_by)}"),
                _md(f"*Overlap until*\n{when(rotation.overlap_until)}"),
                _md(f"*Observe until*\n{when(rotation.observe_until)}"),
            ]
        ),
    ]
    if rotation.urgent:
        blocks.append(ContextBlock(elements=[_md(":rotating_light: urgent re-rotation")]))
    if rotation.phase is Phase.FAILED and rotation.failure_reason:
        blocks.append(
            SectionBlock(text=_md(f":warning: {rotation.failure_reason}"[:SECTION_LIMIT]))
        )
    if rotation.phase is Phase.READY_CHECK and rotation.failure_reason is None:
        blocks.append(
            SectionBlock(
                text=_md(
                    f"Write the new credential to `{rotation.store_path}`; rotabot notices the new "
                    "version and asks the owners in this thread."
                )
            )
        )
    blocks.append(DividerBlock())
    compact = len(rotation.consumers) > COMPACT_AFTER
    active_lane = rotation.active_lane()
    for lane in rotation.lanes:
        consumers = rotation.consumers_in_lane(lane)
        if not consumers:
            continue
        done = sum(1 for c in consumers if c.state in (StepState.VALIDATED, StepState.SIGNED_OFF))
        marker = (
            " ← now"
            if lane == active_lane and rotation.phase in (Phase.DISTRIBUTING, Phase.VALIDATING)
            else ""
        )
        heading = f"*{lane}* · {done}/{len(consumers)} validated{marker}"
        if compact:
            behind = [
                c for c in consumers if c.state not in (StepState.VALIDATED, StepState.SIGNED_OFF)
            ]
            names = ", ".join(f"`{c.name}`" for c in behind[:15])
            more = f" and {len(behind) - 15} more" if len(behind) > 15 else ""
            line = f"still to validate: {names}{more}" if behind else "all validated"
            blocks.extend(_sections([line], heading))
        else:
            blocks.extend(_sections([consumer_line(c) for c in consumers], heading))
    if evidence is not None:
        blocks.extend(evidence_blocks(rotation, evidence))
    if gate is not None and not gate.open and rotation.phase in (Phase.OBSERVING,):
        blocks.append(DividerBlock())
        blocks.extend(
            _sections([f"• {with_mentions(u)}" for u in gate.unmet[:20]], "*Before revocation*")
        )
    actions = rotation_actions(rotation)
    if actions:
        blocks.append(ActionsBlock(elements=actions))
    blocks.append(
        ContextBlock(
            elements=[
                _md(
                    f"{len(rotation.consumers)} consumers · lanes {' → '.join(rotation.lanes)} · "
                    f"`/rotate status {rotation.ref}`"
                )
            ]
        )
    )
    if len(blocks) > MESSAGE_BLOCK_LIMIT:
        overflow = ContextBlock(
            elements=[_md("More detail than one message holds: see App Home or `/rotate status`.")]
        )
        blocks = [*blocks[: MESSAGE_BLOCK_LIMIT - 1], overflow]
    return text, blocks


def rotation_actions(rotation: Rotation) -> list[ButtonElement]:
    value = RotationButton(rotation_id=rotation.id or 0).model_dump_json()
    buttons: list[ButtonElement] = []
    if rotation.ready_to_switch():
        buttons.append(
            _button(
                "Switch to new credential",
                Action.SWITCH,
                value,
                style="primary",
                confirm=ConfirmObject(
                    title="Switch?",
                    confirm="Switch",
                    deny="Not yet",
                    text="The new credential becomes current. The old one stays "
                    "valid until revocation.",
                ),
            )
        )
    if rotation.phase in (Phase.REVOCABLE, Phase.OBSERVING):
        buttons.append(
            _button(
                "Revoke old credential",
                Action.REVOKE,
                value,
                style="danger",
                confirm=ConfirmObject(
                    title="Revoke?",
                    confirm="Revoke",
                    deny="Cancel",
                    text="The old credential stops working for good. This cannot be undone.",
                ),
            )
        )
    if rotation.phase is Phase.FAILED:
        buttons.append(_button("Resume", Action.RESUME, value, style="primary"))
    if rotation.phase is Phase.READY_CHECK:
        buttons.append(_button("Check the store again", Action.CHECK_STORE, value))
    if rotation.phase not in (Phase.REVOKED, Phase.ROLLED_BACK, Phase.CANCELLED, Phase.READY_CHECK):
        buttons.append(_button("Roll back", Action.ROLLBACK, value))
    return buttons


def turn_prompt(rotation: Rotation, consumer: ConsumerProgress, step: StepState) -> Rendered:
    """A thread message asking one owner for their next step."""
    ask = {
        StepState.DISTRIBUTED: "make sure it has the new credential (pending version "
        f"{rotation.new_version}), then press *Distributed*",
        StepState.VALIDATED: "check it works with the new credential on its real dependency "
        "path, then press *Validated*",
        StepState.SIGNED_OFF: "when you are OK for the old credential to be revoked, press "
        "*Sign off*",
    }[step]
    text = f"{consumer.name} ({consumer.lane}): {mention(consumer.owner)}, {ask}"
    step_value = StepButton(
        rotation_id=rotation.id or 0, consumer=consumer.name, step=step
    ).model_dump_json()
    problem_value = StepButton(
        rotation_id=rotation.id or 0, consumer=consumer.name, step=StepState.FAILED
    ).model_dump_json()
    return text, [
        SectionBlock(
            text=_md(
                f"*{consumer.name}* ({consumer.lane}, {consumer.reload}) · "
                f"{mention(consumer.owner)}, {ask}."
            )
        ),
        ActionsBlock(
            elements=[
                _button(STEP_LABEL[step], Action.STEP, step_value, style="primary"),
                _button("Report a problem", Action.REPORT_PROBLEM, problem_value, style="danger"),
            ]
        ),
    ]


def step_done(
    rotation: Rotation, consumer: ConsumerProgress, step: StepState, actor: str
) -> Rendered:
    text = f"{consumer.name} ({consumer.lane}) {step.value} by {actor}"
    return text, [
        ContextBlock(
            elements=[
                _md(
                    f"{STEP_ICON[step]} `{consumer.name}` ({consumer.lane}) *{step.value}* by "
                    f"{mention(actor)} · {rotation.ref}"
                )
            ]
        )
    ]


def plan_message(plan: Plan) -> Rendered:
    text = f"Dry run for {plan.secret}: nothing was changed"
    lines = [
        f"*Dry run: {plan.secret}* (nothing was changed)",
        f"issuer `{plan.issuer_kind}` · store `{plan.store_kind}` at `{plan.store_path}` · "
        f"overlap {format_duration(plan.overlap)} · observe {format_duration(plan.observe)}",
    ]
    for i, (lane, consumers) in enumerate(plan.order, start=1):
        lines.append(f"*{i}. {lane}*")
        lines.extend(f"   • `{c.name}` · {mention(c.owner)} · {c.reload}" for c in consumers)
    blocks = _sections(lines)
    if plan.reload_notes:
        blocks.extend(
            _sections([f"• {n}" for n in plan.reload_notes], "*What each consumer needs*")
        )
    if plan.blockers:
        blocks.extend(_sections([f"• {b}" for b in plan.blockers], ":no_entry: *Blocks the start*"))
    if plan.warnings:
        blocks.extend(_sections([f"• {w}" for w in plan.warnings], ":warning: *Readiness notes*"))
    return text, blocks[:MESSAGE_BLOCK_LIMIT]


def error_message(message: str, usage: str | None = None) -> Rendered:
    message = with_mentions(message)
    lines = [f":warning: {message}"]
    if usage:
        lines.append(f"Usage:\n```{usage}```")
    return message, _sections(lines)


def text_message(text: str) -> Rendered:
    return text, _sections([text])


def status_list(rotations: Sequence[Rotation]) -> Rendered:
    if not rotations:
        return text_message("No active rotations. Start one with `/rotate start SECRET`.")
    lines = [f"• *{r.ref}* `{r.secret}` · {r.phase.value}" + _waiting(r) for r in rotations]
    return f"{len(rotations)} active rotations", _sections(lines, "*Active rotations*")


def _waiting(rotation: Rotation) -> str:
    pending = rotation.pending_steps()
    if not pending:
        return ""
    names = ", ".join(f"`{c.name}`" for c, _ in pending[:5])
    more = f" +{len(pending) - 5}" if len(pending) > 5 else ""
    return f" · waiting on {names}{more}"


def history_message(secret: str, rotations: Sequence[Rotation]) -> Rendered:
    if not rotations:
        return text_message(f"`{secret}` has never been rotated by rotabot.")
    lines = [
        f"• *{r.ref}* {r.phase.value} · started {when(r.created_at)} by "
        f"{mention(r.started_by)}" + (f" · finished {when(r.finished_at)}" if r.finished_at else "")
        for r in rotations
    ]
    return f"History of {secret}", _sections(lines, f"*History of `{secret}`*")


def map_message(dmap: DependencyMap) -> Rendered:
    lines = [
        f"*{dmap.secret}*: {dmap.description}",
        f"issuer `{dmap.issuer_kind}`"
        + (f" ({dmap.issuer_name})" if dmap.issuer_name else "")
        + ("" if dmap.dual_valid else " · :warning: hard cutover"),
        f"store `{dmap.store_name}` ({dmap.store_kind}, {dmap.store_location}) at "
        f"`{dmap.store_path}`",
    ]
    for lane in dmap.lanes:
        lines.append(f"*{lane.name}*")
        for c in lane.consumers:
            check = c.health_check.describe() if c.health_check else "no health check"
            lines.append(
                f"   • `{c.name}` · {mention(c.owner)} · {c.reload} · {check} · "
                f"rollback: {c.rollback or 'no rollback note'}"
            )
    return f"Dependency map of {dmap.secret}", _sections(lines)


def help_message(usage_lines: Sequence[str]) -> Rendered:
    lines = [
        "*rotabot* runs credential rotations with overlap, owner sign-off and "
        "evidence-based revocation.",
        "```" + "\n".join(usage_lines) + "```",
    ]
    return "rotabot help", _sections(lines)


def alert_message(alert: Alert, context: str, rotation_id: int | None) -> Rendered:
    text = context
    value = AlertButton(
        alert_id=alert.id or 0, rotation_id=rotation_id, consumer=alert.consumer
    ).model_dump_json()
    blocks: list[Block] = [
        SectionBlock(text=_md(f":rotating_light: {context}"[:SECTION_LIMIT])),
        ContextBlock(
            elements=[
                _md(
                    f"{alert.ref} · class *{alert.failure_class}* · {alert.reason[:200]} · seen "
                    f"{alert.count}x · last {when(alert.last_seen)} · {alert.status.value}"
                )
            ]
        ),
    ]
    buttons = []
    if rotation_id is not None and alert.rotation_id is None and alert.unresolved:
        # After R-N revoked the old credential there is nothing to roll back to
        # (bot.services.alerts.prompt_rotation): offer an urgent re-rotation instead.
        buttons.append(
            _button("Emergency re-rotation", Action.EMERGENCY_ROTATE, value, style="danger")
        )
    elif rotation_id is not None and alert.unresolved:
        buttons.append(
            _button(f"Roll back R-{rotation_id}", Action.ALERT_ROLLBACK, value, style="danger")
        )
    if alert.unresolved:
        buttons.append(_button("Not related", Action.ALERT_NOT_RELATED, value))
        buttons.append(_button("Acknowledge", Action.ALERT_ACK, value))
    if buttons:
        blocks.append(ActionsBlock(elements=buttons))
    return text, blocks


# --- views ----------------------------------------------------------------------------


def start_modal(secrets: Sequence[str]) -> SlackView:
    options = [Option(text=PlainTextObject(text=s[:75]), value=s) for s in secrets[:100]]
    return SlackView(
        type="modal",
        callback_id=View.START.value,
        title=PlainTextObject(text="Start a rotation"),
        submit=PlainTextObject(text="Start"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            InputBlock(
                block_id="secret",
                label=PlainTextObject(text="Secret"),
                element=StaticSelectElement(
                    action_id="value", options=options, placeholder=PlainTextObject(text="Pick one")
                ),
            ),
            InputBlock(
                block_id="overlap",
                optional=True,
                label=PlainTextObject(text="Overlap (e.g. 24h)"),
                element=PlainTextInputElement(action_id="value"),
            ),
            InputBlock(
                block_id="observe",
                optional=True,
                label=PlainTextObject(text="Observation window (e.g. 2h)"),
                element=PlainTextInputElement(action_id="value"),
            ),
        ],
    )


def report_problem_modal(button: StepButton) -> SlackView:
    return SlackView(
        type="modal",
        callback_id=View.REPORT_PROBLEM.value,
        private_metadata=button.model_dump_json(),
        title=PlainTextObject(text="Report a problem"),
        submit=PlainTextObject(text="Report"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=_md(f"`{button.consumer}` in R-{button.rotation_id}")),
            InputBlock(
                block_id="what",
                label=PlainTextObject(text="What fails?"),
                element=PlainTextInputElement(
                    action_id="value",
                    multiline=True,
                    placeholder=PlainTextObject(
                        text="e.g. 401 invalid_api_key from the provider (never paste the key)"
                    ),
                ),
            ),
        ],
    )


def override_modal(rotation: Rotation, gate: GateResult) -> SlackView:
    return SlackView(
        type="modal",
        callback_id=View.REVOKE_OVERRIDE.value,
        private_metadata=RotationButton(rotation_id=rotation.id or 0).model_dump_json(),
        title=PlainTextObject(text="Break-glass revoke"),
        submit=PlainTextObject(text="Revoke anyway"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            *_sections(
                [f"• {with_mentions(u)}" for u in gate.unmet[:20]],
                f"*{rotation.ref} is not ready to revoke:*",
            ),
            InputBlock(
                block_id="reason",
                label=PlainTextObject(text="Reason (posted and audited)"),
                element=PlainTextInputElement(action_id="value", multiline=True, min_length=10),
            ),
        ],
    )


def owner_rollback_lines(notes: Sequence[OwnerNote]) -> list[str]:
    """One line per owner who must act on a rollback, for the modal and the thread alike."""
    return [
        f"{mention(n.owner)} `{n.consumer}` ({n.lane}, {n.reload}): "
        f"{n.note or 'no rollback note in the catalog'}"
        for n in notes
    ]


def rollback_modal(
    rotation: Rotation, consumer: str | None, restart_notes: Sequence[str], alert_id: int = 0
) -> SlackView:
    """The confirmation before a rollback: what the store and issuer will do, what happens to
    the new credential (the admin's choice), and which owners must act."""
    switched = rotation.switched_at is not None
    old = f"version {rotation.old_version}" if rotation.old_version else "the old credential"
    new = f"version {rotation.new_version}" if rotation.new_version else "the new credential"
    if switched:
        what = (
            f"The previous credential ({old}) becomes current again at `{rotation.store_path}` "
            "(its data is written back as the current version) and the issuer keeps it valid. "
            f"The new credential ({new}) stops being current."
        )
    else:
        what = (
            f"Nothing changes for consumers that read the current credential: the previous "
            f"one ({old}) is still current at `{rotation.store_path}` and the issuer keeps it "
            f"valid. The new credential ({new}) is never made current."
        )
    what += (
        f" {rotation.ref} ends as rolled back. Below you choose whether the new credential "
        "stays valid but unused (pending) or is revoked now. Owners of restart and staged "
        "consumers are mentioned in the rotation thread with their rollback notes."
    )
    notes = list(restart_notes) or ["No consumer needs a restart to go back."]
    return SlackView(
        type="modal",
        callback_id=View.ROLLBACK.value,
        private_metadata=AlertButton(
            alert_id=alert_id, rotation_id=rotation.id, consumer=consumer
        ).model_dump_json(),
        title=PlainTextObject(text=f"Roll back {rotation.ref}"[:24]),
        submit=PlainTextObject(text="Roll back"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=_md(f"*What will happen:* {what}"[:SECTION_LIMIT])),
            *_sections([f"• {n}" for n in notes], "*Owners to act*"),
            InputBlock(
                block_id="new_credential",
                label=PlainTextObject(text="The new credential"),
                element=RadioButtonsElement(
                    action_id="value",
                    initial_option=Option(
                        text=PlainTextObject(text="Keep it pending (valid, unused)"),
                        value="keep",
                    ),
                    options=[
                        Option(
                            text=PlainTextObject(text="Keep it pending (valid, unused)"),
                            value="keep",
                        ),
                        Option(text=PlainTextObject(text="Revoke it now"), value="revoke"),
                    ],
                ),
            ),
            InputBlock(
                block_id="reason",
                optional=True,
                label=PlainTextObject(text="Reason"),
                element=PlainTextInputElement(action_id="value"),
            ),
        ],
    )


def rollback_done(
    rotation: Rotation, actor: str, new_credential: str, owner_lines: Sequence[str]
) -> Rendered:
    """The thread note after a rollback: who, what the store holds now, who must act."""
    text = (
        f":leftwards_arrow_with_hook: {mention(actor)} rolled back {rotation.ref}: the previous "
        f"credential of `{rotation.secret}` is current again and stays valid; the new one is "
        f"{new_credential}."
    )
    lines = [f"• {line}" for line in owner_lines]
    heading = (
        "*Owners to act now* (these consumers do not pick it up by themselves):"
        if lines
        else None
    )
    blocks: list[Block] = [SectionBlock(text=_md(text))]
    if lines:
        blocks.extend(_sections(lines, heading))
    fallback = text + ("\n" + "\n".join(lines) if lines else "")
    return fallback[:3000], blocks[:MESSAGE_BLOCK_LIMIT]


def emergency_modal(
    revoked: Rotation, factor: int, alert_id: int = 0, consumer: str | None = None
) -> SlackView:
    """After revocation rollback is impossible: confirm an urgent re-rotation instead."""
    what = (
        f"{revoked.ref} already revoked the old credential of `{revoked.secret}`"
        f"{' on ' + when(revoked.finished_at) if revoked.finished_at else ''}: there is no "
        "previous credential to go back to. An *emergency re-rotation* starts a new rotation of "
        f"`{revoked.secret}` marked urgent: a new credential is created beside the current one "
        "(both stay valid), owners are asked again lane by lane, and their reminders and "
        f"escalations come {factor} times sooner than usual."
    )
    return SlackView(
        type="modal",
        callback_id=View.EMERGENCY.value,
        private_metadata=AlertButton(
            alert_id=alert_id, rotation_id=revoked.id, consumer=consumer
        ).model_dump_json(),
        title=PlainTextObject(text="Emergency re-rotation"),
        submit=PlainTextObject(text="Start urgent rotation"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=_md(f"*What will happen:* {what}"[:SECTION_LIMIT])),
            InputBlock(
                block_id="reason",
                optional=True,
                label=PlainTextObject(text="Reason"),
                element=PlainTextInputElement(action_id="value"),
            ),
        ],
    )


def home_view(
    user: str,
    active: Sequence[Rotation],
    mine: Sequence[tuple[Rotation, ConsumerProgress, StepState]],
    alerts: Sequence[Alert],
) -> SlackView:
    blocks: list[Block] = [HeaderBlock(text=PlainTextObject(text="rotabot"))]
    blocks.extend(
        _sections(
            [f"• *{r.ref}* `{r.secret}` · {r.phase.value}{_waiting(r)}" for r in active]
            or ["No active rotations."],
            "*Active rotations*",
        )
    )
    blocks.append(DividerBlock())
    blocks.extend(
        _sections(
            [f"• *{r.ref}* `{c.name}` ({c.lane}): *{STEP_LABEL[s]}*" for r, c, s in mine]
            or ["Nothing is waiting on you."],
            f"*Waiting on {mention(user)}*",
        )
    )
    blocks.append(DividerBlock())
    blocks.extend(
        _sections(
            [
                f"• {a.ref} `{a.consumer}` ({a.lane}) {a.failure_class} · {a.count}x · "
                f"{a.status.value}"
                for a in alerts
            ]
            or ["No recent alerts."],
            "*Recent alerts*",
        )
    )
    return SlackView(type="home", blocks=blocks[:VIEW_BLOCK_LIMIT])
