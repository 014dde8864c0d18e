"""Scheduled rotations in Slack: the readiness review with its Confirm-ready buttons, the
admins' prompt when readiness did not pass, max_age "due" reminders, and the answer to
`/rotate schedule`. The listener of the buttons is handlers/schedule_actions.py."""

from __future__ import annotations

from pydantic import BaseModel
from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from bot.catalog import Catalog
from bot.domain.durations import format_duration
from bot.domain.schedule import (
    Confirmation,
    DueSecret,
    ScheduledRotation,
    ScheduleStatus,
    format_at,
)
from bot.services.schedules import ScheduleService
from handlers.blocks.common import (
    MESSAGE_BLOCK_LIMIT,
    SECTION_LIMIT,
    Rendered,
    code,
    escape_mrkdwn,
    mention,
    text_message,
    told,
    when,
)
from handlers.ids import Action

# Slack allows 50 blocks a message: owners past this many are listed without a button.
_MAX_OWNER_ROWS = 40


class ConfirmReadyButton(BaseModel):
    """The value of a Confirm-ready button (read back by handlers/schedule_actions.py)."""

    schedule_id: int
    owner: str


class CancelReviewButton(BaseModel):
    """The value of a hard cutover review's Cancel button (handlers/schedule_actions.py)."""

    schedule_id: int


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text[:SECTION_LIMIT])


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=_md(text))


_FINDING_ICON = {"blocking": ":no_entry:", "warning": ":warning:"}

_STATUS_LINE = {
    ScheduleStatus.SCHEDULED: "Scheduled.",
    ScheduleStatus.REVIEW_POSTED: "Waiting for every owner to confirm ready.",
    ScheduleStatus.READINESS_PASSED: "Readiness passed: the rotation starts at the time above.",
    ScheduleStatus.STARTED: "Started.",
    ScheduleStatus.NEEDS_ADMIN: "Did not start by itself: the admins were asked.",
    ScheduleStatus.CANCELLED: "Replaced by a newer schedule.",
}


def review_message(
    item: ScheduledRotation,
    catalog: Catalog,
    owners: tuple[str, ...],
    confirmed: list[Confirmation],
) -> Rendered:
    """The readiness review: findings in words, then one Confirm-ready row per owner."""
    if item.start_when_ready:
        window = (
            format_duration(catalog.settings_for(item.secret).cutover_window)
            if item.secret in catalog.secrets else "the cutover window"
        )
        text = f"Hard cutover readiness review: {escape_mrkdwn(item.secret)} ({item.ref})"
        head = _section(
            f"*Hard cutover readiness review · {code(item.secret)}* ({item.ref}, started by "
            f"{mention(item.created_by)})\n:warning: The old value stops working the moment "
            "the new one is issued: there is no overlap. The rotation starts the moment the "
            "last owner confirms ready; rotabot then writes the new value to every target at "
            f"once and each owner validates within {window}. Not everyone by "
            f"{when(item.at)}: the admins are asked."
        )
        ask = ("*Owners:* confirm that you stand by for the cutover: you can reload your "
               f"consumers at once and check them within {window}.")
    else:
        text = (
            f"Readiness review: {escape_mrkdwn(item.secret)} rotates at {format_at(item.at)} "
            f"({item.ref})"
        )
        origin = (
            "recurring: `every` in the catalog" if item.occurrence is not None
            else f"scheduled by {mention(item.created_by)}"
        )
        head = _section(
            f"*Readiness review · {code(item.secret)} rotates {when(item.at)}* ({item.ref}, "
            f"{origin})"
        )
        ask = ("*Owners:* confirm that your consumers are ready for this rotation "
               "(you can take the new credential and someone is around).")
    body: list[Block] = [head, *_finding_sections(item)]
    by_owner = {c.owner: c for c in confirmed}
    consumers: dict[str, list[str]] = {}
    if item.secret in catalog.secrets:
        for name, spec in catalog.secret(item.secret).consumers.items():
            consumers.setdefault(spec.owner, []).append(
                f"{code(name)} ({escape_mrkdwn(spec.lane)})"
            )
    can_confirm = item.status not in (ScheduleStatus.STARTED, ScheduleStatus.CANCELLED)
    if owners:
        body.append(_section(ask))
    for i, owner in enumerate(owners):
        what = ", ".join(consumers.get(owner, [])) or "no consumers"
        done = by_owner.get(owner)
        if done is not None:
            line = (
                f":white_check_mark: {mention(owner)} · {what} · confirmed by "
                f"{mention(done.confirmed_by)} {when(done.confirmed_at)}"
            )
            body.append(_section(line))
        elif can_confirm and i < _MAX_OWNER_ROWS:
            value = ConfirmReadyButton(schedule_id=item.id or 0, owner=owner)
            body.append(
                SectionBlock(
                    text=_md(f":white_circle: {mention(owner)} · {what}"),
                    accessory=ButtonElement(
                        text=PlainTextObject(text="Confirm ready"),
                        action_id=Action.CONFIRM_READY.value,
                        value=value.model_dump_json(),
                        style="primary",
                    ),
                )
            )
        else:
            body.append(_section(f":white_circle: {mention(owner)} · {what}"))
    status = _STATUS_LINE[item.status]
    if item.start_when_ready and item.status is ScheduleStatus.READINESS_PASSED:
        status = "Readiness passed: the cutover starts now."
    if item.start_when_ready and item.status is ScheduleStatus.CANCELLED:
        status = "Called off."  # the outcome says by whom
    if item.status is ScheduleStatus.STARTED and item.rotation_id is not None:
        status = f"Started R-{item.rotation_id}."
    elif item.outcome and item.status in (ScheduleStatus.NEEDS_ADMIN, ScheduleStatus.CANCELLED):
        status = f"{status} {item.outcome}"
    elif item.outcome and item.open:
        # Readiness passed but an exclusive partner is rotating: why it has not started.
        status = f"{status} Not started yet, {item.outcome}."
    if item.start_when_ready and item.open:
        # Nothing is minted until everyone confirmed, so calling it off costs nothing.
        cancel = ButtonElement(
            text=PlainTextObject(text="Cancel (admins)"),
            action_id=Action.CANCEL_REVIEW.value,
            value=CancelReviewButton(schedule_id=item.id or 0).model_dump_json(),
        )
        body.append(ActionsBlock(elements=[cancel]))
    body.append(ContextBlock(elements=[_md(told(status))]))
    return text, body[:MESSAGE_BLOCK_LIMIT]


