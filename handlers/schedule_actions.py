"""Scheduled rotations in Slack: the readiness review, its Confirm-ready buttons, the admins'
prompt when readiness did not pass, and max_age "due" reminders.

The messages are built here rather than in handlers/blocks.py because only this module and
the schedule service speak about schedules; they use the same Slack notifier (and its error
explanations) as rotation messages.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from slack_bolt import Ack, App, Respond
from slack_sdk.models.blocks import (
    Block,
    ButtonElement,
    ContextBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from adapters.slack_notifier import SlackNotifier
from bot.catalog import Catalog
from bot.domain.durations import format_duration
from bot.domain.schedule import (
    Confirmation,
    DueSecret,
    ScheduledRotation,
    ScheduleStatus,
    format_at,
)
from bot.runtime.bootstrap import Container
from bot.services.schedules import ScheduleService
from handlers import blocks
from handlers.ids import Action, parse_value
from handlers.respond import ephemeral, user_message
from storage.repositories import SqlScheduleRepository

_SERVICE_KEY = "schedule_service"
# Slack allows 50 blocks a message: owners past this many are listed without a button.
_MAX_OWNER_ROWS = 40


class ConfirmReadyButton(BaseModel):
    schedule_id: int
    owner: str


def schedule_service(c: Container) -> ScheduleService:
    """The process's one ScheduleService (the timer, commands and buttons share it)."""
    existing = c.extras.get(_SERVICE_KEY)
    if isinstance(existing, ScheduleService):
        return existing
    svc = ScheduleService(
        rotations=c.service,
        repo=SqlScheduleRepository(c.engine),
        notices=SlackScheduleNotices(c.notifier, c.catalog),
    )
    c.extras[_SERVICE_KEY] = svc
    return svc


def _md(text: str) -> MarkdownTextObject:
    return MarkdownTextObject(text=text[: blocks.SECTION_LIMIT])


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
) -> blocks.Rendered:
    """The readiness review: findings in words, then one Confirm-ready row per owner."""
    at = blocks.when(item.at)
    text = f"Readiness review: {item.secret} rotates at {format_at(item.at)} ({item.ref})"
    body: list[Block] = [
        _section(
            f"*Readiness review · `{item.secret}` rotates {at}* ({item.ref}, scheduled by "
            f"{blocks.mention(item.created_by)})"
        )
    ]
    if item.findings:
        ordered = sorted(item.findings, key=lambda f: not f.blocking)
        lines = [
            f"{_FINDING_ICON.get(f.severity, '•')} *{f.severity}* ({f.subject}): "
            f"{blocks.with_mentions(f.message)}"
            for f in ordered
        ]
        chunk = ""
        for line in lines:  # pack the findings into as few sections as fit
            if chunk and len(chunk) + len(line) + 1 > blocks.SECTION_LIMIT:
                body.append(_section(chunk))
                chunk = ""
            chunk += line + "\n"
        if chunk:
            body.append(_section(chunk.rstrip()))
    else:
        body.append(
            _section(":white_check_mark: No findings: the catalog entry is complete and the "
                     "store and issuer answer.")
        )
    by_owner = {c.owner: c for c in confirmed}
    consumers: dict[str, list[str]] = {}
    if item.secret in catalog.secrets:
        for name, spec in catalog.secret(item.secret).consumers.items():
            consumers.setdefault(spec.owner, []).append(f"`{name}` ({spec.lane})")
    can_confirm = item.status not in (ScheduleStatus.STARTED, ScheduleStatus.CANCELLED)
    if owners:
        body.append(
            _section("*Owners:* confirm that your consumers are ready for this rotation "
                     "(you can take the new credential and someone is around).")
        )
    for i, owner in enumerate(owners):
        what = ", ".join(consumers.get(owner, [])) or "no consumers"
        done = by_owner.get(owner)
        if done is not None:
            line = (
                f":white_check_mark: {blocks.mention(owner)} · {what} · confirmed by "
                f"{blocks.mention(done.confirmed_by)} {blocks.when(done.confirmed_at)}"
            )
            body.append(_section(line))
        elif can_confirm and i < _MAX_OWNER_ROWS:
            value = ConfirmReadyButton(schedule_id=item.id or 0, owner=owner)
            body.append(
                SectionBlock(
                    text=_md(f":white_circle: {blocks.mention(owner)} · {what}"),
                    accessory=ButtonElement(
                        text=PlainTextObject(text="Confirm ready"),
                        action_id=Action.CONFIRM_READY.value,
                        value=value.model_dump_json(),
                        style="primary",
                    ),
                )
            )
        else:
            body.append(_section(f":white_circle: {blocks.mention(owner)} · {what}"))
    status = _STATUS_LINE[item.status]
    if item.status is ScheduleStatus.STARTED and item.rotation_id is not None:
        status = f"Started R-{item.rotation_id}."
    elif item.outcome and item.status in (ScheduleStatus.NEEDS_ADMIN, ScheduleStatus.CANCELLED):
        status = f"{status} {item.outcome}"
    body.append(ContextBlock(elements=[_md(blocks.with_mentions(status))]))
    return text, body[: blocks.MESSAGE_BLOCK_LIMIT]


