"""What reminder, escalation, overlap warning or gate notice is due for a rotation (pure).

Given a rotation, the time, the catalog's ``remind_after``/``escalate_after`` and the set of
notices already sent, say what should be sent now. Nothing here sends or stores anything: the
timer claims each notice in the ``reminders_sent`` table (unique per rotation, consumer and
kind) before sending it, so each goes out once across restarts and replicas.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.durations import format_duration
from bot.domain.lifecycle import Phase, StepState
from bot.domain.mentions import address, escape_mrkdwn, mention, mentions
from bot.domain.rotation import ConsumerProgress, Rotation, step_rank

# Kinds; reminders and escalations carry the step ("remind:validated") so an owner who did one
# step and then stalls on the next is reminded again, once per step.
REMIND = "remind"
ESCALATE = "escalate"
OVERLAP_WARNING = "overlap-warning"
GATE_BLOCKED = "gate-blocked"
READY_TO_REVOKE = "ready-to-revoke"
CUTOVER_ENDED = "cutover-ended"

# The overlap warning comes this close to the deadline: a quarter of the overlap, at most 2h.
OVERLAP_WARNING_SHARE = 0.25
OVERLAP_WARNING_CAP = timedelta(hours=2)

WHOLE_ROTATION = ""  # the "consumer" of a notice about the whole rotation

Key = tuple[str, str]  # (consumer, kind)


class ReminderLog(Protocol):
    """The record of notices sent (storage implements it on the ``reminders_sent`` table)."""

    def sent(self, rotation_id: int) -> set[Key]:
        """(consumer, kind) of every notice already sent for the rotation."""
        ...

    def claim(self, rotation_id: int, consumer: str, kind: str, at: datetime) -> bool:
        """Record the notice; False when it was already recorded (by us or another replica)."""
        ...

    def release(self, rotation_id: int, consumer: str, kind: str) -> None:
        """Forget a claim whose sending failed, so a later tick tries again."""
        ...


@dataclass(frozen=True)
class Notice:
    kind: str
    consumer: str = WHOLE_ROTATION
    owner: str | None = None
    step: StepState | None = None
    waited: timedelta | None = None
    # Overlap warning: the consumers not yet validated, with their owners.
    pending: tuple[tuple[str, str, str], ...] = ()  # (name, lane, owner)

    @property
    def key(self) -> Key:
        return (self.consumer, self.kind)


def step_kind(base: str, step: StepState) -> str:
    return f"{base}:{step.value}"


def waiting_since(
    rotation: Rotation, consumer: ConsumerProgress, step: StepState
) -> datetime | None:
    """When the owner's current step became theirs to do."""
    marks: list[datetime] = []
    if consumer.updated_at is not None:
        marks.append(consumer.updated_at)
    if step is StepState.SIGNED_OFF:
        if rotation.switched_at is not None:
            marks.append(rotation.switched_at)
    elif rotation.cutover:
        # Every lane's turn began together, at the cutover.
        if rotation.cutover_until is not None and rotation.cutover_window is not None:
            marks.append(rotation.cutover_until - rotation.cutover_window)
    else:
        if rotation.prepared_at is not None:
            marks.append(rotation.prepared_at)
        # A later lane's turn begins when the last consumer of the earlier lanes validated.
        rank = rotation.lanes.index(consumer.lane)
        marks.extend(
            c.updated_at
            for c in rotation.consumers.values()
            if c.updated_at is not None and rotation.lanes.index(c.lane) < rank
        )
    return max(marks) if marks else None


def overlap_warning_lead(overlap: timedelta) -> timedelta:
    return min(overlap * OVERLAP_WARNING_SHARE, OVERLAP_WARNING_CAP)


def due_notices(
    rotation: Rotation,
    *,
    now: datetime,
    remind_after: timedelta,
    escalate_after: timedelta,
    sent: Collection[Key] = (),
) -> list[Notice]:
    """Owner reminders, escalations and the overlap warning due now and not yet sent."""
    if rotation.terminal or rotation.phase is Phase.FAILED:
        return []
    out: list[Notice] = []
    for consumer, step in rotation.pending_steps():
        since = waiting_since(rotation, consumer, step)
        if since is None:
            continue
        waited = now - since
        for base, after in ((REMIND, remind_after), (ESCALATE, escalate_after)):
            kind = step_kind(base, step)
            if waited >= after and (consumer.name, kind) not in sent:
                out.append(
                    Notice(kind, consumer.name, consumer.owner, step=step, waited=waited)
                )
    warning = overlap_warning(rotation, now=now)
    if warning is not None and warning.key not in sent:
        out.append(warning)
    ended = cutover_ended(rotation, now=now)
    if ended is not None and ended.key not in sent:
        out.append(ended)
    return out


def cutover_ended(rotation: Rotation, *, now: datetime) -> Notice | None:
    """Due when a hard cutover's window has ended with consumers not validated: the old
    value works nowhere, so they may be failing; the thread mentions their owners and the
    admins (escalation). Nothing is lost: owners can still validate."""
    if rotation.cutover_until is None or now < rotation.cutover_until:
        return None
    pending = tuple((c.name, c.lane, c.owner) for c in rotation.cutover_pending())
    if not pending:
        return None
    return Notice(CUTOVER_ENDED, pending=pending, waited=now - rotation.cutover_until)


def overlap_warning(rotation: Rotation, *, now: datetime) -> Notice | None:
    """Due when the overlap deadline is near and some consumers have not validated."""
    if rotation.overlap_until is None or rotation.terminal:
        return None
    if now < rotation.overlap_until - overlap_warning_lead(rotation.overlap):
        return None
    pending = tuple(
        (c.name, c.lane, c.owner)
        for c in rotation.consumers_in_order()
        if step_rank(c.state) < step_rank(StepState.VALIDATED)
    )
    if not pending:
        return None
    return Notice(OVERLAP_WARNING, pending=pending, waited=rotation.overlap_until - now)


