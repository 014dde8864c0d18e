"""Scheduled rotations, readiness reviews and max_age reminders, driven by the timer.

`/rotate schedule SECRET at TIME` stores a schedule. ``run_due`` (called by the timer) posts a
readiness review ``readiness_lead`` before the time (catalog findings, store and issuer
reachability, a Confirm-ready button per owner); on the day it starts the rotation only if
readiness passed (every owner confirmed and nothing blocks), and otherwise asks the admins.
Secrets with ``max_age`` get a "due" reminder once they are older than that.

Every step is claimed in the database before it acts (a status compare-and-set, or a unique
row), so a restart or a second replica never does it twice; each state change writes its
audit event in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.audit import AuditEvent
from bot.domain.commands import USAGE, CommandError
from bot.domain.errors import AlreadyActive, NotAuthorized, RotabotError
from bot.domain.schedule import (
    OPEN_STATUSES,
    STALE_START,
    Age,
    Confirmation,
    DueSecret,
    Occurrence,
    Readiness,
    ScheduleAction,
    ScheduledRotation,
    ScheduleStatus,
    credential_age,
    due_reminder_slot,
    format_at,
    natural_due,
    next_action,
    occurrence_at,
    owner_reminder_due,
    readiness_outcome,
    review_time,
    spread_dues,
)
from bot.services.readiness_review import ReadinessReview, owners_of, review_readiness
from bot.services.rotations import RotationService

log = logging.getLogger("rotabot.schedule")

ACTOR = "rotabot"


class ScheduleRepository(Protocol):
    """Storage of schedules (storage/schedules.py). Each method is one transaction; the
    ``event`` passed in is appended to the audit log in that same transaction."""

    def add(self, item: ScheduledRotation, *, event: AuditEvent,
            replaces: ScheduledRotation | None, replaced_event: AuditEvent | None
            ) -> ScheduledRotation:
        """Insert (assigning ``id``), cancelling ``replaces`` first if given and still open;
        raises RotabotError if another open schedule of the secret appeared meanwhile."""
        ...

    def add_occurrence(self, item: ScheduledRotation, *, event: AuditEvent
                       ) -> ScheduledRotation | None:
        """Insert a recurring occurrence (``item.occurrence`` set) unless that occurrence was
        made before or the secret has an open schedule: None then, nothing written."""
        ...

    def get(self, schedule_id: int) -> ScheduledRotation: ...

    def open_for_secret(self, secret: str) -> ScheduledRotation | None: ...

    def list_open(self) -> list[ScheduledRotation]: ...

    def list_starting(self) -> list[ScheduledRotation]:
        """Schedules claimed for starting whose rotation is not recorded (yet)."""
        ...

    def transition(self, item: ScheduledRotation, expected: Iterable[ScheduleStatus],
                   new: ScheduleStatus, *, event: AuditEvent) -> bool:
        """Write ``item``'s fields with status ``new`` if the stored status is one of
        ``expected``; False (nothing written) when another writer got there first."""
        ...

    def set_review_message(self, schedule_id: int, channel: str, ts: str) -> None: ...

    def claim_owner_reminder(self, schedule_id: int, at: datetime) -> bool:
        """Mark the owners' reminder sent; False when it was (another replica, a restart)."""
        ...

    def release_owner_reminder(self, schedule_id: int) -> None:
        """Forget the claim: the reminder could not be posted, the next tick tries again."""
        ...

    def record(self, event: AuditEvent) -> None:
        """Append one audit event on its own (a refused click changes nothing else)."""
        ...

    def confirm(self, schedule_id: int, confirmation: Confirmation, *,
                event: AuditEvent) -> bool:
        """Record an owner's confirmation; False when that owner had already confirmed."""
        ...

    def confirmations(self, schedule_id: int) -> list[Confirmation]: ...

    def first_seen(self, secret: str, now: datetime) -> datetime:
        """When the secret was first seen, recording ``now`` if this is the first time."""
        ...

    def last_rotated(self, secret: str) -> datetime | None:
        """When the secret's last rotation that reached revocation finished."""
        ...

    def claim_due_reminder(self, secret: str, due_since: datetime, slot: int,
                           at: datetime) -> bool: ...

    def release_due_reminder(self, secret: str, due_since: datetime, slot: int) -> None: ...


