"""The services' Slack-facing ports, rendered as Block Kit: AlertMessenger
(bot/services/alerts.py), ScheduleNotices (bot/services/schedules.py) and the thread receipts
of rotation changes (RotationService.on_receipts), over the notifier."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.catalog import Catalog
from bot.domain.alert import Alert
from bot.domain.durations import format_duration
from bot.domain.errors import NotifyError, RotabotError
from bot.domain.lifecycle import StepState
from bot.domain.log_context import rotation_context
from bot.domain.receipts import Receipt, ReceiptKind
from bot.domain.rotation import Rotation, step_rank
from bot.domain.schedule import Confirmation, DueSecret, ScheduledRotation
from bot.services.emergency import owners_to_act
from handlers import blocks
from handlers.blocks.schedule import (
    ask_admins_message,
    due_message,
    remind_owners_message,
    review_message,
)
from handlers.deps import Poster

log = logging.getLogger("rotabot.slack")


@dataclass
class ThreadReceipts:
    """Posts one receipt per state change in the rotation's thread, and takes the buttons
    off prompts that stopped applying when the rotation ended. A receipt Slack refuses is
    logged, never raised: the change it tells of has already happened."""

    notifier: Poster
    # The catalog in use when called (a reload may have replaced it since the start).
    catalog: Callable[[], Catalog]

    def __call__(self, rotation: Rotation, receipts: list[Receipt]) -> None:
        if rotation.channel is None or rotation.message_ts is None:
            # No thread yet (Slack refused the message, or another replica is posting it): a
            # receipt must not land in the channel itself; the message shows the state.
            return
        try:
            admins = self.catalog().settings_for(rotation.secret).admins
        except RotabotError:
            admins = ()
        for receipt in receipts:
            owner_lines: list[str] = []
            if receipt.kind is ReceiptKind.ROLLED_BACK:
                try:
                    notes = owners_to_act(self.catalog(), rotation.secret)
                except RotabotError:  # the secret left the catalog mid-rotation
                    notes = []
                if rotation.switched_at is None:
                    # Before the switch only consumers that took the new credential have
                    # anything to undo.
                    notes = [n for n in notes if n.consumer in rotation.consumers
                             and step_rank(rotation.consumers[n.consumer].state)
                             >= step_rank(StepState.DISTRIBUTED)]
                owner_lines = blocks.owner_rollback_lines(notes)
            rendered = blocks.receipt_message(rotation, receipt, admins, owner_lines)
            try:
                # Queued, in order: the click that caused it is not held by Slack's budget.
                self.notifier.post_later(rotation.channel, rendered,
                                         thread_ts=rotation.message_ts)
            except NotifyError as exc:
                log.warning("a thread receipt was not posted: %s", exc,
                            extra=rotation_context(rotation))
        if rotation.terminal:
            try:
                self.notifier.retire_prompts(rotation)
            except NotifyError as exc:
                log.warning("prompts of an ended rotation kept their buttons: %s", exc,
                            extra=rotation_context(rotation))


@dataclass
class SlackAlertMessenger:
    """AlertMessenger over the Slack notifier: the incident message with its buttons."""

    notifier: Poster

    def post(
        self,
        channel: str,
        alert: Alert,
        context: str,
        rotation_id: int | None,
        thread_ts: str | None = None,
    ) -> tuple[str, str]:
        ts = self.notifier.post(
            channel, blocks.alert_message(alert, context, rotation_id), thread_ts=thread_ts
        )
        return channel, ts

    def update(
        self, channel: str, ts: str, alert: Alert, context: str, rotation_id: int | None
    ) -> None:
        # A counter refresh: queued and merged in Slack's call budget, latest content wins.
        self.notifier.update(channel, ts, blocks.alert_message(alert, context, rotation_id),
                             refresh=True)

    def flush(self) -> None:
        self.notifier.flush()


class SlackScheduleNotices:
    """ScheduleNotices (bot/services/schedules.py) over the Slack notifier."""

    def __init__(self, notifier: Poster, catalog: Callable[[], Catalog]) -> None:
        self._notifier = notifier
        self._catalog = catalog

    def post_review(
        self,
        channel: str,
        item: ScheduledRotation,
        owners: tuple[str, ...],
        confirmed: list[Confirmation],
    ) -> str:
        return self._notifier.post(
            channel, review_message(item, self._catalog(), owners, confirmed))

    def update_review(
        self, item: ScheduledRotation, owners: tuple[str, ...], confirmed: list[Confirmation]
    ) -> None:
        if item.review_channel is None or item.review_ts is None:
            return
        self._notifier.update(
            item.review_channel,
            item.review_ts,
            review_message(item, self._catalog(), owners, confirmed),
        )

    def ask_admins(
        self,
        channel: str,
        item: ScheduledRotation,
        admins: tuple[str, ...],
        reasons: tuple[str, ...],
    ) -> None:
        self._notifier.post(channel, ask_admins_message(item, admins, reasons))

    def remind_owners(self, item: ScheduledRotation, missing: tuple[str, ...]) -> None:
        if item.review_channel is None or item.review_ts is None:
            return
        self._notifier.post(item.review_channel, remind_owners_message(item, missing),
                            thread_ts=item.review_ts)

    def rotation_due(self, channel: str, due: DueSecret) -> None:
        lead = format_duration(self._catalog().settings_for(due.secret).readiness_lead)
        self._notifier.post(channel, due_message(due, lead))
