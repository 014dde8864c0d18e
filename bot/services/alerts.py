"""Failure alerts: classify a report, tag it with its rotation, coalesce repeats, tell people.

One alert per consumer and failure class within a window (default 10 minutes): repeats raise
its count and last-seen time and update the message already posted, at most about once a
second per alert, so a burst of reports never becomes a burst of Slack messages. A new alert is
posted to the secret's incident channel and, when a rotation of the secret is running, into the
rotation's thread. An alert that arrives while the rotation is revocable sends it back to
observing: the revocation gate then names the alert until someone resolves it.

Reports are stored by group commit (``commit_batch``, fed by bot/services/alert_batches.py):
the reports of a batch share one transaction, and what Slack should show follows after the
commit (``follow_up``, on a thread of its own for the HTTP intake), so a sender waits for the
database, never for Slack. A new alert's post is claimed (AlertPostClaims) so it is made once
across replicas, and ``catch_up`` posts what a dead process committed but never posted.

Plain Python: Slack is behind the AlertMessenger Protocol (handlers/alerts_http.py implements
it). Coalescing happens in one writer per process (``commit_batch`` holds a lock); counts are
added by one UPDATE each, so replicas adding to the same alert lose none, and on PostgreSQL a
batch holds its consumers' and classes' advisory locks (AlertRepository.lock_keys), so a
replica's batch for the same failure waits and then coalesces into the same alert.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from bot.catalog import UnknownSecret
from bot.domain.alert import Alert, AlertStatus
from bot.domain.alert_context import (
    AlertContext,
    describe,
    prompt_rotation,
)
from bot.domain.alert_intake import TOLERANCE_SECONDS, AlertReport, KeyState
from bot.domain.audit import AuditEvent
from bot.domain.errors import ChangedMeanwhile, NotAuthorized, RotabotError, StoreUnavailable
from bot.domain.failures import Classification, classify
from bot.domain.lifecycle import Phase, StepState
from bot.domain.mentions import mention
from bot.domain.pacing import UpdatePacer
from bot.domain.receipts import Receipt, ReceiptKind
from bot.domain.rotation import Rotation
from bot.services.emergency import ACTION_RE_ROTATION, require_admin
from bot.services.ports import AlertPostClaims, UnitOfWork
from bot.services.rotations import RotationService, person_text

log = logging.getLogger("rotabot.alerts")

DEFAULT_WINDOW = timedelta(minutes=10)
# A report's occurred_at further back than this is not believed; receipt time is used.
MAX_BACKDATE = timedelta(days=1)
# How long a taken delivery id answers "duplicate": it outlives the signature tolerance.
DELIVERY_TTL = timedelta(seconds=2 * TOLERANCE_SECONDS)
# A batch whose rotation another writer changed meanwhile is stored again from scratch.
_BATCH_RETRIES = 5

class NotInCatalog(RotabotError):
    """A report names a consumer or secret the catalog does not know (HTTP 404)."""

    def __init__(self, field: str, name: str, suggestions: Sequence[str], where: str = "") -> None:
        self.field = field
        self.name = name
        self.suggestions = list(suggestions)
        hint = (
            "; did you mean " + " or ".join(f"'{s}'" for s in self.suggestions) + "?"
            if self.suggestions
            else ""
        )
        super().__init__(f"no {field} '{name}' in the catalog{where}{hint}")


class AmbiguousConsumer(RotabotError):
    """A consumer name used by several secrets, and the report did not say which (HTTP 422)."""

    field = "secret"

    def __init__(self, consumer: str, secrets: Sequence[str]) -> None:
        self.consumer = consumer
        self.secrets = sorted(secrets)
        super().__init__(
            f"consumer '{consumer}' uses several secrets ({', '.join(self.secrets)}); "
            "say which one in `secret`"
        )


class AlertMessenger(Protocol):
    """Posts and updates an alert's message (the Slack side lives in handlers/)."""

    def post(
        self,
        channel: str,
        alert: Alert,
        context: str,
        rotation_id: int | None,
        thread_ts: str | None = None,
    ) -> tuple[str, str]:
        """Post; returns (channel id, ts) of the new message."""
        ...

    def update(
        self, channel: str, ts: str, alert: Alert, context: str, rotation_id: int | None
    ) -> None:
        """Replace the message; may be queued (Slack's call budget) rather than sent now."""
        ...

    def flush(self) -> None:
        """Wait until queued updates were sent (tests, shutdown)."""
        ...


@dataclass(frozen=True)
class Target:
    """The catalog consumer a report is about."""

    secret: str
    consumer: str
    lane: str
    owner: str
    reload: str


@dataclass(frozen=True)
class IngestResult:
    alert: Alert  # as this report left it (its count includes this report)
    new: bool
    context: AlertContext


@dataclass(frozen=True)
class Intake:
    """One report, checked against the catalog already (``target``)."""

    report: AlertReport
    target: Target
    verdict: Classification | None = None  # None: classified from the report


@dataclass(frozen=True)
class IntakeUnit:
    """What one de-duplication key stands for: a signed request's reports under its
    X-Rotabot-Delivery id, or one Alertmanager alert under its key (None: no key given)."""

    reports: tuple[Intake, ...]
    key: str | None = None


