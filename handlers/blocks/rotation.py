"""The one parent message of a rotation (updated in place), its buttons, its evidence, and
the thread note after a step."""

from __future__ import annotations

from datetime import timedelta

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    PlainTextObject,
    SectionBlock,
)

from bot.domain.durations import format_duration
from bot.domain.evidence import EVIDENCE_ACTOR
from bot.domain.gate import GateResult
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import ConsumerProgress, Rotation
from bot.services.health import RotationEvidence
from bot.services.rotations import MessageContext
from handlers.blocks.common import (
    MESSAGE_BLOCK_LIMIT,
    SECTION_LIMIT,
    STEP_ICON,
    Rendered,
    button,
    code,
    escape_mrkdwn,
    md,
    mention,
    mentions,
    phase_words,
    sections,
    step_words,
    told,
    when,
)
from handlers.ids import Action, RotationButton

COMPACT_AFTER = 40  # consumers; past this the message shows a per-lane summary
HEALTH_LINES = 20  # per message; the rest is in `/rotate status`
UNMAPPED_LINES = 10  # per message
TARGET_LABELS = 10  # per lane; the lane-opened receipt in the thread lists every one


# The steps that can rest on a consumer's own evidence; the rest are a person's word.
_EVIDENCE_STEPS = (StepState.DISTRIBUTED, StepState.VALIDATED)


def step_basis(c: ConsumerProgress) -> str:
    """What a step rests on, after its name: "validated: inference-api reported version 7 at
    09:12" (the consumer's report), "validated by @alice · evidence: ..." (a click the
    consumer's report or health check backs) or "validated by @alice, no evidence"."""
    if not c.updated_by or c.state is StepState.WAITING:
        return ""
    if c.state not in _EVIDENCE_STEPS:
        return f" by {mention(c.updated_by)}"
    if c.updated_by == EVIDENCE_ACTOR:
        # The note starts with the step's name, which the line already shows in bold.
        said = (c.note or "").removeprefix(f"{c.state.value}: ")
        return f": {told(said[:200])}" if said else " from evidence"
    if c.note:
        return f" by {mention(c.updated_by)} · evidence: {told(c.note[:200])}"
    return f" by {mention(c.updated_by)}, no evidence"


def consumer_line(c: ConsumerProgress) -> str:
    by = step_basis(c)
    return (
        f"{STEP_ICON[c.state]} {code(c.name)} · {mention(c.owner)} · {escape_mrkdwn(c.reload)} · "
        f"*{step_words(c.state)}*{by}"
    )


def waiting_on(rotation: Rotation) -> str:
    """` · waiting on ...`: the consumers whose step is next, for one-line rotation lists."""
    pending = rotation.pending_steps()
    if not pending:
        return ""
    names = ", ".join(code(c.name) for c, _ in pending[:5])
    more = f" +{len(pending) - 5}" if len(pending) > 5 else ""
    return f" · waiting on {names}{more}"


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
        said = evidence.usage_line or f"old credential: {usage.summary}"
        lines.append(f"{icon} {escape_mrkdwn(said[:600])}")
        lines.extend(
            f":eyes: {escape_mrkdwn(u[:300])}: add its `identity:` to a consumer in the "
            "catalog, or find it before revoking"
            for u in evidence.unmapped[:UNMAPPED_LINES]
        )
        if len(evidence.unmapped) > UNMAPPED_LINES:
            lines.append(f"…and {len(evidence.unmapped) - UNMAPPED_LINES} more unmapped consumers")
    known = [c for c in rotation.consumers_in_order() if c.name in evidence.health]
    for c in known[:HEALTH_LINES]:
        h = evidence.health[c.name]
        icon = ":large_green_circle:" if h.ok else ":red_circle:"
        lines.append(
            f"{icon} {code(c.name)} health: {escape_mrkdwn(h.reason[:300])} · {when(h.at)}"
        )
    if len(known) > HEALTH_LINES:
        lines.append(f"…and {len(known) - HEALTH_LINES} more health results")
    for c in [c for c in rotation.consumers_in_order() if c.name in evidence.checks]:
        said = " · ".join(evidence.checks[c.name])
        lines.append(f":large_blue_circle: {code(c.name)} checks: {escape_mrkdwn(said[:500])}")
    # require_evidence: what the consumers' own reports do not show yet (clicks cannot).
    for missing in evidence.missing[:HEALTH_LINES]:
        lines.append(f":no_entry: {told(missing[:300])}")
    if not lines:
        return []
    return [DividerBlock(), *sections(lines, "*Evidence*")]


