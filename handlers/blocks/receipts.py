"""One short thread message per state change: what happened, who did it, why (where given),
and who acts next."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from slack_sdk.models.blocks import ActionsBlock, Block, ContextBlock, SectionBlock

from bot.domain.lifecycle import PHASE_STATE, Phase, StepState, state_words
from bot.domain.mentions import address
from bot.domain.receipts import Receipt, ReceiptKind
from bot.domain.rotation import ConsumerProgress, Rotation
from bot.services.distribution import written_from_json
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
    sections,
    told,
)
from handlers.ids import Action, RotationButton

REASON_LIMIT = 500

_ICON = {
    ReceiptKind.PREPARED: ":key:",
    ReceiptKind.LANE_OPENED: ":inbox_tray:",
    ReceiptKind.CUT_OVER: ":warning:",
    ReceiptKind.READY_TO_SWITCH: ":arrow_right:",
    ReceiptKind.SWITCHED: ":twisted_rightwards_arrows:",
    ReceiptKind.REOPENED: ":hourglass:",
    ReceiptKind.REVOKED: ":lock:",
    ReceiptKind.ROLLED_BACK: ":leftwards_arrow_with_hook:",
    ReceiptKind.CANCELLED: ":no_entry_sign:",
    ReceiptKind.FAILED: ":warning:",
    ReceiptKind.RESUMED: ":arrow_forward:",
    ReceiptKind.PROBLEM: ":rotating_light:",
    ReceiptKind.ALERT_ACKNOWLEDGED: ":eyes:",
    ReceiptKind.ALERT_NOT_RELATED: ":heavy_minus_sign:",
    ReceiptKind.FREEZE_OVERRIDDEN: ":warning:",
    ReceiptKind.BREAK_GLASS_REQUESTED: ":rotating_light:",
    ReceiptKind.BREAK_GLASS_APPROVED: ":white_check_mark:",
    ReceiptKind.BREAK_GLASS_EXPIRED: ":hourglass:",
    ReceiptKind.CONSUMER_ADDED: ":heavy_plus_sign:",
    ReceiptKind.SWITCH_QUEUED: ":alarm_clock:",
    ReceiptKind.SWITCH_QUEUE_CANCELLED: ":heavy_minus_sign:",
    ReceiptKind.SWITCH_QUEUE_DROPPED: ":warning:",
}


def _at(text: str | None) -> str:
    """An ISO instant from an audit detail, as HH:MM UTC."""
    try:
        return f"{datetime.fromisoformat(text or ''):%Y-%m-%d %H:%M} UTC"
    except ValueError:
        return "?"


def _reason(receipt: Receipt) -> str:
    if not receipt.reason:
        return ""
    return f" Reason: {told(receipt.reason[:REASON_LIMIT])}"


def written_lines(text: str | None) -> list[str]:
    """One line per target write: where, which version (never the value), the reload hook."""
    lines = []
    for w in written_from_json(text):
        version = f"version {escape_mrkdwn(w.version)}" if w.version else "written"
        line = f"{code(w.target)}: {version}"
        if w.reload:
            line += f"; reload hook: {told(w.reload[:300])}"
        lines.append(line)
    return lines


def _targets_after_undo(receipt: Receipt) -> list[str]:
    extra = [f"• {line}" for line in written_lines(receipt.detail.get("targets"))]
    if extra:
        extra.insert(0, "Targets given the previous credential back:")
    if receipt.detail.get("targets_gone"):
        extra.append(
            f"• No longer in the catalog, so not restored (do it by hand): "
            f"{code(receipt.detail['targets_gone'])}"
        )
    if receipt.detail.get("targets_kept"):
        extra.append(
            f"• The secret had no credential before this one, so these keep the new one: "
            f"{code(receipt.detail['targets_kept'])}"
        )
    return extra


def receipt_message(
    rotation: Rotation,
    receipt: Receipt,
    admins: Sequence[str],
    owner_lines: Sequence[str] = (),
) -> Rendered:
    """The receipt of one change. ``admins`` are mentioned where it is their turn;
    ``owner_lines`` (mrkdwn, handlers.blocks.owner_rollback_lines) follow a rollback."""
    ref, who = rotation.ref, mention(receipt.actor)  # "rotabot" is not an id: shown as text
    consumer = code(receipt.consumer) if receipt.consumer else ""
    lane = receipt.detail.get("lane")
    where = f"{consumer} ({escape_mrkdwn(lane)})" if lane else consumer
    alert = escape_mrkdwn(receipt.detail.get("alert", "the alert"))
    admin_turn = address(admins)
    kind = receipt.kind
    extra: list[str] = []
    owners: list[str] = []
    actions: list[Block] = []
    if kind is ReceiptKind.PREPARED and rotation.cutover:
        version = escape_mrkdwn(receipt.detail.get("new_version", "?"))
        line = (
            f"{ref}: the new credential (version {version}) is issued: *the old value has "
            "stopped working* (a hard cutover). rotabot writes the new one to every target now."
        )
    elif kind is ReceiptKind.CUT_OVER:
        until = receipt.detail.get("until", "")
        line = (
            f"{ref}: *hard cutover*: the new credential is current and rotabot wrote it to "
            f"every target of every lane at once; the old value no longer works anywhere. "
            f"*Every owner*: reload your consumers now, check them on their real path and "
            f"press *Validated* within {escape_mrkdwn(receipt.detail.get('window', '?'))}"
            f"{' (by ' + escape_mrkdwn(until[:19].replace('T', ' ')) + ' UTC)' if until else ''}."
        )
        extra = [f"• {x}" for x in written_lines(receipt.detail.get("written"))]
        owners = _every_owner(rotation, "reload it with the new value and press *Validated*")
    elif kind is ReceiptKind.PREPARED:
        version = escape_mrkdwn(receipt.detail.get("new_version", "?"))
        first = rotation.lanes[0] if rotation.lanes else "the first lane"
        line = (
            f"{ref}: the new credential (version {version}) is ready beside the old one; "
            f"{escape_mrkdwn(first)} goes first, its owners are asked below."
        )
    elif kind is ReceiptKind.LANE_OPENED:
        lines = written_lines(receipt.detail.get("written"))
        line = (
            f"{ref}: rotabot wrote the new credential where the {escape_mrkdwn(lane or '?')} "
            f"lane's consumers read it; other lanes and the secret itself still hold the "
            f"current one. Its owners are asked below."
        )
        extra = [f"• {x}" for x in lines] or ["• (no targets left in the catalog)"]
    elif kind is ReceiptKind.READY_TO_SWITCH:
        line = (
            f"{ref}: every consumer validated the new credential. {admin_turn}press "
            "*Switch to new credential* on the rotation message when ready."
        )
    elif kind is ReceiptKind.SWITCHED and rotation.cutover:
        line = (
            f"{ref}: every owner validated after the cutover. rotabot observes until the "
            "window ends; then owners sign off (there is no old credential to revoke)."
        )
    elif kind is ReceiptKind.SWITCHED:
        line = (
            f"{who} switched {ref}: the new credential is current; the old one stays valid "
            f"while rotabot observes (until the window ends and every owner signs off)."
        )
    elif kind is ReceiptKind.REOPENED:
        line = f"{ref} is observing again: new evidence arrived.{_reason(receipt)}"
    elif kind is ReceiptKind.REVOKED:
        how = " past the gate (break-glass)" if receipt.detail.get("override") else ""
        line = f"{who} revoked the old credential of {ref}{how}: the rotation is finished."
        if receipt.detail.get("nothing_left"):
            line = (f"{who} finished {ref}{how}: there was nothing to revoke, the old value "
                    "stopped working at the cutover.")
        line += _reason(receipt)
        if receipt.detail.get("by_hand"):
            line += f" Note: {told(receipt.detail['by_hand'])}."
    elif kind is ReceiptKind.ROLLED_BACK and receipt.detail.get("reissued"):
        version = escape_mrkdwn(receipt.detail.get("new_version", "?"))
        line = (
            f"{who} rolled back {ref} *by re-issue*: the previous value is gone (a hard "
            f"cutover), so another replacement (version {version}) was issued, is current "
            f"and was written to every target at once; the value it replaces no longer "
            f"works.{_reason(receipt)}"
        )
        extra = [f"• {x}" for x in written_lines(receipt.detail.get("targets"))]
        owners = _every_owner(rotation, "reload it with the re-issued value now")
    elif kind is ReceiptKind.ROLLED_BACK:
        new = receipt.detail.get("new_credential", "kept pending")
        fate = "revoked" if new == "revoked" else "kept pending (valid, unused)"
        line = (
            f"{who} rolled back {ref}: the previous credential of {code(rotation.secret)} is "
            f"current again and stays valid; the new one is {fate}.{_reason(receipt)}"
        )
        extra = _targets_after_undo(receipt)
        owners = [f"• {o}" for o in owner_lines]
    elif kind is ReceiptKind.CANCELLED:
        line = f"{who} cancelled {ref}; the old credential stays current.{_reason(receipt)}"
        extra = _targets_after_undo(receipt)
    elif kind is ReceiptKind.FAILED:
        line = (
            f"{ref} is paused: {told((receipt.reason or 'a step failed')[:REASON_LIMIT])}. "
            f"{admin_turn}press *Resume* once it is fixed, or roll back or cancel."
        )
    elif kind is ReceiptKind.RESUMED:
        words = state_words(receipt.detail.get("phase", ""))
        line = f"{who} resumed {ref}; it is {escape_mrkdwn(words)} again."
    elif kind is ReceiptKind.PROBLEM:
        line = (
            f"{who} reported a problem with {where}: "
            f"{told((receipt.reason or '')[:REASON_LIMIT])}. {alert} blocks revocation until "
            f"it is resolved. {admin_turn}roll back from the alert or the rotation message if "
            "needed."
        )
    elif kind is ReceiptKind.ALERT_ACKNOWLEDGED:
        line = (
            f"{who} acknowledged {alert} on {consumer}: someone is looking; it still blocks "
            "revocation."
        )
    elif kind is ReceiptKind.FREEZE_OVERRIDDEN:
        action = escape_mrkdwn(receipt.detail.get("action", "act"))
        line = (
            f"{who} overrode the freeze to {action} {ref} "
            f"({escape_mrkdwn(receipt.detail.get('freeze', ''))}).{_reason(receipt)}"
        )
    elif kind is ReceiptKind.BREAK_GLASS_REQUESTED:
        needed = int(receipt.detail.get("approvals", "2")) - 1
        others = "another admin" if needed == 1 else f"{needed} other admins"
        line = (
            f"{who} asks to revoke the old credential of {ref} past the gate (break-glass). "
            f"{admin_turn}{others} must approve before "
            f"{_at(receipt.detail.get('expires_at'))}, or nothing is revoked.{_reason(receipt)}"
        )
        value = RotationButton(rotation_id=rotation.id or 0).model_dump_json()
        actions = [ActionsBlock(elements=[
            button("Approve break-glass…", Action.APPROVE_BREAK_GLASS, value, style="danger")
        ])]
    elif kind is ReceiptKind.BREAK_GLASS_APPROVED:
        line = (
            f"{who} approved {mention(receipt.detail.get('requester', '?'))}'s break-glass "
            f"revoke of {ref}.{_reason(receipt)} Requested because: "
            f"{told(receipt.detail.get('requester_reason', '')[:REASON_LIMIT])}"
        )
    elif kind is ReceiptKind.BREAK_GLASS_EXPIRED:
        line = (
            f"The break-glass request of {mention(receipt.detail.get('requester', '?'))} on "
            f"{ref} expired at {_at(receipt.detail.get('expires_at'))} without approval: "
            f"nothing was revoked. Ask again if it is still needed.{_reason(receipt)}"
        )
    elif kind is ReceiptKind.CONSUMER_ADDED:
        name = receipt.consumer or ""
        turn = (
            "its owner is asked below"
            if any(c.name == name for c, _ in rotation.pending_steps())
            else f"it waits for the {escape_mrkdwn(lane or '?')} lane's turn"
        )
        line = (
            f"{who} added {where} to {ref}, owned by "
            f"{mention(receipt.detail.get('owner', '?'))}: {turn}. {ref} switches only once it "
            "validated too."
        )
        extra = [f"• {x}" for x in written_lines(receipt.detail.get("written"))]
        if extra:
            extra.insert(0, "Its targets, written now (its lane's were already):")
    elif kind is ReceiptKind.SWITCH_QUEUED:
        line = (
            f"{who} queued the switch of {ref} for the end of the freeze "
            f"({escape_mrkdwn(receipt.detail.get('freeze', ''))}): rotabot switches once at "
            f"{_at(receipt.detail.get('after'))}, if {ref} is still ready then. "
            f"An admin can take it back: `/rotate switch {ref} --cancel-after-freeze`"
        )
        value = RotationButton(rotation_id=rotation.id or 0).model_dump_json()
        actions = [ActionsBlock(elements=[
            button("Cancel queued switch", Action.CANCEL_QUEUED_SWITCH, value)
        ])]
    elif kind is ReceiptKind.SWITCH_QUEUE_CANCELLED:
        line = (
            f"{who} cancelled the switch of {ref} queued by "
            f"{mention(receipt.detail.get('requester', '?'))}: rotabot will not switch it "
            "when the freeze ends."
        )
    elif kind is ReceiptKind.SWITCH_QUEUE_DROPPED:
        line = (
            f"The freeze is over but rotabot did not switch {ref} as "
            f"{mention(receipt.detail.get('requester', '?'))} queued it: "
            f"{told((receipt.reason or '')[:REASON_LIMIT])}"
        )
    else:  # ALERT_NOT_RELATED
        line = (
            f"{who} marked {alert} on {consumer} as not related to {ref}; it no longer blocks "
            f"revocation.{_reason(receipt)}"
        )
    text = f"{_ICON[kind]} {line}"
    blocks: list[Block] = [SectionBlock(text=md(text[:SECTION_LIMIT]))]
    if extra:
        blocks.extend(sections(extra))
    if owners and rotation.cutover:
        blocks.extend(sections(owners, "*Every owner, now:*"))
    elif owners:
        blocks.extend(sections(owners, "*Owners to act now* (these consumers do not pick it up "
                                       "by themselves):"))
    blocks.extend(actions)
    more = [*extra, *owners]
    fallback = text + ("\n" + "\n".join(more) if more else "")
    return fallback[:3000], blocks[:MESSAGE_BLOCK_LIMIT]


def _every_owner(rotation: Rotation, what: str) -> list[str]:
    """A line per consumer with its owner mentioned: after a cutover nobody may wait."""
    return [
        f"• {mention(c.owner)}: {code(c.name)} ({escape_mrkdwn(c.lane)}, "
        f"{escape_mrkdwn(c.reload)}): {what}"
        for c in rotation.consumers_in_order()
    ]


def prompt_retired(rotation: Rotation, consumer: ConsumerProgress, step: StepState) -> Rendered:
    """A thread prompt whose step no longer applies (the rotation ended): its buttons go."""
    state = PHASE_STATE[rotation.phase]
    line = (
        f"{STEP_ICON[consumer.state]} {code(consumer.name)} ({escape_mrkdwn(consumer.lane)}): "
        f"no longer needed, {rotation.ref} is {state}."
    )
    if rotation.phase is Phase.ROLLED_BACK:
        line += " Follow the rollback note in the thread if this consumer took the new one."
    return line, [ContextBlock(elements=[md(line)])]
