"""Durable timers: the due work is derived from stored state, so nothing is lost on restart.

A rotation's deadlines (observation end, overlap end) live in its row, and the notices
already sent live in ``reminders_sent``. Each tick asks the database what is due and does it;
a deadline that passed while the bot was down is simply due at the first tick after start.
It runs once: state changes are revision-guarded and idempotent, and every notice is claimed
in a table with a unique key before it is sent. With several replicas only the leader (the
holder of a PostgreSQL advisory lock, storage/leader.py) ticks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.catalog import EffectiveSettings
from bot.domain.lifecycle import Phase
from bot.domain.mentions import mention
from bot.domain.reminders import (
    GATE_BLOCKED,
    REMIND,
    WHOLE_ROTATION,
    Notice,
    ReminderLog,
    due_notices,
    gate_blocked_text,
    gate_notice,
    notice_text,
)
from bot.domain.rotation import Rotation
from bot.domain.usage import UNMAPPED, identifies, unmapped, unmapped_text
from bot.services.rotations import RotationService

log = logging.getLogger("rotabot.timers")
# How often a switched rotation's usage evidence is searched for unmapped consumers.
UNMAPPED_CHECK_EVERY = timedelta(minutes=1)

# How often a running cutover's countdown on the rotation message is re-rendered.
COUNTDOWN_EVERY = timedelta(minutes=1)


class NoticeSender(Protocol):
    """Where reminders go (adapters/slack_notifier.SlackNotifier implements it)."""

    def direct_message(self, user: str, text: str) -> str: ...

    def thread_note(self, rotation: Rotation, text: str) -> str | None: ...


@dataclass
class TimerWork:
    service: RotationService
    # Only the replica holding the lock runs timers (always true with one process).
    is_leader: Callable[[], bool] = lambda: True
    reminders: ReminderLog | None = None
    notices: NoticeSender | None = None
    # More periodic work run only by the leader (e.g. scheduled starts); each returns a count.
    extra: list[Callable[[], int]] = field(default_factory=list)
    # When each switched rotation's usage was last looked at for unmapped consumers: the
    # timer runs every few seconds, and an issuer's usage may be a provider API call.
    _usage_checked: dict[int, datetime] = field(default_factory=dict)
    # Re-renders a rotation's message: a hard cutover's "time left" is counted at render time
    # (Slack cannot tick a countdown), so the timer refreshes it now and then.
    refresh: Callable[[int], None] | None = None
    _refreshed: dict[int, datetime] = field(default_factory=dict, repr=False)

    def due(self, rotation: Rotation) -> str | None:
        now = self.service.clock.now()
        if rotation.phase is Phase.REVOCABLE and rotation.auto_revoke:
            # Left revocable by a freeze (tick() waits inside one): revoke once it ends.
            return "auto-revoke"
        if (
            rotation.phase is Phase.OBSERVING
            and rotation.observe_until is not None
            and now >= rotation.observe_until
        ):
            return "observation-elapsed"
        if rotation.phase is Phase.READY_CHECK:
            return "look-for-new-version"
        if (
            rotation.cutover
            and rotation.phase is Phase.DISTRIBUTING
            and rotation.cutover_until is None
        ):
            # Minted, but the process stopped before every target was written (or another
            # one held the claim and died): the old value is dead, so cut over now.
            return "cut-over"
        if rotation.lane_to_open() is not None:
            # A lane's turn came but its targets were not written (the process stopped
            # between the step and the write): write them now.
            return "open-lane"
        return None

    def run_once(self) -> int:
        """Do everything due now; returns how many actions ran."""
        with self.service.pinned():  # one catalog for the whole run, whatever a reload does
            return self._run_once()

    def _run_once(self) -> int:
        if not self.is_leader():
            return 0
        count = 0
        for rotation in self.service.active():
            if rotation.id is None:
                continue
            try:
                count += self._run_rotation(rotation)
            except Exception:  # one broken rotation must not stop the others' timers
                log.exception(
                    "timer action failed",
                    extra={"rotation_id": rotation.id, "secret": rotation.secret},
                )
        for job in self.extra:
            try:
                count += job()
            except Exception:
                log.exception("timer job failed", extra={"job": getattr(job, "__name__", "?")})
        return count

    def _run_rotation(self, rotation: Rotation) -> int:
        rotation_id = rotation.id
        assert rotation_id is not None
        count = 0
        what = self.due(rotation)
        if what == "auto-revoke" and self.service.freeze_of(rotation.secret) is not None:
            count += self._tell_frozen(rotation)  # and wait: due again after the freeze
        elif what == "auto-revoke":
            after = self.service.tick(rotation_id)
            if after.phase is not Phase.REVOCABLE:
                count += 1
            rotation = after
        elif what == "observation-elapsed":
            after = self.service.tick(rotation_id)
            if after.phase is not Phase.OBSERVING:
                count += 1
            rotation = after
        elif what == "open-lane":
            rotation = self.service.open_lane(rotation_id)
            count += 1
        elif what == "cut-over":
            rotation = self.service.cut_over(rotation_id)
            count += 1
        elif what == "look-for-new-version":
            after = self.service.prepare(rotation_id, actor="rotabot")
            if after.phase is not Phase.READY_CHECK:
                count += 1
            rotation = after
        # A switch an admin queued through a freeze: performed (or dropped, saying why) once
        # the window ended; read from the audit trail, so a restart loses nothing.
        if (
            what is None
            and rotation.phase in (Phase.VALIDATING, Phase.FAILED)
            and self.service.run_queued_switch(rotation_id)
        ):
            count += 1
            rotation = self.service.get(rotation_id)
        if rotation.phase in (Phase.OBSERVING, Phase.REVOCABLE) and self.service.two_person(
            rotation.secret
        ):
            count += self._expire_break_glass(rotation_id)
        if self.reminders is not None and self.notices is not None and not rotation.terminal:
            count += self._send_notices(rotation)
            if rotation.phase in (Phase.OBSERVING, Phase.REVOCABLE):
                count += self._report_unmapped(rotation)
        self._refresh_countdown(rotation)
        return count

    def _report_unmapped(self, rotation: Rotation) -> int:
        """Tell the thread, once per client, about use of the old credential by a client no
        catalog consumer's ``identity`` matches: the map must be fixed before revoking."""
        assert rotation.id is not None and self.reminders is not None
        assert self.notices is not None
        now = self.service.clock.now()
        last = self._usage_checked.get(rotation.id)
        if last is not None and now - last < UNMAPPED_CHECK_EVERY:
            return 0
        self._usage_checked[rotation.id] = now
        strangers = unmapped(self.service.usage_of_old(rotation))
        if not strangers:
            return 0
        count = 0
        for seen in strangers:
            # The claim key is what identifies the client, so each is reported once.
            key = f"{UNMAPPED}:{identifies(seen)}"[:500]
            if not self.reminders.claim(rotation.id, key, UNMAPPED, now):
                continue
            try:
                self.notices.thread_note(rotation, unmapped_text(rotation, seen, now))
            except Exception:
                self.reminders.release(rotation.id, key, UNMAPPED)
                raise
            count += 1
        return count

    def _expire_break_glass(self, rotation_id: int) -> int:
        """A break-glass request past its time limit is cancelled, and the thread told."""
        waiting = self.service.break_glass_request(rotation_id)
        if waiting is None or not waiting.expired(self.service.clock.now()):
            return 0
        return 1 if self.service.expire_break_glass(rotation_id) else 0

    def _tell_frozen(self, rotation: Rotation) -> int:
        """Once per freeze: the thread hears that the automatic revoke waits for its end."""
        freeze = self.service.freeze_of(rotation.secret)
        if freeze is None or rotation.id is None or self.reminders is None:
            return 0
        if self.notices is None:
            return 0
        kind = f"frozen:{freeze.until.isoformat()}"
        if not self.reminders.claim(rotation.id, WHOLE_ROTATION, kind, self.service.clock.now()):
            return 0
        try:
            self.notices.thread_note(
                rotation,
                f":hourglass: {rotation.ref}: the automatic revoke waits: frozen, "
                f"{freeze.describe()}. rotabot revokes once, when it ends.",
            )
        except Exception:
            self.reminders.release(rotation.id, WHOLE_ROTATION, kind)
            raise
        return 1
    def _refresh_countdown(self, rotation: Rotation) -> None:
        """During a cutover window, re-render the message once per COUNTDOWN_EVERY and once
        more just after the window ends (it then says *ended*)."""
        assert rotation.id is not None
        if self.refresh is None or rotation.cutover_until is None:
            return
        if not rotation.cutover_pending():
            return
        now = self.service.clock.now()
        last = self._refreshed.get(rotation.id)
        ended_since = last is not None and last < rotation.cutover_until <= now
        if last is not None and now - last < COUNTDOWN_EVERY and not ended_since:
            return
        if last is not None and last >= rotation.cutover_until:
            return  # it says *ended* already; the timer's notice tells the rest
        self._refreshed[rotation.id] = now
        self.refresh(rotation.id)

    # --- reminders, escalation, overlap warning, gate notices ---------------------------

    def _settings(self, rotation: Rotation) -> EffectiveSettings | None:
        try:
            return self.service.catalog.settings_for(rotation.secret)
        except Exception:  # the secret left the catalog mid-rotation: nobody to ask
            return None

    def _send_notices(self, rotation: Rotation) -> int:
        assert rotation.id is not None and self.reminders is not None
        settings = self._settings(rotation)
        if settings is None:
            return 0
        settings = self.service.reminder_settings(rotation, settings)  # urgent: sooner
        now = self.service.clock.now()
        sent = self.reminders.sent(rotation.id)
        notices = due_notices(
            rotation,
            now=now,
            remind_after=settings.remind_after,
            escalate_after=settings.escalate_after,
            sent=sent,
        )
        closed = (
            rotation.phase is Phase.OBSERVING
            and (WHOLE_ROTATION, GATE_BLOCKED) not in sent
            and rotation.observe_until is not None
            and now >= rotation.observe_until
        )
        # tick() left it observing after the window: the gate is closed; say what is missing.
        gate = gate_notice(rotation, now=now, gate_open=not closed, sent=sent)
        unmet: tuple[str, ...] = ()
        if gate is not None and gate.kind == GATE_BLOCKED:
            unmet = self.service.gate(rotation.id).unmet
            if not unmet:
                gate = None  # it opened meanwhile; the next tick marks it revocable
        if gate is not None:
            notices.insert(0, gate)
        count = 0
        for notice in notices:
            if self._send(rotation, notice, settings, unmet):
                count += 1
        return count

    def _send(
        self,
        rotation: Rotation,
        notice: Notice,
        settings: EffectiveSettings,
        unmet: tuple[str, ...],
    ) -> bool:
        assert rotation.id is not None and self.reminders is not None
        assert self.notices is not None
        now = self.service.clock.now()
        # Claimed before sending: if two replicas race, the unique key lets one through.
        if not self.reminders.claim(rotation.id, notice.consumer, notice.kind, now):
            return False
        try:
            if notice.kind == GATE_BLOCKED:
                self.notices.thread_note(
                    rotation, gate_blocked_text(rotation, unmet, settings.admins)
                )
            elif notice.kind.startswith(REMIND + ":"):
                text = notice_text(rotation, notice)
                owner = notice.owner or ""
                if owner.startswith(("U", "W")):
                    self.notices.direct_message(owner, text)
                else:
                    # A user group has no DM: remind it in the rotation thread.
                    self.notices.thread_note(rotation, f"{mention(owner)} {text}")
            else:
                self.notices.thread_note(rotation, notice_text(rotation, notice, settings.admins))
        except Exception:
            # Not sent: forget the claim so a later tick tries again.
            self.reminders.release(rotation.id, notice.consumer, notice.kind)
            raise
        log.info(
            "notice sent",
            extra={"rotation_id": rotation.id, "consumer": notice.consumer, "kind": notice.kind},
        )
        return True