_TITLE = {
    Phase.REVOKED: "rotated",
    Phase.ROLLED_BACK: "rolled back",
    Phase.CANCELLED: "cancelled",
    Phase.FAILED: "paused",
}


def title(rotation: Rotation) -> str:
    """The header: "rotating" while it runs, what became of it once it ended or paused."""
    return f"{rotation.ref} · {_TITLE.get(rotation.phase, 'rotating')} {rotation.secret}"[:150]


def problem_lines(context: MessageContext) -> list[str]:
    """One line per unresolved alert: it blocks revocation, and everyone should see why."""
    lines = []
    for a in context.problems[:10]:
        who = a.source.removeprefix("reported by ")
        source = f"reported by {mention(who)}" if a.source.startswith("reported by ") else (
            escape_mrkdwn(a.source))
        lines.append(
            f":rotating_light: *{a.ref}* {code(a.consumer)} ({escape_mrkdwn(a.lane)}) · "
            f"{escape_mrkdwn(a.reason[:300])} · {source} · seen {a.count}x · "
            f"{escape_mrkdwn(a.status.value)}"
        )
    if len(context.problems) > 10:
        lines.append(f"…and {len(context.problems) - 10} more alerts (App Home lists them)")
    return lines


def rotation_message(
    rotation: Rotation,
    gate: GateResult | None = None,
    evidence: RotationEvidence | None = None,
    context: MessageContext | None = None,
) -> Rendered:
    """The one parent message of a rotation, updated in place."""
    context = context or MessageContext()
    text = f"{rotation.ref} {escape_mrkdwn(rotation.secret)}: {phase_words(rotation)}"
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text=title(rotation))),
        SectionBlock(
            fields=[
                md(f"*Phase*\n{phase_words(rotation)}"),
                md(f"*Started by*\n{mention(rotation.started_by)}"),
                md(_cutover_field(rotation, context) if rotation.cutover
                   else f"*Overlap until*\n{when(rotation.overlap_until)}"),
                md(f"*Observe until*\n{when(rotation.observe_until)}"),
            ]
        ),
    ]
    if rotation.urgent:
        blocks.append(ContextBlock(elements=[md(":rotating_light: urgent re-rotation")]))
    if rotation.cutover:
        blocks.append(SectionBlock(text=md(cutover_line(rotation, context)[:SECTION_LIMIT])))
    if rotation.phase is Phase.FAILED and rotation.failure_reason:
        blocks.append(
            SectionBlock(text=md(f":warning: {told(rotation.failure_reason)}"[:SECTION_LIMIT]))
        )
    if rotation.phase is Phase.READY_CHECK and rotation.failure_reason is None:
        who = f"{mentions(context.admins)}: " if context.admins else ""
        how = (
            f"\n*How:* {told(context.instructions[:1500])}" if context.instructions else ""
        )
        blocks.append(
            SectionBlock(
                text=md(
                    f"{who}create the new credential and write it to "
                    f"{code(context.write_to or rotation.store_path)}, then press *Check the "
                    "store again*; rotabot "
                    f"also notices the new version by itself and asks the owners in this "
                    f"thread.{how}"[:SECTION_LIMIT]
                )
            )
        )
    if rotation.ready_to_switch() and context.queued_switch is not None:
        queued = context.queued_switch
        blocks.append(SectionBlock(text=md(
            f"Every consumer validated; the switch is queued by {mention(queued.requester)}: "
            f"rotabot switches at {queued.after:%Y-%m-%d %H:%M} UTC, when the freeze ends."
        )))
    elif rotation.ready_to_switch() and context.admins:
        blocks.append(SectionBlock(text=md(
            f"{mentions(context.admins)}, every consumer validated: press *Switch to new "
            "credential* when ready."
        )))
    blocks.append(DividerBlock())
    blocks.extend(_lane_blocks(rotation))
    if evidence is not None:
        blocks.extend(evidence_blocks(rotation, evidence))
    problems = problem_lines(context)
    if problems:
        blocks.append(DividerBlock())
        blocks.extend(sections(problems, "*Open problems* (each blocks revocation)"))
    if gate is not None and not gate.open and rotation.phase in (Phase.OBSERVING,):
        blocks.append(DividerBlock())
        blocks.extend(
            sections([f"• {told(u)}" for u in gate.unmet[:20]],
                     "*Before finishing*" if rotation.cutover else "*Before revocation*")
        )
    actions = rotation_actions(rotation)
    if actions:
        blocks.append(ActionsBlock(elements=actions))
    blocks.append(
        ContextBlock(
            elements=[
                md(
                    f"{len(rotation.consumers)} consumers · lanes "
                    f"{' → '.join(map(escape_mrkdwn, rotation.lanes))} · "
                    f"`/rotate status {rotation.ref}`"
                )
            ]
        )
    )
    if len(blocks) > MESSAGE_BLOCK_LIMIT:
        overflow = ContextBlock(
            elements=[md("More detail than one message holds: see App Home or `/rotate status`.")]
        )
        blocks = [*blocks[: MESSAGE_BLOCK_LIMIT - 1], overflow]
    return text, blocks