class ScheduleNotices(Protocol):
    """What the schedule service says in Slack (handlers/notices.py renders it)."""

    def post_review(self, channel: str, item: ScheduledRotation, owners: tuple[str, ...],
                    confirmed: list[Confirmation]) -> str:
        """Post the readiness review; returns the message ts."""
        ...

    def update_review(self, item: ScheduledRotation, owners: tuple[str, ...],
                      confirmed: list[Confirmation]) -> None: ...

    def ask_admins(self, channel: str, item: ScheduledRotation, admins: tuple[str, ...],
                   reasons: tuple[str, ...]) -> None: ...

    def rotation_due(self, channel: str, due: DueSecret) -> None: ...

    def remind_owners(self, item: ScheduledRotation, missing: tuple[str, ...]) -> None:
        """Remind the owners who have not confirmed, in the review's thread."""
        ...


@dataclass(frozen=True)
class ConfirmOutcome:
    item: ScheduledRotation
    changed: bool  # False: this owner had already confirmed
    readiness: Readiness


@dataclass(frozen=True)
class DueWork:
    """One thing the timer should do now."""

    action: ScheduleAction | str  # a ScheduleAction, DUE_REMINDER, REPOST_REVIEW, RECOVER_START
    secret: str
    schedule: ScheduledRotation | None = None
    due: DueSecret | None = None
    occurrence: Occurrence | None = None


@dataclass(frozen=True)
class Upcoming:
    """What is due next for one secret (App Home): when, and where its review stands."""

    secret: str
    at: datetime
    state: str  # in words: "review from 2027-02-27T09:00Z", "waiting for owner U1", ...
    schedule: ScheduledRotation | None = None


DUE_REMINDER = "due-reminder"
RECUR = "recur"  # make a recurring secret's next occurrence (a schedule)
REMIND_OWNERS = "remind-owners"
REPOST_REVIEW = "repost-review"
RECOVER_START = "recover-start"