@dataclass(frozen=True)
class UnitOutcome:
    """TAKEN: ``results`` holds one result per report, committed. DUPLICATE or IN_FLIGHT:
    nothing of the unit was stored."""

    state: KeyState
    results: tuple[IngestResult, ...] = ()


@dataclass
class FollowUps:
    """What committed batches leave for Slack (merged while they wait)."""

    posts: list[int] = field(default_factory=list)  # new alerts
    updates: set[int] = field(default_factory=set)  # repeated alerts
    rotations: set[int] = field(default_factory=set)  # rotation messages showing counts
    announcements: list[
        tuple[Rotation, set[tuple[str, StepState]], int, list[AuditEvent]]
    ] = field(default_factory=list)

    def merge(self, other: FollowUps) -> None:
        self.posts.extend(other.posts)
        self.updates |= other.updates
        self.rotations |= other.rotations
        self.announcements.extend(other.announcements)

    def empty(self) -> bool:
        return not (self.posts or self.updates or self.rotations or self.announcements)


@dataclass
class _Group:
    """The reports of one batch that count into one alert."""

    alert: Alert
    new: bool
    rotation: Rotation | None
    reports: int  # of this batch
    added: int  # to add to the stored count at the end of the batch
    reopened: bool = False
    context: AlertContext | None = None


@dataclass(frozen=True)
class AlertOutcome:
    alert: Alert
    changed: bool  # False: it already had that status (double click)


def _alert_context(alert: Alert) -> dict[str, object]:
    """Log context of a line about an alert: its rotation, secret, consumer and lane."""
    return {
        "alert_id": alert.id,
        "rotation_id": alert.rotation_id,
        "secret": alert.secret,
        "consumer": alert.consumer,
        "lane": alert.lane,
    }