def _labels(labels: tuple[str, ...]) -> str:
    shown = ", ".join(code(label) for label in labels[:TARGET_LABELS])
    more = f" and {len(labels) - TARGET_LABELS} more" if len(labels) > TARGET_LABELS else ""
    return shown + more


def target_line(rotation: Rotation, lane: str) -> str | None:
    """Where a lane with distribution targets stands: written (which targets), being written,
    or waiting for its turn. None for a lane without targets. The catalog's labels of a lane
    not written yet are not on the rotation: the dry run and `/rotate map` list them."""
    if lane not in rotation.gated_lanes:
        return None
    written = rotation.lane_writes.get(lane)
    if rotation.cutover:
        if written is None:
            return ":white_circle: targets: written at the cutover, every lane at once"
        labels = f": {_labels(written)}" if written else ""
        if rotation.phase is Phase.ROLLED_BACK:
            return (":inbox_tray: targets: written at the cutover, then given the re-issued "
                    f"credential (the thread's receipt lists each){labels}")
        return f":inbox_tray: targets: written at the cutover{labels}"
    ended_early = rotation.phase in (Phase.ROLLED_BACK, Phase.CANCELLED)
    if written is not None:
        labels = f": {_labels(written)}" if written else ""
        if ended_early and rotation.old_version is not None:
            return (
                ":leftwards_arrow_with_hook: targets: written, then given the previous "
                f"credential back (the thread's receipt lists each){labels}"
            )
        if ended_early:
            return (
                ":inbox_tray: targets: written; they keep the new credential (there was none "
                f"before it){labels}"
            )
        return f":inbox_tray: targets: written{labels}"
    if ended_early:
        return ":white_circle: targets: never written (the rotation ended before its turn)"
    if rotation.lane_to_open() == lane:
        return (
            ":hourglass: targets: being written now; its owners are asked once "
            "they hold the new credential"
        )
    if (
        rotation.phase is Phase.FAILED
        and rotation.failed_from in (Phase.DISTRIBUTING, Phase.VALIDATING)
        and rotation.active_lane() == lane
    ):
        return ":warning: targets: not written yet; *Resume* writes them again"
    return ":white_circle: targets: written when this lane's turn comes"


def _lane_blocks(rotation: Rotation) -> list[Block]:
    """One heading per lane with its consumers, or (past COMPACT_AFTER) who is still behind."""
    blocks: list[Block] = []
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
            and not rotation.cutover  # a cutover's lanes all move at once
            else ""
        )
        heading = f"*{escape_mrkdwn(lane)}* · {done}/{len(consumers)} validated{marker}"
        targets = target_line(rotation, lane)
        lead = [targets] if targets else []
        if compact:
            behind = [
                c for c in consumers if c.state not in (StepState.VALIDATED, StepState.SIGNED_OFF)
            ]
            names = ", ".join(code(c.name) for c in behind[:15])
            more = f" and {len(behind) - 15} more" if len(behind) > 15 else ""
            line = f"still to validate: {names}{more}" if behind else "all validated"
            blocks.extend(sections([*lead, line], heading))
        else:
            blocks.extend(sections([*lead, *(consumer_line(c) for c in consumers)], heading))
    return blocks