@dataclass
class ScheduleService:
    rotations: RotationService
    repo: ScheduleRepository
    notices: ScheduleNotices | None = None
    # First-seen times never change once stored: read each once per process.
    _first_seen: dict[str, datetime] = field(default_factory=dict)

    def _now(self) -> datetime:
        return self.rotations.clock.now()

    # --- scheduling --------------------------------------------------------------------

    def schedule(self, secret: str, at: datetime, *, actor: str) -> ScheduledRotation:
        """Plan a rotation of ``secret`` at ``at`` (admins only). A schedule already open for
        the secret is replaced (postponed or brought forward)."""
        catalog = self.rotations.catalog
        catalog.secret(secret)  # unknown secret: a clear error with suggestions
        if not self.rotations.is_admin(actor, secret):
            raise NotAuthorized(f"only admins of {secret} may schedule its rotation")
        now = self._now()
        if at <= now:
            raise CommandError(
                f"{format_at(at)} is in the past (it is {format_at(now)} now): give a "
                "future time in UTC",
                USAGE["schedule"],
            )
        item = ScheduledRotation(secret=secret, at=at, created_by=actor, created_at=now)
        existing = self.repo.open_for_secret(secret)
        replaced_event = None
        if existing is not None:
            replaced_event = self._event(
                existing, actor=actor, now=now, action="schedule.replaced",
                before=existing.status.value, after=ScheduleStatus.CANCELLED.value,
                reason=f"replaced by a schedule for {format_at(at)}",
            )
        event = AuditEvent(
            at=now, actor=actor, action="schedule.created", secret=secret,
            after=ScheduleStatus.SCHEDULED.value,
            detail={"at": format_at(at)},
        )
        stored = self.repo.add(item, event=event, replaces=existing,
                               replaced_event=replaced_event)
        if existing is not None and existing.review_ts is not None and self.notices is not None:
            replaced = self.repo.get(existing.id) if existing.id is not None else existing
            try:
                self.notices.update_review(
                    replaced, owners_of(catalog, secret), self._confirmations(replaced)
                )
            except Exception:  # the new schedule stands; the old message is only stale
                log.exception("could not update a replaced readiness review",
                              extra={"secret": secret})
        return stored

    def open_cutover_review(self, secret: str, *, actor: str) -> ScheduledRotation:
        """`/rotate start` of a hard cutover (admins only): post its readiness review now; the
        rotation starts the moment the last owner confirms ready (the back ends are asked
        again then). Not everyone by ``readiness_lead`` from now: the admins are asked. An
        open review of the secret is returned as it is (a repeated start opens no second)."""
        catalog = self.rotations.catalog
        catalog.secret(secret)
        if not self.rotations.is_admin(actor, secret):
            raise NotAuthorized(f"only admins of {secret} may start a rotation")
        running = next((r for r in self.rotations.active() if r.secret == secret), None)
        if running is not None:
            raise AlreadyActive(secret, running.ref)
        existing = self.repo.open_for_secret(secret)
        if existing is not None and existing.start_when_ready:
            return existing
        now = self._now()
        at = now + catalog.settings_for(secret).readiness_lead
        item = ScheduledRotation(secret=secret, at=at, created_by=actor, created_at=now,
                                 start_when_ready=True)
        replaced_event = None
        if existing is not None:
            replaced_event = self._event(
                existing, actor=actor, now=now, action="schedule.replaced",
                before=existing.status.value, after=ScheduleStatus.CANCELLED.value,
                reason="replaced by a hard cutover's readiness review",
            )
        stored = self.repo.add(
            item,
            event=AuditEvent(at=now, actor=actor, action="schedule.cutover-review",
                             secret=secret, after=ScheduleStatus.SCHEDULED.value,
                             detail={"at": format_at(at)}),
            replaces=existing, replaced_event=replaced_event,
        )
        self._post_review(stored, now)
        assert stored.id is not None
        return self.repo.get(stored.id)

    def review_at(self, item: ScheduledRotation) -> datetime:
        return review_time(item.at, self.rotations.catalog.settings_for(item.secret).readiness_lead)

    def get(self, schedule_id: int) -> ScheduledRotation:
        return self.repo.get(schedule_id)

    def open_schedules(self) -> list[ScheduledRotation]:
        return self.repo.list_open()

    def review(self, secret: str) -> ReadinessReview:
        """Live readiness of a secret now (catalog findings, store and issuer reachability)."""
        return review_readiness(
            self.rotations.catalog, self.rotations.backends, secret, now=self._now()
        )

    # --- owners confirm ----------------------------------------------------------------

    def confirm(self, schedule_id: int, owner: str, *, actor: str) -> ConfirmOutcome:
        """The owner (or a member of the owner group) confirms their consumers are ready."""
        item = self.repo.get(schedule_id)
        owners = owners_of(self.rotations.catalog, item.secret)
        now = self._now()
        if owner not in owners:
            raise RotabotError(f"{owner} owns no consumer of {item.secret} any more")
        if not self.rotations.owns(actor, owner):
            why = f"only owner {owner} (or a member) may confirm readiness for {item.secret}"
            self.repo.record(self._event(item, actor=actor, now=now, action="click.refused",
                                         reason=why, detail={"owner": owner,
                                                             "click": "confirm ready"}))
            raise NotAuthorized(why)
        if item.status in (ScheduleStatus.STARTED, ScheduleStatus.CANCELLED):
            raise RotabotError(
                f"{item.ref} is {item.status.value}: there is nothing to confirm any more"
            )
        changed = self.repo.confirm(
            schedule_id,
            Confirmation(owner=owner, confirmed_by=actor, confirmed_at=now),
            event=self._event(item, actor=actor, now=now, action="schedule.confirmed",
                              detail={"owner": owner}),
        )
        confirmed = self.repo.confirmations(schedule_id)
        readiness = readiness_outcome(owners, (c.owner for c in confirmed), item.blocking)
        if readiness.passed and item.status is ScheduleStatus.REVIEW_POSTED:
            self.repo.transition(
                item, [ScheduleStatus.REVIEW_POSTED], ScheduleStatus.READINESS_PASSED,
                event=self._event(item, actor=ACTOR, now=now, action="schedule.readiness-passed",
                                  before=item.status.value,
                                  after=ScheduleStatus.READINESS_PASSED.value),
            )
        item = self.repo.get(schedule_id)
        if changed and item.review_ts is not None and self.notices is not None:
            try:
                self.notices.update_review(item, owners, confirmed)
            except Exception:  # recorded either way; the message catches up on the next change
                log.exception("could not update the readiness review", extra={"ref": item.ref})
        if readiness.passed and item.start_when_ready and item.open:
            # A hard cutover's review: the last confirmation starts it now.
            self._start_or_ask(item, now)
            item = self.repo.get(schedule_id)
        return ConfirmOutcome(item=item, changed=changed, readiness=readiness)

    def cancel_review(self, schedule_id: int, *, actor: str) -> ScheduledRotation:
        """An admin calls off an open readiness review (nothing was minted); the message
        says who. Cancelling one already closed changes nothing."""
        item = self.repo.get(schedule_id)
        now = self._now()
        if not self.rotations.is_admin(actor, item.secret):
            why = f"only admins of {item.secret} may cancel {item.ref}"
            self.repo.record(self._event(item, actor=actor, now=now, action="click.refused",
                                         reason=why, detail={"click": "cancel review"}))
            raise NotAuthorized(why)
        if not item.open:
            return item
        item.outcome = f"Cancelled by <@{actor}>; nothing was minted."
        self.repo.transition(
            item, OPEN_STATUSES, ScheduleStatus.CANCELLED,
            event=self._event(item, actor=actor, now=now, action="schedule.cancelled",
                              before=item.status.value, after=ScheduleStatus.CANCELLED.value),
        )
        self._refresh_review(item)
        assert item.id is not None
        return self.repo.get(item.id)

    # --- the timer ---------------------------------------------------------------------

    def due_work(self, now: datetime) -> list[DueWork]:
        """Everything due at ``now``: reviews to post, starts to decide, due reminders."""
        catalog = self.rotations.catalog
        work: list[DueWork] = []
        open_by_secret: dict[str, ScheduledRotation] = {}
        for item in self.repo.list_open():
            open_by_secret[item.secret] = item
            if item.secret not in catalog.secrets:
                # Removed from the catalog: on the day the admins are told it cannot start.
                if now >= item.at:
                    work.append(DueWork(ScheduleAction.START, item.secret, schedule=item))
                continue
            lead = catalog.settings_for(item.secret).readiness_lead
            action = next_action(item.status, item.at, lead, now)
            if item.start_when_ready and item.status is ScheduleStatus.READINESS_PASSED:
                # A hard cutover's review passed but its start waited (a freeze window): it
                # starts at the first tick that lets it, not at the review's deadline.
                action = ScheduleAction.START
            if action is not None:
                work.append(DueWork(action, item.secret, schedule=item))
            elif item.status is ScheduleStatus.REVIEW_POSTED and item.review_ts is None:
                work.append(DueWork(REPOST_REVIEW, item.secret, schedule=item))
            elif owner_reminder_due(item, lead, now):
                work.append(DueWork(REMIND_OWNERS, item.secret, schedule=item))
        for item in self.repo.list_starting():
            if item.changed_at is None or now - item.changed_at >= STALE_START:
                work.append(DueWork(RECOVER_START, item.secret, schedule=item))
        started = {r.secret: r.created_at for r in self.rotations.active()}
        rotating = set(started)
        for secret in catalog.secrets:
            if secret in rotating or secret in open_by_secret:
                continue
            occurrence = self.next_occurrence(secret, now, started=started)
            if occurrence is not None and occurrence_at(
                occurrence.due, catalog.settings_for(secret).readiness_lead, now
            ) is not None:
                work.append(DueWork(RECUR, secret, occurrence=occurrence))
        for secret in catalog.secrets:
            settings = catalog.settings_for(secret)
            # Already being rotated, or already planned: a reminder would only be noise.
            if settings.max_age is None or secret in rotating or secret in open_by_secret:
                continue
            age = self.age(secret, now)
            assert age is not None
            slot = due_reminder_slot(age, now)
            if slot is None:
                continue
            work.append(DueWork(
                DUE_REMINDER, secret,
                due=DueSecret(secret=secret, age=age, slot=slot, admins=settings.admins),
            ))
        return work

    def next_occurrence(self, secret: str, now: datetime,
                        started: dict[str, datetime] | None = None) -> Occurrence | None:
        """A recurring secret's next occurrence, derived from stored state only (its last
        finished rotation or first-seen time, plus ``every``, kept ``offset`` from its group's
        last finished or running rotations), so every replica and every tick derive the same
        one; None without ``every``. ``started``: active rotations' start times, if known."""
        catalog = self.rotations.catalog
        settings = catalog.settings_for(secret)
        if settings.every is None:
            return None
        due = self._natural_due(secret, settings.every, now)
        group = catalog.offset_group(secret)
        if group is not None:
            members, offset = group
            if started is None:
                started = {r.secret: r.created_at for r in self.rotations.active()}
            dues: list[tuple[str, datetime]] = []
            last_active: dict[str, datetime] = {}
            for member in members:
                every = catalog.settings_for(member).every
                if every is not None:
                    dues.append((member, self._natural_due(member, every, now)))
                # A running rotation counts from its start (not from now: the due time,
                # and so the occurrence's key, must not move from tick to tick).
                active_since = started.get(member) or self.repo.last_rotated(member)
                if active_since is not None:
                    last_active[member] = active_since
            due = spread_dues(dues, offset, last_active).get(secret, due)
        at = occurrence_at(due, settings.readiness_lead, now) or due
        return Occurrence(secret=secret, due=due, at=at)

    def _natural_due(self, secret: str, every: timedelta, now: datetime) -> datetime:
        return natural_due(last_finished=self.repo.last_rotated(secret),
                           first_seen=self._seen(secret, now), every=every)

    def upcoming(self, now: datetime | None = None) -> list[Upcoming]:
        """What is due next, soonest first: open schedules (with their review state) and
        the next occurrence of every recurring secret not already planned or rotating."""
        now = now or self._now()
        catalog = self.rotations.catalog
        out: list[Upcoming] = []
        planned: set[str] = set()
        for item in self.repo.list_open():
            planned.add(item.secret)
            out.append(Upcoming(item.secret, item.at, self._review_state(item), item))
        started = {r.secret: r.created_at for r in self.rotations.active()}
        for secret in catalog.secrets:
            if secret in planned or secret in started:
                continue
            occurrence = self.next_occurrence(secret, now, started=started)
            if occurrence is not None:
                review = review_time(occurrence.at, catalog.settings_for(secret).readiness_lead)
                out.append(Upcoming(secret, occurrence.at,
                                    f"recurring; review from {format_at(review)}"))
        return sorted(out, key=lambda u: (u.at, u.secret))

    def _review_state(self, item: ScheduledRotation) -> str:
        if item.status is ScheduleStatus.SCHEDULED:
            return f"review from {format_at(self.review_at(item))}"
        if item.status is ScheduleStatus.READINESS_PASSED:
            return f"readiness passed; {item.outcome}" if item.outcome else "readiness passed"
        owners = owners_of(self.rotations.catalog, item.secret) \
            if item.secret in self.rotations.catalog.secrets else ()
        readiness = readiness_outcome(
            owners, (c.owner for c in self._confirmations(item)), item.blocking
        )
        return "; ".join(readiness.reasons) or "every owner confirmed"

    def age(self, secret: str, now: datetime) -> Age | None:
        """How old the secret's credential is against its max_age (None without max_age)."""
        max_age = self.rotations.catalog.settings_for(secret).max_age
        if max_age is None:
            return None
        return credential_age(
            last_finished=self.repo.last_rotated(secret),
            first_seen=self._seen(secret, now),
            max_age=max_age,
            now=now,
        )

    def _seen(self, secret: str, now: datetime) -> datetime:
        if secret not in self._first_seen:
            self._first_seen[secret] = self.repo.first_seen(secret, now)
        return self._first_seen[secret]

    def run_due(self, now: datetime | None = None) -> int:
        """Do everything due (the timer calls this every tick); returns how many actions ran.
        Idempotent: each action is claimed in the database before it is taken."""
        now = now or self._now()
        count = 0
        for work in self.due_work(now):
            try:
                if self._run(work, now):
                    count += 1
                    log.info("scheduled work done",
                             extra={"secret": work.secret, "action": str(work.action)})
            except Exception:  # one broken schedule must not stop the others
                log.exception("scheduled work failed",
                              extra={"secret": work.secret, "action": str(work.action)})
        return count

    def _run(self, work: DueWork, now: datetime) -> bool:
        if work.action == RECUR:
            assert work.occurrence is not None
            return self._recur(work.occurrence, now)
        if work.action == DUE_REMINDER:
            assert work.due is not None
            return self._remind_due(work.due, now)
        assert work.schedule is not None
        if work.action == ScheduleAction.POST_REVIEW:
            return self._post_review(work.schedule, now)
        if work.action == REPOST_REVIEW:
            return self._repost_review(work.schedule)
        if work.action == REMIND_OWNERS:
            return self._remind_owners(work.schedule, now)
        if work.action == RECOVER_START:
            return self._recover_start(work.schedule, now)
        return self._start_or_ask(work.schedule, now)

    def _recur(self, occurrence: Occurrence, now: datetime) -> bool:
        """Make the occurrence a schedule (once: its key is unique in the database), then
        let the `/rotate schedule` machinery review it, wait for the owners and start it."""
        lead = self.rotations.catalog.settings_for(occurrence.secret).readiness_lead
        at = occurrence_at(occurrence.due, lead, now) or occurrence.at
        item = ScheduledRotation(secret=occurrence.secret, at=at, created_by=ACTOR,
                                 created_at=now, occurrence=occurrence.key)
        event = AuditEvent(
            at=now, actor=ACTOR, action="schedule.recurring", secret=occurrence.secret,
            after=ScheduleStatus.SCHEDULED.value,
            detail={"at": format_at(at), "due": format_at(occurrence.due),
                    "occurrence": occurrence.key},
        )
        stored = self.repo.add_occurrence(item, event=event)
        if stored is None:
            return False
        if next_action(stored.status, stored.at, lead, now) is ScheduleAction.POST_REVIEW:
            self._post_review(stored, now)
        return True

    def _post_review(self, item: ScheduledRotation, now: datetime) -> bool:
        review = review_readiness(
            self.rotations.catalog, self.rotations.backends, item.secret, now=now
        )
        item.findings, item.reviewed_at = review.findings, now
        won = self.repo.transition(
            item, [ScheduleStatus.SCHEDULED], ScheduleStatus.REVIEW_POSTED,
            event=self._event(
                item, actor=ACTOR, now=now, action="schedule.review",
                before=ScheduleStatus.SCHEDULED.value, after=ScheduleStatus.REVIEW_POSTED.value,
                reason="; ".join(review.blocking) or None,
                detail={"blocking": str(len(review.blocking)),
                        "warnings": str(len(review.warnings))},
            ),
        )
        if not won:
            return False
        self._repost_review(item)
        return True

    def _repost_review(self, item: ScheduledRotation) -> bool:
        """Post the review message (again, if posting failed before)."""
        if self.notices is None or item.id is None:
            return False
        channel = self.rotations.catalog.settings_for(item.secret).channel
        fresh = self.repo.get(item.id)
        if fresh.review_ts is not None:
            return False
        ts = self.notices.post_review(
            channel, fresh, owners_of(self.rotations.catalog, item.secret),
            self._confirmations(fresh),
        )
        self.repo.set_review_message(item.id, channel, ts)
        return True

    def _start_or_ask(self, item: ScheduledRotation, now: datetime) -> bool:
        catalog = self.rotations.catalog
        assert item.id is not None
        if item.secret not in catalog.secrets:
            reasons: tuple[str, ...] = (f"{item.secret} is no longer in the catalog",)
            return self._needs_admin(item, reasons, now, expected=OPEN_STATUSES)
        if self.rotations.freeze_of(item.secret) is not None:
            # Inside a freeze window: still due, so the first tick after it starts it (once:
            # the claim below).
            return False
        # On the day the back ends are asked again: a review two days old proves little.
        review = review_readiness(catalog, self.rotations.backends, item.secret, now=now)
        readiness = readiness_outcome(
            review.owners, (c.owner for c in self._confirmations(item)), review.blocking
        )
        if not readiness.passed:
            return self._needs_admin(item, readiness.reasons, now, expected=OPEN_STATUSES)
        busy = self.rotations.exclusive_conflict(item.secret)
        if busy is not None:
            # Its partner is rotating: stay open and try again on every tick (it starts
            # after the other finishes); say why once.
            self._wait(item, f"waiting: {busy}", now)
            return False
        # Claim the start before starting, so a second runner (a restart, another replica)
        # finds it taken; a claim whose rotation never got recorded is recovered later.
        won = self.repo.transition(
            item, OPEN_STATUSES, ScheduleStatus.STARTED,
            event=self._event(item, actor=ACTOR, now=now, action="schedule.started",
                              before=item.status.value, after=ScheduleStatus.STARTED.value),
        )
        if not won:
            return False
        try:
            # Readiness passed (every owner confirmed): a hard cutover may start too.
            rotation = self.rotations.start(item.secret, actor=item.created_by,
                                            recurring=item.occurrence is not None,
                                            ready_confirmed=True)
        except RotabotError as exc:
            reasons = (f"the rotation could not start: {exc}",)
            return self._needs_admin(item, reasons, now, expected=[ScheduleStatus.STARTED])
        self._record_rotation(item, rotation.id, now)
        return True

    def _remind_owners(self, item: ScheduledRotation, now: datetime) -> bool:
        assert item.id is not None
        owners = owners_of(self.rotations.catalog, item.secret)
        missing = readiness_outcome(owners, (c.owner for c in self._confirmations(item)),
                                    ()).missing
        if not missing or not self.repo.claim_owner_reminder(item.id, now):
            return False
        if self.notices is None:
            return True
        try:
            self.notices.remind_owners(self.repo.get(item.id), missing)
        except Exception:
            self.repo.release_owner_reminder(item.id)  # not sent: the next tick tries again
            raise
        return True

    def _wait(self, item: ScheduledRotation, why: str, now: datetime) -> None:
        if item.outcome == why:
            return
        item.outcome = why
        # Same status: only the reason changes, written (and audited) once per reason.
        if self.repo.transition(
            item, [item.status], item.status,
            event=self._event(item, actor=ACTOR, now=now, action="schedule.waiting",
                              reason=why),
        ):
            self._refresh_review(item)

    def _record_rotation(self, item: ScheduledRotation, rotation_id: int | None,
                         now: datetime) -> None:
        item.rotation_id = rotation_id
        item.outcome = f"started R-{rotation_id}"
        self.repo.transition(
            item, [ScheduleStatus.STARTED], ScheduleStatus.STARTED,
            event=self._event(item, actor=ACTOR, now=now, action="schedule.rotation",
                              detail={"rotation": f"R-{rotation_id}"}),
        )
        self._refresh_review(item)

    def _recover_start(self, item: ScheduledRotation, now: datetime) -> bool:
        """A start was claimed but its rotation never recorded: the bot stopped in between.
        Adopt the rotation if it was created, else hand the decision to the admins."""
        since = item.changed_at or item.at
        for rotation in self.rotations.history(item.secret, limit=5):
            if rotation.started_by == item.created_by and rotation.created_at >= since:
                self._record_rotation(item, rotation.id, now)
                return True
        reasons = ("rotabot stopped while starting it, and no rotation was started",)
        return self._needs_admin(item, reasons, now, expected=[ScheduleStatus.STARTED])

    def _needs_admin(self, item: ScheduledRotation, reasons: tuple[str, ...], now: datetime,
                     *, expected: Iterable[ScheduleStatus]) -> bool:
        item.outcome = "\n".join(reasons)
        won = self.repo.transition(
            item, expected, ScheduleStatus.NEEDS_ADMIN,
            event=self._event(item, actor=ACTOR, now=now, action="schedule.needs-admin",
                              before=item.status.value, after=ScheduleStatus.NEEDS_ADMIN.value,
                              reason="; ".join(reasons)),
        )
        if not won:
            return False
        catalog = self.rotations.catalog
        if self.notices is not None:
            if item.secret in catalog.secrets:
                settings = catalog.settings_for(item.secret)
                channel, admins = settings.channel, settings.admins
            else:
                channel, admins = catalog.defaults.channel, tuple(catalog.defaults.admins)
            self.notices.ask_admins(channel, self.repo.get(item.id or 0), admins, reasons)
        self._refresh_review(item)
        return True

    def _remind_due(self, due: DueSecret, now: datetime) -> bool:
        if not self.repo.claim_due_reminder(due.secret, due.age.due_since, due.slot, now):
            return False
        if self.notices is None:
            return True
        try:
            channel = self.rotations.catalog.settings_for(due.secret).channel
            self.notices.rotation_due(channel, due)
        except Exception:
            # Not sent: forget the claim so the next tick tries again.
            self.repo.release_due_reminder(due.secret, due.age.due_since, due.slot)
            raise
        return True

    # --- plumbing ----------------------------------------------------------------------

    def _refresh_review(self, item: ScheduledRotation) -> None:
        if self.notices is None or item.id is None:
            return
        fresh = self.repo.get(item.id)
        if fresh.review_ts is None:
            return
        try:
            self.notices.update_review(
                fresh, owners_of(self.rotations.catalog, fresh.secret)
                if fresh.secret in self.rotations.catalog.secrets else (),
                self._confirmations(fresh),
            )
        except Exception:  # the state is stored; only the message is stale
            log.exception("could not update the readiness review", extra={"ref": fresh.ref})

    def _confirmations(self, item: ScheduledRotation) -> list[Confirmation]:
        return self.repo.confirmations(item.id) if item.id is not None else []

    @staticmethod
    def _event(item: ScheduledRotation, *, actor: str, now: datetime, action: str,
               before: str | None = None, after: str | None = None,
               reason: str | None = None, detail: dict[str, str] | None = None) -> AuditEvent:
        return AuditEvent(
            at=now, actor=actor, action=action, secret=item.secret,
            before=before, after=after, reason=reason,
            detail={"schedule": item.ref, "at": format_at(item.at), **(detail or {})},
        )