def ask_admins_message(
    item: ScheduledRotation, admins: tuple[str, ...], reasons: tuple[str, ...]
) -> blocks.Rendered:
    who = " ".join(blocks.mention(a) for a in admins) or "Admins"
    lines = "\n".join(f"• {blocks.with_mentions(r)}" for r in reasons)
    text = f"{item.ref}: the scheduled rotation of {item.secret} did not start"
    return text, [
        _section(
            f"{who}: the rotation of `{item.secret}` scheduled for {blocks.when(item.at)} "
            f"({item.ref}) *did not start*, because readiness did not pass:\n{lines}"
        ),
        _section(
            f"Start it now with `/rotate start {item.secret}`, or postpone it with "
            f"`/rotate schedule {item.secret} at YYYY-MM-DDTHH:MMZ`."
        ),
    ]


def due_message(due: DueSecret, lead_text: str) -> blocks.Rendered:
    who = " ".join(blocks.mention(a) for a in due.admins) or "Admins"
    text = f"{due.secret} is due for rotation"
    return text, [
        _section(
            f":hourglass: {who}: `{due.secret}` is *due for rotation*: "
            f"{due.age.describe()}."
        ),
        _section(
            f"Rotate it with `/rotate start {due.secret}`, or plan it with "
            f"`/rotate schedule {due.secret} at YYYY-MM-DDTHH:MMZ` (a readiness review is "
            f"posted {lead_text} before)."
        ),
    ]


class SlackScheduleNotices:
    """ScheduleNotices (bot/schedule_service.py) over the Slack notifier."""

    def __init__(self, notifier: SlackNotifier, catalog: Catalog) -> None:
        self._notifier = notifier
        self._catalog = catalog

    def post_review(
        self,
        channel: str,
        item: ScheduledRotation,
        owners: tuple[str, ...],
        confirmed: list[Confirmation],
    ) -> str:
        return self._notifier.post(channel, review_message(item, self._catalog, owners, confirmed))

    def update_review(
        self, item: ScheduledRotation, owners: tuple[str, ...], confirmed: list[Confirmation]
    ) -> None:
        if item.review_channel is None or item.review_ts is None:
            return
        self._notifier.update(
            item.review_channel,
            item.review_ts,
            review_message(item, self._catalog, owners, confirmed),
        )

    def ask_admins(
        self,
        channel: str,
        item: ScheduledRotation,
        admins: tuple[str, ...],
        reasons: tuple[str, ...],
    ) -> None:
        self._notifier.post(channel, ask_admins_message(item, admins, reasons))

    def rotation_due(self, channel: str, due: DueSecret) -> None:
        lead = format_duration(self._catalog.settings_for(due.secret).readiness_lead)
        self._notifier.post(channel, due_message(due, lead))


def register(app: App, c: Container) -> None:
    svc = schedule_service(c)

    @app.action(Action.CONFIRM_READY.value)
    def confirm_ready(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        ack()  # within Slack's 3 seconds; the work below may take longer
        user = str(body["user"]["id"])
        try:
            button = parse_value(ConfirmReadyButton, str(body["actions"][0].get("value", "")))
            outcome = svc.confirm(button.schedule_id, button.owner, actor=user)
            if not outcome.changed:
                ephemeral(
                    respond,
                    blocks.text_message(
                        f"{blocks.mention(button.owner)} already confirmed {outcome.item.ref}; "
                        "nothing changed."
                    ),
                )
                return
            if outcome.item.status is ScheduleStatus.READINESS_PASSED:
                ephemeral(
                    respond,
                    blocks.text_message(
                        f"Thanks: every owner confirmed. `{outcome.item.secret}` rotates "
                        f"{blocks.when(outcome.item.at)} unless a check fails on the day."
                    ),
                )
            # Otherwise the updated review message shows the confirmation; nothing to add.
        except Exception as exc:
            ephemeral(respond, user_message(exc))


def scheduled_message(svc: ScheduleService, item: ScheduledRotation) -> blocks.Rendered:
    """The answer to `/rotate schedule`: when it runs and when the review comes."""
    settings = svc.rotations.catalog.settings_for(item.secret)
    review_at = svc.review_at(item)
    review = (
        f"the readiness review is posted in <#{settings.channel}> now"
        if review_at <= svc.rotations.clock.now()
        else f"the readiness review is posted in <#{settings.channel}> {blocks.when(review_at)}"
        f" ({format_duration(settings.readiness_lead)} before)"
    )
    return blocks.text_message(
        f"Scheduled {item.ref}: `{item.secret}` rotates {blocks.when(item.at)} "
        f"({format_at(item.at)}); {review}. It starts by itself only if every owner confirmed "
        "ready and nothing blocks; otherwise the admins are asked."
    )