def rotation_actions(rotation: Rotation) -> list[ButtonElement]:
    value = RotationButton(rotation_id=rotation.id or 0).model_dump_json()
    buttons: list[ButtonElement] = []
    if rotation.ready_to_switch():
        buttons.append(
            button(
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
    if rotation.phase is Phase.OBSERVING:
        # The gate is closed while observing: the button opens the break-glass modal, which
        # is the confirmation (a dialog before it would ask twice).
        label = "Finish early (break-glass)…" if rotation.cutover else "Revoke early (break-glass)…"
        buttons.append(button(label, Action.REVOKE, value))
    if rotation.phase is Phase.REVOCABLE and rotation.cutover:
        # Nothing to revoke after a cutover: the old value died at mint. Finishing records it.
        buttons.append(
            button(
                "Finish (nothing to revoke)",
                Action.REVOKE,
                value,
                style="primary",
                confirm=ConfirmObject(
                    title="Finish?",
                    confirm="Finish",
                    deny="Cancel",
                    text="The old value stopped working at the cutover: there is nothing to "
                    "revoke. Finishing retires its store version and ends the rotation.",
                ),
            )
        )
    elif rotation.phase is Phase.REVOCABLE:
        buttons.append(
            button(
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
        buttons.append(button("Resume", Action.RESUME, value, style="primary"))
    if rotation.phase is Phase.READY_CHECK:
        buttons.append(button("Check the store again", Action.CHECK_STORE, value))
    if rotation.phase not in (Phase.REVOKED, Phase.ROLLED_BACK, Phase.CANCELLED, Phase.READY_CHECK):
        label = "Roll back (issue another)…" if rotation.cutover else "Roll back"
        buttons.append(button(label, Action.ROLLBACK, value))
    return buttons


def _cutover_field(rotation: Rotation, context: MessageContext) -> str:
    if rotation.cutover_until is None:
        assert rotation.cutover_window is not None
        return f"*Cutover window*\n{format_duration(rotation.cutover_window)} from the cutover"
    return f"*Cutover window until*\n{when(rotation.cutover_until)}{_left(rotation, context)}"


def _left(rotation: Rotation, context: MessageContext) -> str:
    """" · 12m left" (or " · ended"), counted when the message is rendered."""
    if rotation.cutover_until is None or context.now is None or not rotation.cutover_pending():
        return ""
    if context.now >= rotation.cutover_until:
        return " · *ended*"
    left = rotation.cutover_until - context.now
    # Whole seconds: the message is re-rendered, not ticking, so finer means nothing.
    return f" · *{format_duration(left - (left % _SECOND) or _SECOND)} left*"


_SECOND = timedelta(seconds=1)


def cutover_line(rotation: Rotation, context: MessageContext) -> str:
    """What a hard cutover means, now: a cliff, not an overlap."""
    head = (":warning: *Hard cutover*: the old value stops working at mint; no overlap. "
            "Rollback means issuing another replacement (the previous value is gone).")
    if rotation.phase is Phase.ROLLED_BACK and rotation.cutover_until is not None:
        return (f"{head}\n:leftwards_arrow_with_hook: Rolled back by re-issue: another "
                "replacement is current and in every target; the previous values are gone.")
    pending = rotation.cutover_pending()
    if rotation.cutover_until is None:
        assert rotation.cutover_window is not None
        return (f"{head}\nAt the cutover rotabot writes the new value to every target at "
                f"once; every owner then validates within "
                f"{format_duration(rotation.cutover_window)}.")
    if not pending:
        return f"{head}\n:white_check_mark: Every owner validated within the cutover."
    owners = mentions(sorted({c.owner for c in pending}))
    late = context.now is not None and context.now >= rotation.cutover_until
    if late:
        return (f"{head}\n:rotating_light: The cutover window has *ended*: still to validate "
                f"{', '.join(code(c.name) for c in pending)} ({owners}).")
    return (f"{head}\n:hourglass: The new value is in every target: {owners}, reload your "
            f"consumers and press *Validated* by {when(rotation.cutover_until)}"
            f"{_left(rotation, context)}.")


def step_done(
    rotation: Rotation, consumer: ConsumerProgress, step: StepState, actor: str
) -> Rendered:
    lane = escape_mrkdwn(consumer.lane)
    words = step_words(step)
    text = f"{escape_mrkdwn(consumer.name)} ({lane}) {words} by {escape_mrkdwn(actor)}"
    line = f"{STEP_ICON[step]} {code(consumer.name)} ({lane}) *{words}* by {mention(actor)}"
    if consumer.note and step in _EVIDENCE_STEPS:
        line += f" · evidence: {told(consumer.note[:300])}"
    elif step in _EVIDENCE_STEPS:
        line += ", no evidence"
    return text, [ContextBlock(elements=[md(f"{line} · {rotation.ref}"[:SECTION_LIMIT])])]


def evidence_step(
    rotation: Rotation, consumer: ConsumerProgress, step: StepState
) -> Rendered:
    """The prompt a consumer's own report answered: "validated: inference-api reported
    version 7 at 09:12", no buttons left."""
    lane = escape_mrkdwn(consumer.lane)
    note = consumer.note or f"{step.value} from {consumer.name}'s report"
    text = f"{escape_mrkdwn(consumer.name)} ({lane}) {escape_mrkdwn(note)}"
    line = f"{STEP_ICON[step]} {code(consumer.name)} ({lane}) · {told(note[:300])}"
    return text, [ContextBlock(elements=[md(f"{line} · {rotation.ref}"[:SECTION_LIMIT])])]