def gate_notice(
    rotation: Rotation, *, now: datetime, gate_open: bool, sent: Collection[Key] = ()
) -> Notice | None:
    """At the end of the window: "what is missing" once, or "ready to revoke" once."""
    if rotation.phase is Phase.REVOCABLE:
        if rotation.auto_revoke:
            return None  # the timer revokes it; nobody needs to click
        notice = Notice(READY_TO_REVOKE)
    elif (
        rotation.phase is Phase.OBSERVING
        and rotation.observe_until is not None
        and now >= rotation.observe_until
        and not gate_open
    ):
        notice = Notice(GATE_BLOCKED)
    else:
        return None
    return None if notice.key in sent else notice


# --- words ---------------------------------------------------------------------------


def _ago(delta: timedelta | None) -> str:
    return format_duration(delta) if delta is not None else "a while"


_STEP_DONE = {
    StepState.DISTRIBUTED: "confirmed *Distributed*",
    StepState.VALIDATED: "confirmed *Validated*",
    StepState.SIGNED_OFF: "signed off",
    StepState.WAITING: "started",
    StepState.FAILED: "reported",
}
STEP_WORDS = {
    StepState.DISTRIBUTED: "distribute the new credential and press *Distributed*",
    StepState.VALIDATED: "check it on its real dependency path and press *Validated*",
    StepState.SIGNED_OFF: "press *Sign off* when the old credential may be revoked",
}


def notice_text(rotation: Rotation, notice: Notice, admins: Sequence[str] = ()) -> str:
    """The message for a notice, in Slack mrkdwn: references and names only (escaped), never
    a credential value."""
    ref = f"{rotation.ref} ({escape_mrkdwn(rotation.secret)})"
    consumer = escape_mrkdwn(notice.consumer)
    if notice.kind.startswith(REMIND + ":") and notice.step is not None:
        return (
            f"Reminder: {ref} is waiting for you on `{consumer}` for "
            f"{_ago(notice.waited)}: {STEP_WORDS.get(notice.step, notice.step.value)} "
            "in the rotation thread."
        )
    if notice.kind.startswith(ESCALATE + ":") and notice.step is not None:
        owner = mention(notice.owner) if notice.owner else "its owner"
        return (
            f":rotating_light: {ref}: `{consumer}` ({owner}) has not "
            f"{_STEP_DONE[notice.step]} for {_ago(notice.waited)}. "
            f"{address(admins, 'Admins')}please follow up."
        )
    if notice.kind == OVERLAP_WARNING:
        names = _pending_names(notice)
        return (
            f":warning: {ref}: the overlap ends in {_ago(notice.waited)} and these consumers "
            f"have not validated the new credential: {names}."
            + (f" {mentions(admins)}, extend the overlap or roll back if they cannot make it."
               if admins else "")
        )
    if notice.kind == CUTOVER_ENDED:
        names = _pending_names(notice)
        return (
            f":rotating_light: {ref}: the cutover window has ended and these consumers have "
            f"not validated the new value: {names}. The old value no longer works, so they "
            "may be failing now: reload them and press *Validated* in the thread."
            + (f" {mentions(admins)}, please follow up; rolling back issues another "
               "replacement (the old value cannot come back)." if admins else "")
        )
    if rotation.cutover and notice.kind == READY_TO_REVOKE:
        return (
            f":white_check_mark: {ref} is ready to finish: every owner signed off and the "
            f"observation window passed quietly. {address(admins)}press *Finish (nothing to "
            "revoke)* on the rotation message: the old value already stopped working at the "
            "cutover."
        )
    if notice.kind == READY_TO_REVOKE:
        return (
            f":white_check_mark: {ref} is ready to revoke: every owner signed off and the "
            f"observation window passed quietly. {address(admins)}press *Revoke old "
            "credential* on the rotation message."
        )
    return f"{ref}: {notice.kind}"


def _pending_names(notice: Notice) -> str:
    """The consumers a notice is about, each with its lane and owner mentioned."""
    return ", ".join(
        f"`{escape_mrkdwn(n)}` ({escape_mrkdwn(lane)}, {mention(o)})"
        for n, lane, o in notice.pending
    )


def gate_blocked_text(rotation: Rotation, unmet: Sequence[str], admins: Sequence[str] = ()) -> str:
    """What is missing at the end of the window, in mrkdwn: ``unmet`` (the gate's plain words,
    naming consumers and back-end evidence) is escaped."""
    lines = "\n".join(f"• {escape_mrkdwn(u)}" for u in unmet)
    who = f"{mentions(admins)}: t" if admins else "T"
    # After a cutover there is no old credential to revoke: only the rotation to finish.
    what = ("the rotation cannot be finished yet" if rotation.cutover
            else "the old credential cannot be revoked yet")
    return (
        f":hourglass: {rotation.ref} ({escape_mrkdwn(rotation.secret)}): {who}he observation "
        f"window has ended but {what}. Missing:\n{lines}"
    )


# Urgent rotations remind and escalate this many times sooner than the catalog says.
URGENT_FACTOR = 4
# ... but never more often than this: a reminder every few seconds is noise, not urgency.
URGENT_FLOOR = timedelta(minutes=1)


def shortened(after: timedelta, urgent: bool) -> timedelta:
    if not urgent:
        return after
    return max(after / URGENT_FACTOR, min(after, URGENT_FLOOR))