def _finding_sections(item: ScheduledRotation) -> list[Block]:
    """The review's findings, blocking first, packed into as few sections as fit."""
    if not item.findings:
        return [
            _section(":white_check_mark: No findings: the catalog entry is complete and the "
                     "store and issuer answer.")
        ]
    body: list[Block] = []
    ordered = sorted(item.findings, key=lambda f: not f.blocking)
    lines = [
        f"{_FINDING_ICON.get(f.severity, '•')} *{escape_mrkdwn(f.severity)}* "
        f"({escape_mrkdwn(f.subject)}): {told(f.message)}"
        for f in ordered
    ]
    chunk = ""
    for line in lines:
        if chunk and len(chunk) + len(line) + 1 > SECTION_LIMIT:
            body.append(_section(chunk))
            chunk = ""
        chunk += line + "\n"
    if chunk:
        body.append(_section(chunk.rstrip()))
    return body


def ask_admins_message(
    item: ScheduledRotation, admins: tuple[str, ...], reasons: tuple[str, ...]
) -> Rendered:
    who = " ".join(mention(a) for a in admins) or "Admins"
    lines = "\n".join(f"• {told(r)}" for r in reasons)
    text = f"{item.ref}: the scheduled rotation of {escape_mrkdwn(item.secret)} did not start"
    return text, [
        _section(
            f"{who}: the rotation of {code(item.secret)} scheduled for {when(item.at)} "
            f"({item.ref}) *did not start*, because readiness did not pass:\n{lines}"
        ),
        _section(
            f"Start it now with `/rotate start {escape_mrkdwn(item.secret)}`, or postpone it "
            f"with `/rotate schedule {escape_mrkdwn(item.secret)} at YYYY-MM-DDTHH:MMZ`."
        ),
    ]


def remind_owners_message(item: ScheduledRotation, missing: tuple[str, ...]) -> Rendered:
    """In the review's thread, halfway through the lead: who has still not confirmed."""
    who = " ".join(mention(o) for o in missing)
    return text_message(
        f":hourglass: {who}: please confirm ready for {code(item.secret)} ({item.ref}), which "
        f"rotates {when(item.at)}. Without every owner's confirmation it does not start "
        "by itself and the admins are asked."
    )


def due_message(due: DueSecret, lead_text: str) -> Rendered:
    who = " ".join(mention(a) for a in due.admins) or "Admins"
    secret = escape_mrkdwn(due.secret)
    text = f"{secret} is due for rotation"
    return text, [
        _section(
            f":hourglass: {who}: `{secret}` is *due for rotation*: "
            f"{escape_mrkdwn(due.age.describe())}."
        ),
        _section(
            f"Rotate it with `/rotate start {secret}`, or plan it with "
            f"`/rotate schedule {secret} at YYYY-MM-DDTHH:MMZ` (a readiness review is "
            f"posted {lead_text} before)."
        ),
    ]


def scheduled_message(svc: ScheduleService, item: ScheduledRotation) -> Rendered:
    """The answer to `/rotate schedule`: when it runs and when the review comes."""
    settings = svc.rotations.catalog.settings_for(item.secret)
    channel = escape_mrkdwn(settings.channel)
    review_at = svc.review_at(item)
    review = (
        f"the readiness review is posted in <#{channel}> now"
        if review_at <= svc.rotations.clock.now()
        else f"the readiness review is posted in <#{channel}> {when(review_at)}"
        f" ({format_duration(settings.readiness_lead)} before)"
    )
    return text_message(
        f"Scheduled {item.ref}: {code(item.secret)} rotates {when(item.at)} "
        f"({format_at(item.at)}); {review}. It starts by itself only if every owner confirmed "
        "ready and nothing blocks; otherwise the admins are asked."
    )


def cutover_review_message(svc: ScheduleService, item: ScheduledRotation) -> Rendered:
    """The answer to `/rotate start` of a hard cutover: its readiness review comes first."""
    channel = escape_mrkdwn(svc.rotations.catalog.settings_for(item.secret).channel)
    return text_message(
        f":warning: {code(item.secret)} is a *hard cutover*: the old value stops working the "
        f"moment the new one is issued. Its readiness review {item.ref} is in <#{channel}>: "
        "the rotation starts the moment the last owner confirms ready (not everyone by "
        f"{when(item.at)}: the admins are asked)."
    )