@dataclass
class AlertService:
    rotations: RotationService
    messenger: AlertMessenger | None = None
    window: timedelta = DEFAULT_WINDOW
    min_update_interval: float = 1.0  # seconds between updates of one alert's messages
    monotonic: Callable[[], float] = time.monotonic
    # Once-only posts of new alerts across replicas and crashes (None: post without a claim,
    # for a single process in tests).
    post_claims: AlertPostClaims | None = None
    delivery_ttl: timedelta = DELIVERY_TTL
    _intake_lock: threading.Lock = field(default_factory=threading.Lock)
    _follow_guard: threading.Condition = field(default_factory=threading.Condition)
    _pending: FollowUps = field(default_factory=FollowUps)
    _follow_busy: bool = False
    _follow_thread: threading.Thread | None = None
    # Messages beside the incident one (the rotation thread, a clicked copy), per alert.
    # In memory: after a restart only the incident message keeps being updated.
    _extra_messages: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    # Re-render a rotation's message (its open problems show each alert's count): called
    # when an alert of the rotation changed without a change of the rotation itself.
    on_rotation_alert: Callable[[int], None] | None = None

    def __post_init__(self) -> None:
        # One paced update per alert per min_update_interval (all its messages together); a
        # deferred one renders the stored state when it runs.
        self._pacer: UpdatePacer[int] = UpdatePacer(
            self._render_messages,
            lambda: self.min_update_interval,
            monotonic=lambda: self.monotonic(),
            what="alert message update",
            log_context=lambda alert_id: {"alert_id": alert_id},
        )

    # --- finding the consumer ------------------------------------------------------------

    def resolve(self, report: AlertReport) -> Target:
        """The catalog consumer a report names; NotInCatalog / AmbiguousConsumer otherwise."""
        catalog = self.rotations.catalog
        name = report.consumer
        if report.secret:
            try:
                spec = catalog.secret(report.secret)
            except UnknownSecret as exc:
                raise NotInCatalog("secret", report.secret, exc.suggestions) from None
            if name not in spec.consumers:
                close = difflib.get_close_matches(name, sorted(spec.consumers), n=3, cutoff=0.5)
                raise NotInCatalog("consumer", name, close, where=f" for secret '{spec.name}'")
            candidates = [spec.name]
        else:
            candidates = sorted(s for s, spec in catalog.secrets.items() if name in spec.consumers)
            if not candidates:
                every = sorted({c for spec in catalog.secrets.values() for c in spec.consumers})
                close = difflib.get_close_matches(name, every, n=3, cutoff=0.5)
                raise NotInCatalog("consumer", name, close)
            if len(candidates) > 1 and report.lane:
                in_lane = [
                    s for s in candidates if catalog.secrets[s].consumers[name].lane == report.lane
                ]
                candidates = in_lane or candidates
            if len(candidates) > 1:
                raise AmbiguousConsumer(name, candidates)
        secret = candidates[0]
        c = catalog.secrets[secret].consumers[name]
        return Target(secret=secret, consumer=name, lane=c.lane, owner=c.owner, reload=c.reload)

    # --- intake --------------------------------------------------------------------------

    def resolve_from_source(self, report: AlertReport, *, actor: str) -> list[Alert]:
        """A sender says the failure it reported is over (Alertmanager's ``resolved``): the
        unresolved alerts of the report's consumer opened from the same ``source`` (which
        names the Alertmanager fingerprint) are resolved by ``actor``, and their messages, the
        incident one and copies in a rotation thread, say so. Nothing matches (a consumer not
        in the catalog, an alert already handled, or opened by another source): nothing
        changes. Returns the alerts resolved now."""
        try:
            target = self.resolve(report)
        except (NotInCatalog, AmbiguousConsumer):
            return []
        with self.rotations.uow_factory() as uow:
            candidates = [
                a for a in uow.alerts.for_secret(target.secret, unresolved_only=True)
                if a.consumer == target.consumer and a.source == report.source
                and a.id is not None
            ]
        done: list[Alert] = []
        for alert in candidates:
            assert alert.id is not None
            try:
                outcome = self._set_status(
                    alert.id, AlertStatus.RESOLVED, actor, None,
                    reason=f"resolved in {actor}",
                )
            except RotabotError as exc:  # handled by someone meanwhile
                if isinstance(exc, StoreUnavailable):
                    raise
                continue
            if outcome.changed:
                done.append(outcome.alert)
                self.refresh(alert.id)
        return done

    @staticmethod
    def _open(alert: Alert | None, target: Target) -> bool:
        return (
            alert is not None
            and alert.secret == target.secret
            and alert.status is not AlertStatus.RESOLVED
        )

    def ingest_many(self, reports: Sequence[AlertReport]) -> list[IngestResult]:
        """Every report is checked against the catalog before any is stored; all are stored
        in one transaction, and their Slack posts and updates made before this returns."""
        unit = IntakeUnit(tuple(Intake(r, self.resolve(r)) for r in reports))
        (outcome,), follow_ups = self.commit_batch([unit])
        self.follow_up(follow_ups)
        return list(outcome.results)

    def ingest(
        self, report: AlertReport, *, verdict: Classification | None = None
    ) -> IngestResult:
        """``verdict``: a caller that classified the failure itself (a scheduled health
        check, from the exception it saw) passes it; otherwise the report is classified.
        Stored, then posted or updated in Slack, before this returns."""
        unit = IntakeUnit((Intake(report, self.resolve(report), verdict),))
        (outcome,), follow_ups = self.commit_batch([unit])
        self.follow_up(follow_ups)
        return outcome.results[0]

    # --- group commit ----------------------------------------------------------------------

    def commit_batch(
        self, units: Sequence[IntakeUnit]
    ) -> tuple[list[UnitOutcome], FollowUps]:
        """Store every unit of a batch in ONE transaction: their de-duplication keys, the
        counts they add (repeats of one consumer and class coalesce into one alert and one
        UPDATE), new alerts with their audit rows, and the rotations they send back to
        observing. Returns one outcome per unit, once committed, and what is left to do in
        Slack (``follow_up``, off the intake path). Raises when nothing was stored (a
        database error); a concurrent change of a rotation makes it retry the whole batch."""
        with self._intake_lock:  # one writer per process: coalescing needs no other lock
            for attempt in range(_BATCH_RETRIES):
                try:
                    return self._commit_once(units)
                except ChangedMeanwhile:
                    if attempt == _BATCH_RETRIES - 1:
                        raise
        raise AssertionError("unreachable: the loop returns or raises")

    def _commit_once(
        self, units: Sequence[IntakeUnit]
    ) -> tuple[list[UnitOutcome], FollowUps]:
        now = self.rotations.clock.now()
        states: list[KeyState] = []
        rotations: dict[str, Rotation | None] = {}
        touched: dict[int, tuple[Rotation, set[tuple[str, StepState]], int]] = {}
        groups: dict[tuple[str, str, str], _Group] = {}
        placed: list[list[tuple[_Group, int]]] = []  # per unit: (group, nth report of it)
        follow = FollowUps()
        with self.rotations.uow_factory() as uow:
            keys = [u.key for u in units if u.key is not None]
            taken = uow.alerts.take_deliveries(keys, now, self.delivery_ttl) if keys else {}
            seen_keys: set[str] = set()
            for unit in units:
                if unit.key is None:
                    state = KeyState.TAKEN
                elif unit.key in seen_keys:
                    state = KeyState.DUPLICATE  # the same id twice in one batch counts once
                else:
                    seen_keys.add(unit.key)
                    state = taken[unit.key]
                states.append(state)
            # Classified first, so one query finds the open alert of every consumer and class.
            verdicts = [
                [item.verdict or classify(status_code=item.report.status_code,
                                          error=item.report.error, message=item.report.message)
                 for item in unit.reports] if state is KeyState.TAKEN else []
                for unit, state in zip(units, states, strict=True)
            ]
            pairs = [(item.target.consumer, v.failure_class.value)
                     for unit, vs in zip(units, verdicts, strict=True)
                     for item, v in zip(unit.reports, vs, strict=False)]
            uow.alerts.lock_keys(pairs)  # replicas coalesce one failure into one alert
            latest = uow.alerts.latest_for_many(pairs, now - self.window)
            for unit, vs in zip(units, verdicts, strict=True):
                spots: list[tuple[_Group, int]] = []
                placed.append(spots)
                for item, verdict in zip(unit.reports, vs, strict=False):
                    secret = item.target.secret
                    if secret not in rotations:
                        rotation = uow.rotations.active_for_secret(secret)
                        rotations[secret] = rotation
                        if rotation is not None and rotation.id is not None:
                            touched[rotation.id] = (
                                rotation,
                                {(c.name, s) for c, s in rotation.pending_steps()},
                                rotation.revision,
                            )
                    spots.append(self._place(
                        uow, item, verdict, latest, rotations[secret], groups, now))
            counted = [g for g in groups.values() if g.added]
            now_stored = uow.alerts.add_counts(
                {g.alert.id: g.added for g in counted if g.alert.id is not None}, now)
            for group in counted:
                assert group.alert.id is not None
                group.alert = now_stored[group.alert.id]
            if self.post_claims is not None and self.messenger is not None:
                # Owed with the alerts, in this transaction: a crash cannot lose a post.
                uow.alerts.owe_posts(
                    [g.alert.id for g in groups.values() if g.new and g.alert.id is not None],
                    now)
            events = {rid: list(r.events) for rid, (r, _, _) in touched.items()}
            uow.commit()
        for rid, (rotation, before, revision) in touched.items():
            follow.announcements.append((rotation, before, revision, events[rid]))
        outcomes: list[UnitOutcome] = []
        last_finished: dict[str, Rotation | None] = {}
        for state, spots in zip(states, placed, strict=True):
            results = tuple(
                IngestResult(
                    replace(g.alert, count=g.alert.count - (g.reports - 1 - nth)),
                    new=g.new and nth == 0,
                    context=self._group_context(g, last_finished),
                )
                for g, nth in spots
            )
            outcomes.append(UnitOutcome(state, results))
        for group in groups.values():
            alert_id = group.alert.id
            assert alert_id is not None
            if group.new:
                follow.posts.append(alert_id)
                self._log_new(group.alert)
            elif group.added:
                follow.updates.add(alert_id)
                rotation = group.rotation
                if rotation is not None and rotation.id is not None and not group.reopened:
                    follow.rotations.add(rotation.id)
        return outcomes, follow

    def _place(
        self,
        uow: UnitOfWork,
        item: Intake,
        verdict: Classification,
        stored: dict[tuple[str, str], Alert],
        rotation: Rotation | None,
        groups: dict[tuple[str, str, str], _Group],
        now: datetime,
    ) -> tuple[_Group, int]:
        """Count one report into the batch: into the alert its consumer and class already
        have open (in this batch, or ``stored``: the latest of each consumer and class in the
        window), else into a new one, stored at once so its id names it in the rotation's
        audit note. Returns the group and the report's rank."""
        report, target = item.report, item.target
        fclass = verdict.failure_class.value
        key = (target.secret, target.consumer, fclass)
        group = groups.get(key)
        if group is not None and self._open(group.alert, target):
            group.reports += 1
            group.added += 1
            return group, group.reports - 1
        latest = stored.get((target.consumer, fclass))
        if not self._open(latest, target) and report.source and "#" in report.source:
            # Alertmanager repeats a firing alert every repeat_interval (4h by default), past
            # the coalescing window: the same fingerprint, still open, is the same failure.
            latest = next((
                a for a in uow.alerts.for_secret(target.secret, unresolved_only=True)
                if a.consumer == target.consumer and a.source == report.source[:100]
                and a.failure_class == fclass
            ), None)
        if latest is not None and self._open(latest, target):
            assert latest.id is not None
            group = _Group(latest, new=False, rotation=rotation, reports=1, added=1)
            if rotation is not None and rotation.phase is Phase.REVOCABLE:
                # New evidence after the gate opened: back to observing, in this transaction.
                rotation.reopen_observation(reason=f"alert A-{latest.id} again", now=now)
                group.reopened = True
            groups[key] = group
            return group, 0
        began = now
        if report.occurred_at is not None and now - MAX_BACKDATE <= report.occurred_at <= now:
            began = report.occurred_at
        alert = uow.alerts.add(Alert(
            consumer=target.consumer,
            secret=target.secret,
            lane=target.lane,
            failure_class=fclass,
            reason=verdict.reason,
            first_seen=began,
            last_seen=now,
            source=(report.source or "http")[:100],
            rotation_id=rotation.id if rotation is not None else None,
            phase_at_alert=rotation.phase.value if rotation is not None else None,
            began_during_rotation=rotation is not None and began >= rotation.created_at,
        ))
        if rotation is not None:
            rotation.record_note(
                actor="rotabot",
                now=now,
                action="alert.received",
                reason=alert.failure_class,
                detail={"alert": alert.ref, "consumer": alert.consumer, "lane": alert.lane},
            )
            rotation.reopen_observation(reason=f"alert {alert.ref} on {alert.consumer}", now=now)
        else:
            uow.audit.append(AuditEvent(
                at=now,
                actor="rotabot",
                action="alert.received",
                secret=alert.secret,
                consumer=alert.consumer,
                reason=alert.failure_class,
                detail={"alert": alert.ref, "lane": alert.lane},
            ))
        group = _Group(alert, new=True, rotation=rotation, reports=1, added=0)
        groups[key] = group
        return group, 0

    def _group_context(
        self, group: _Group, last_finished: dict[str, Rotation | None]
    ) -> AlertContext:
        # Once per alert per batch, and the secret's history read once per batch.
        if group.context is None:
            rotation = group.rotation
            same = rotation if rotation is not None and rotation.id == group.alert.rotation_id \
                else None
            group.context = self.context_for(group.alert, same, last_finished=last_finished)
        return group.context

    @staticmethod
    def _log_new(alert: Alert) -> None:
        log.warning(
            "alert %s: %s (%s) %s",
            alert.ref,
            alert.consumer,
            alert.lane,
            alert.failure_class,
            extra={
                "alert_id": alert.id,
                "consumer": alert.consumer,
                "secret": alert.secret,
                "lane": alert.lane,
                "rotation_id": alert.rotation_id,
            },
        )

    # --- after a batch committed: Slack, off the intake path -------------------------------

    def follow_up(self, work: FollowUps) -> None:
        """Do what a committed batch left for Slack, now, in this thread: tell rotation
        threads, post new alerts (claimed, so once across replicas), update repeated ones
        (paced) and re-render rotation messages that show their counts."""
        for rotation, before, revision, events in work.announcements:
            try:
                self.rotations.announce(rotation, before, revision, events)
            except Exception as exc:  # the change is committed; Slack trouble is logged
                log.error("telling %s about an alert failed: %s", rotation.ref,
                          type(exc).__name__, extra={"rotation_id": rotation.id})
        for alert_id in work.posts:
            self._post_stored(alert_id, thread=True)
        for alert_id in sorted(work.updates):
            self._update_soon(alert_id)
        if self.on_rotation_alert is not None:
            for rotation_id in sorted(work.rotations):
                try:
                    self.on_rotation_alert(rotation_id)
                except Exception as exc:
                    log.error("refreshing R-%s after an alert failed: %s", rotation_id,
                              type(exc).__name__, extra={"rotation_id": rotation_id})

    def defer(self, work: FollowUps) -> None:
        """``follow_up`` on this service's Slack thread: a batch's requests are answered
        without waiting for Slack. Work queued meanwhile is merged (one update per alert)."""
        if self.messenger is None and self.on_rotation_alert is None \
                and not work.announcements:
            return
        with self._follow_guard:
            self._pending.merge(work)
            self._follow_busy = True
            if self._follow_thread is None or not self._follow_thread.is_alive():
                self._follow_thread = threading.Thread(
                    target=self._follow_loop, name="rotabot-alert-slack", daemon=True)
                self._follow_thread.start()
            self._follow_guard.notify()

    def _follow_loop(self) -> None:
        while True:
            with self._follow_guard:
                while self._pending.empty():
                    self._follow_busy = False
                    self._follow_guard.notify_all()
                    self._follow_guard.wait()
                work, self._pending = self._pending, FollowUps()
            try:
                self.follow_up(work)
            except Exception:  # the thread must live on; what failed is in the log
                log.exception("alert Slack follow-up failed")

    def catch_up(self) -> int:
        """Post the new alerts whose post is owed: committed by a process that died before
        posting (this one before a restart, or another replica), or whose post failed.
        Claims skip what is being posted; a dead holder's claim is taken over after its
        lease. Returns how many were posted."""
        if self.messenger is None or self.post_claims is None:
            return 0
        return sum(self._post_stored(alert_id, thread=True)
                   for alert_id in self.post_claims.owed())

    # --- Slack messages ------------------------------------------------------------------

    def report(
        self,
        rotation_id: int,
        consumer: str,
        *,
        actor: str,
        description: str,
        action_id: str | None = None,
    ) -> Alert:
        """An owner's problem report: an alert tagged with the rotation (which tells the thread,
        RotationService.report_problem), posted to the incident channel with its buttons."""
        alert = self.rotations.report_problem(
            rotation_id, consumer, actor=actor, description=description, action_id=action_id)
        if alert.message_ts is None:  # a repeat of a report already posted posts nothing
            rotation = self.rotations.get(rotation_id)
            self._post_new(alert, self.context_for(alert, rotation), rotation, thread=False)
        return alert

    def rotation_ended(self, rotation: Rotation, receipts: Sequence[Receipt]) -> None:
        """A rolled-back or cancelled rotation resolves its open alerts (the previous
        credential is current again): their Roll back buttons no longer apply."""
        ended = [r for r in receipts
                 if r.kind in (ReceiptKind.ROLLED_BACK, ReceiptKind.CANCELLED)]
        if not ended or rotation.id is None:
            return
        actor, now = ended[0].actor, self.rotations.clock.now()
        resolved: list[int] = []
        with self.rotations.uow_factory() as uow:
            for alert in uow.alerts.for_secret(rotation.secret, unresolved_only=True,
                                               since=rotation.created_at):
                if alert.rotation_id != rotation.id or alert.id is None:
                    continue
                alert.status, alert.resolved_by = AlertStatus.RESOLVED, actor
                uow.alerts.save(alert)
                self._append_audit(uow, alert, actor, "alert.resolved", now=now,
                                   reason=f"{rotation.ref} {ended[0].kind.value}")
                resolved.append(alert.id)
            uow.commit()
        for alert_id in resolved:
            self.refresh(alert_id)

    def _post_stored(self, alert_id: int, *, thread: bool) -> bool:
        """Post a stored alert as it is now (its count so far), unless it was posted."""
        try:
            alert, rotation = self._load(alert_id)
            stale = alert.last_seen < self.rotations.clock.now() - MAX_BACKDATE
            if alert.message_ts is not None or not alert.unresolved or stale:
                # Posted, handled before its post, or owed for a day (Slack refused it all
                # along, e.g. the channel is gone): nothing is owed any more.
                if self.post_claims is not None:
                    self.post_claims.done(alert_id)
                if stale and alert.message_ts is None:
                    log.error("giving up posting alert %s after a day of failures",
                              alert.ref, extra=_alert_context(alert))
                return False
            return self._post_new(alert, self.context_for(alert, rotation), rotation,
                                  thread=thread)
        except Exception as exc:  # a follow-up thread has no caller to tell
            log.error("posting alert A-%s failed: %s", alert_id, type(exc).__name__,
                      extra={"alert_id": alert_id})
            return False

    def _post_new(
        self, alert: Alert, context: AlertContext, rotation: Rotation | None, thread: bool = True
    ) -> bool:
        if self.messenger is None or alert.id is None:
            return False
        if self.post_claims is not None and not self.post_claims.claim(alert.id):
            return False  # posted already, or being posted by another thread or replica
        channel = self.rotations.catalog.settings_for(alert.secret).incident_channel
        posted = False
        try:
            where, ts = self.messenger.post(
                channel, alert, context.text, prompt_rotation(alert, context)
            )
            posted = True
            alert.channel, alert.message_ts = where, ts
            self._remember_message(alert.id, where, ts)
            self._pacer.mark(alert.id)
        except Exception as exc:  # Slack being down must not lose the stored alert
            log.error(
                "posting alert %s to the incident channel failed: %s",
                alert.ref,
                type(exc).__name__,
                extra=_alert_context(alert),
            )
        if self.post_claims is not None:
            try:
                # Released when the post failed: the catch-up loop tries again.
                (self.post_claims.done if posted else self.post_claims.release)(alert.id)
            except Exception as exc:  # the claim lapses after its lease
                log.warning("settling the post claim of %s failed: %s", alert.ref,
                            type(exc).__name__, extra=_alert_context(alert))
        if not posted:
            return False
        if thread and rotation is not None and rotation.channel and rotation.message_ts:
            try:
                where, ts = self.messenger.post(
                    rotation.channel,
                    alert,
                    context.text,
                    alert.rotation_id,
                    thread_ts=rotation.message_ts,
                )
                self._extra_messages.setdefault(alert.id, set()).add((where, ts))
                posted = True
            except Exception as exc:
                log.error(
                    "posting alert %s into the %s thread failed: %s",
                    alert.ref,
                    rotation.ref,
                    type(exc).__name__,
                    extra=_alert_context(alert),
                )
        return posted

    def _remember_message(self, alert_id: int, channel: str, ts: str) -> None:
        # Read the fresh row: a click may have changed its status since it was stored.
        with self.rotations.uow_factory() as uow:
            fresh = uow.alerts.get(alert_id)
            fresh.channel, fresh.message_ts = channel, ts
            uow.alerts.save(fresh)
            uow.commit()

    def _update_soon(self, alert_id: int) -> None:
        """Update now, or once the interval since the last update has passed (one pending)."""
        if self.messenger is None:
            return
        try:
            self._pacer.soon(alert_id)
        except Exception as exc:  # an immediate update raises here; the next one retries
            log.error("updating alert A-%s failed: %s", alert_id, type(exc).__name__,
                      extra={"alert_id": alert_id})

    def refresh(self, alert_id: int) -> None:
        """Re-render every known message of the alert from the stored state, now."""
        if self.messenger is None:
            return
        self._pacer.mark(alert_id)
        self._render_messages(alert_id)

    def _render_messages(self, alert_id: int) -> None:
        assert self.messenger is not None
        try:
            alert, rotation = self._load(alert_id)
            context = self.context_for(alert, rotation)
            messages = set(self._extra_messages.get(alert_id, set()))
            if alert.channel and alert.message_ts:
                messages.add((alert.channel, alert.message_ts))
            for channel, ts in sorted(messages):
                self.messenger.update(
                    channel, ts, alert, context.text, prompt_rotation(alert, context)
                )
        except Exception as exc:  # a timer thread has no caller to tell
            log.error(
                "updating alert A-%s failed: %s", alert_id, type(exc).__name__,
                extra={"alert_id": alert_id},
            )

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until no Slack follow-up or deferred update is pending or queued for Slack
        (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        self.flush_follow_ups(timeout)
        self._pacer.flush(max(0.0, deadline - time.monotonic()))
        if self.messenger is not None:
            self.messenger.flush()

    def flush_follow_ups(self, timeout: float = 10.0) -> None:
        """Wait until the Slack work of committed batches is done (posts, immediate updates);
        updates the pacer deferred may still be pending."""
        deadline = time.monotonic() + timeout
        with self._follow_guard:
            while self._follow_busy and time.monotonic() < deadline:
                self._follow_guard.wait(max(0.0, deadline - time.monotonic()))

    # --- context -------------------------------------------------------------------------

    def _load(self, alert_id: int) -> tuple[Alert, Rotation | None]:
        with self.rotations.uow_factory() as uow:
            alert = uow.alerts.get(alert_id)
            rotation = (
                uow.rotations.get(alert.rotation_id) if alert.rotation_id is not None else None
            )
        return alert, rotation

    def context_for(
        self,
        alert: Alert,
        rotation: Rotation | None = None,
        *,
        last_finished: dict[str, Rotation | None] | None = None,
    ) -> AlertContext:
        """``last_finished``: the secret's latest rotation by secret, filled as they are read
        (a batch describes many alerts of one secret with one read)."""
        if rotation is None and alert.rotation_id is not None:
            rotation = self.rotations.get(alert.rotation_id)
        last = None
        if rotation is None:
            if last_finished is not None and alert.secret in last_finished:
                last = last_finished[alert.secret]
            else:
                history = self.rotations.history(alert.secret, 1)
                last = history[0] if history else None
                if last_finished is not None:
                    last_finished[alert.secret] = last
        spec = self.rotations.catalog.secrets.get(alert.secret)
        consumer = spec.consumers.get(alert.consumer) if spec is not None else None
        owner: str | None = consumer.owner if consumer is not None else None
        reload: str | None = consumer.reload if consumer is not None else None
        if rotation is not None and alert.consumer in rotation.consumers:
            progress = rotation.consumers[alert.consumer]
            owner, reload = owner or progress.owner, reload or progress.reload
        return describe(
            consumer=alert.consumer,
            lane=alert.lane,
            failure_class=alert.failure_class,
            secret=alert.secret,
            began=alert.first_seen,
            rotation=rotation,
            last_finished=last,
            owner=owner,
            reload=reload,
        )

    # --- people acting on an alert -------------------------------------------------------

    # Who may act on an alert's Roll back (or, after revocation, Emergency re-rotation) is
    # decided from the stored alert, never from the button or the modal's private_metadata:
    # both are whatever the sender of a signed request puts in them.

    def authorize_alert_rollback(
        self, alert_id: int, rotation_id: int, actor: str
    ) -> tuple[Rotation, str | None]:
        """May ``actor`` roll ``rotation_id`` back on the strength of alert ``alert_id``?

        The alert must exist, be unresolved and be the one whose buttons act on that rotation
        (bot.domain.alert_context.prompt_rotation); then admins of the secret and the owner of
        the alert's consumer may roll back. A rotation already revoked has nothing to roll back
        to, so only admins may go on (to an emergency re-rotation). Returns the rotation and
        the consumer the rollback is about: the stored alert's, or None when that consumer is
        not in the rotation (the catalog changed since it started; admins only then). A refusal
        is audited on the rotation before NotAuthorized is raised. Listeners call this before
        opening the confirmation and the modal's submission calls it again before acting."""
        rotation = self.rotations.get(rotation_id)
        alert = self._offering_alert(alert_id, rotation, actor, "rollback", "its rollback")
        consumer = alert.consumer if alert.consumer in rotation.consumers else None
        if rotation.phase is Phase.REVOKED:
            require_admin(self.rotations, rotation, actor)
        else:
            self.rotations.authorize_rollback(rotation, consumer, actor)
        return rotation, consumer

    def authorize_alert_emergency(
        self, alert_id: int, rotation_id: int, actor: str
    ) -> tuple[Rotation, str | None]:
        """May ``actor`` start an emergency re-rotation of ``rotation_id``'s secret from alert
        ``alert_id``? The same stored-alert checks as authorize_alert_rollback, then admins of
        the secret only (as any start). Audited refusals; returns as authorize_alert_rollback."""
        rotation = self.rotations.get(rotation_id)
        alert = self._offering_alert(
            alert_id, rotation, actor, ACTION_RE_ROTATION,
            f"an emergency re-rotation of {rotation.secret}",
        )
        require_admin(self.rotations, rotation, actor)
        consumer = alert.consumer if alert.consumer in rotation.consumers else None
        return rotation, consumer

    def _offering_alert(
        self, alert_id: int, rotation: Rotation, actor: str, attempted: str, offer: str
    ) -> Alert:
        """The stored alert whose buttons offer ``offer`` on ``rotation``; otherwise the
        refusal is audited on the rotation and NotAuthorized says what to do instead."""
        alert = self._find(alert_id)
        problem: str | None = None
        if alert is None:
            problem = f"there is no alert A-{alert_id}"
        elif not alert.unresolved:
            by = f" (by {mention(alert.resolved_by)})" if alert.resolved_by else ""
            problem = f"{alert.ref} is {alert.status.value}{by}"
        elif alert.secret != rotation.secret or self._acts_on(alert) != rotation.id:
            problem = f"{alert.ref} is not about {rotation.ref}"
        if problem is None:
            assert alert is not None
            return alert
        why = (
            f"only an open alert about {rotation.ref} can offer {offer}, and {problem}. "
            f"`/rotate status {rotation.ref}` shows where it stands; admins of "
            f"{rotation.secret} can use `/rotate rollback {rotation.ref}`"
        )
        self.rotations._audit_refusal(
            rotation.id, actor, attempted, why, alert.consumer if alert is not None else None
        )
        raise NotAuthorized(why)

    def _find(self, alert_id: int) -> Alert | None:
        if alert_id <= 0:  # never a stored id: 0 is what a button without an alert carries
            return None
        try:
            with self.rotations.uow_factory() as uow:
                return uow.alerts.get(alert_id)
        except StoreUnavailable:
            raise
        except RotabotError:  # the repository's "no alert A-N"
            return None

    def _acts_on(self, alert: Alert) -> int | None:
        """The rotation this alert's buttons act on, as they are rendered from stored state."""
        if alert.rotation_id is not None:
            return alert.rotation_id
        return prompt_rotation(alert, self.context_for(alert))

    def acknowledge(
        self, alert_id: int, *, actor: str, message: tuple[str, str] | None = None
    ) -> AlertOutcome:
        """Someone is looking. Anyone may say so; the alert still blocks revocation."""
        return self._set_status(alert_id, AlertStatus.ACKNOWLEDGED, actor, message)

    def authorize_not_related(self, alert_id: int, actor: str) -> Alert:
        """Admins of the secret and the consumer's owner only; a refusal is audited."""
        alert, rotation = self._load(alert_id)
        if not self.may_dismiss(actor, alert, rotation):
            why = (
                f"only admins of {alert.secret} or the owner of {alert.consumer} may mark "
                f"{alert.ref} as not related"
            )
            self._audit(alert, actor, "refused", why=why, attempted="alert.not-related")
            raise NotAuthorized(why)
        return alert

    def not_related(
        self,
        alert_id: int,
        *,
        actor: str,
        reason: str | None = None,
        message: tuple[str, str] | None = None,
    ) -> AlertOutcome:
        """The failure is not caused by the rotation: it stops blocking revocation, with the
        reason told in the rotation's thread. Admins of the secret and the consumer's owner."""
        self.authorize_not_related(alert_id, actor)
        reason = person_text(reason)
        return self._set_status(alert_id, AlertStatus.NOT_RELATED, actor, message, reason)

    def may_dismiss(self, actor: str, alert: Alert, rotation: Rotation | None) -> bool:
        svc = self.rotations
        if alert.secret in svc.catalog.secrets and svc.is_admin(actor, alert.secret):
            return True
        context = self.context_for(alert, rotation)
        return context.owner is not None and svc.owns(actor, context.owner)

    def _set_status(
        self,
        alert_id: int,
        target: AlertStatus,
        actor: str,
        message: tuple[str, str] | None,
        reason: str | None = None,
    ) -> AlertOutcome:
        alert, _ = self._load(alert_id)
        if message is not None and message != (alert.channel, alert.message_ts):
            self._extra_messages.setdefault(alert_id, set()).add(message)
        if alert.status is target:
            return AlertOutcome(alert, changed=False)
        if alert.status is AlertStatus.RESOLVED or (
            alert.status is AlertStatus.NOT_RELATED and target is AlertStatus.ACKNOWLEDGED
        ):
            by = f" by {mention(alert.resolved_by)}" if alert.resolved_by else ""
            raise RotabotError(f"{alert.ref} is already {alert.status.value}{by}")
        now = self.rotations.clock.now()
        result: list[Alert] = []

        def change(uow: UnitOfWork) -> None:
            fresh = uow.alerts.get(alert_id)
            fresh.status, fresh.resolved_by = target, actor
            uow.alerts.save(fresh)
            result[:] = [fresh]

        action = f"alert.{target.value}"
        if alert.rotation_id is not None:

            def apply(r: Rotation, uow: UnitOfWork) -> None:
                change(uow)
                r.record_note(
                    actor=actor,
                    now=now,
                    action=action,
                    reason=reason,
                    detail={"alert": alert.ref, "consumer": alert.consumer},
                )

            self.rotations._mutate(alert.rotation_id, apply)
        else:
            with self.rotations.uow_factory() as uow:
                change(uow)
                self._append_audit(uow, alert, actor, action, now=now, reason=reason)
                uow.commit()
        log.info(
            "%s %s by %s",
            alert.ref,
            target.value,
            actor,
            extra=_alert_context(alert),
        )
        # The caller (the button listener) re-renders the messages at once with refresh().
        return AlertOutcome(result[0], changed=True)

    def _audit(
        self, alert: Alert, actor: str, action: str, *, why: str, attempted: str
    ) -> None:
        now = self.rotations.clock.now()
        if alert.rotation_id is not None:
            self.rotations._audit_refusal(
                alert.rotation_id, actor, attempted, why, alert.consumer
            )
            return
        with self.rotations.uow_factory() as uow:
            self._append_audit(uow, alert, actor, action, now=now, reason=why,
                               detail={"attempted": attempted})
            uow.commit()

    def _append_audit(
        self,
        uow: UnitOfWork,
        alert: Alert,
        actor: str,
        action: str,
        *,
        now: datetime,
        reason: str | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        uow.audit.append(
            AuditEvent(
                at=now,
                actor=actor,
                action=action,
                secret=alert.secret,
                consumer=alert.consumer,
                reason=reason,
                detail={"alert": alert.ref, **(detail or {})},
            )
        )
