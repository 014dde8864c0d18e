"""Failure alerts: classify a report, tag it with its rotation, coalesce repeats, tell people.

One alert per consumer and failure class within a window (default 10 minutes): repeats raise
its count and last-seen time and update the message already posted, at most about once a
second per alert, so a burst of reports never becomes a burst of Slack messages. A new alert is
posted to the secret's incident channel and, when a rotation of the secret is running, into the
rotation's thread. An alert that arrives while the rotation is revocable sends it back to
observing: the revocation gate then names the alert until someone resolves it.

Plain Python: Slack is behind the AlertMessenger Protocol (handlers/alerts_http.py implements
it). Coalescing is guarded by an in-process lock per consumer and class; with several replicas
two replicas may each open an alert for the same burst (both are counted, neither is lost).
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.catalog import UnknownSecret
from bot.domain.alert import Alert, AlertStatus
from bot.domain.alert_context import (
    AlertContext,
    describe,
    prompt_rotation,
)
from bot.domain.alert_intake import AlertReport
from bot.domain.audit import AuditEvent
from bot.domain.errors import NotAuthorized, RotabotError, StoreUnavailable
from bot.domain.failures import Classification, classify
from bot.domain.lifecycle import Phase
from bot.domain.mentions import mention
from bot.domain.pacing import UpdatePacer
from bot.domain.receipts import Receipt, ReceiptKind
from bot.domain.rotation import Rotation
from bot.services.emergency import ACTION_RE_ROTATION, require_admin
from bot.services.ports import UnitOfWork
from bot.services.rotations import RotationService, person_text

log = logging.getLogger("rotabot.alerts")

DEFAULT_WINDOW = timedelta(minutes=10)
# A report's occurred_at further back than this is not believed; receipt time is used.
MAX_BACKDATE = timedelta(days=1)

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
    alert: Alert
    new: bool
    context: AlertContext
    posted: bool = False


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
    _key_locks: dict[tuple[str, str, str], threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
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

    def ingest_many(
        self, reports: Sequence[AlertReport], stored: Callable[[int], None] | None = None
    ) -> list[IngestResult]:
        """Every report is checked against the catalog before any is stored. ``stored(i)``,
        when given, is called once report ``i`` is stored (a caller settles its de-duplication
        key per report, so a failure half-way leaves the stored ones taken)."""
        targets = [self.resolve(r) for r in reports]
        results: list[IngestResult] = []
        for i, (report, target) in enumerate(zip(reports, targets, strict=True)):
            results.append(self._ingest(report, target))
            if stored is not None:
                stored(i)
        return results

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

    def ingest(
        self, report: AlertReport, *, verdict: Classification | None = None
    ) -> IngestResult:
        """``verdict``: a caller that classified the failure itself (a scheduled health
        check, from the exception it saw) passes it; otherwise the report is classified."""
        return self._ingest(report, self.resolve(report), verdict)

    def _ingest(
        self, report: AlertReport, target: Target, verdict: Classification | None = None
    ) -> IngestResult:
        if verdict is None:
            verdict = classify(
                status_code=report.status_code, error=report.error, message=report.message
            )
        fclass = verdict.failure_class.value
        with self._key_lock((target.secret, target.consumer, fclass)):
            now = self.rotations.clock.now()
            began = now
            if report.occurred_at is not None and now - MAX_BACKDATE <= report.occurred_at <= now:
                began = report.occurred_at
            with self.rotations.uow_factory() as uow:
                rotation = uow.rotations.active_for_secret(target.secret)
                latest = uow.alerts.latest_for(target.consumer, fclass, now - self.window)
                if not self._open(latest, target) and report.source and "#" in report.source:
                    # Alertmanager repeats a firing alert every repeat_interval (4h by
                    # default), past the coalescing window: the same fingerprint, still open,
                    # is the same failure.
                    latest = next((
                        a for a in uow.alerts.for_secret(target.secret, unresolved_only=True)
                        if a.consumer == target.consumer and a.source == report.source[:100]
                        and a.failure_class == fclass
                    ), None)
            if latest is not None and self._open(latest, target):
                alert = self._repeat(latest, now, rotation)
                self._update_soon(alert)
                # The rotation was just read: reloading it (every consumer) for each repeat
                # was most of a repeat's cost in an alert burst.
                same = None
                if rotation is not None and rotation.id == alert.rotation_id:
                    same = rotation
                return IngestResult(alert, new=False, context=self.context_for(alert, same))
            alert = Alert(
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
            )
            self._store_new(alert, rotation, now)
            log.warning(
                "alert %s: %s (%s) %s",
                alert.ref,
                alert.consumer,
                alert.lane,
                fclass,
                extra={
                    "alert_id": alert.id,
                    "consumer": alert.consumer,
                    "secret": alert.secret,
                    "lane": alert.lane,
                    "rotation_id": alert.rotation_id,
                },
            )
            context = self.context_for(alert, rotation)
            posted = self._post_new(alert, context, rotation)
            return IngestResult(alert, new=True, context=context, posted=posted)

    def _store_new(self, alert: Alert, rotation: Rotation | None, now: datetime) -> None:
        if rotation is not None and rotation.id is not None:

            def apply(r: Rotation, uow: UnitOfWork) -> None:
                alert.id = None  # a retried transaction inserts afresh
                uow.alerts.add(alert)
                r.record_note(
                    actor="rotabot",
                    now=now,
                    action="alert.received",
                    reason=alert.failure_class,
                    detail={"alert": alert.ref, "consumer": alert.consumer, "lane": alert.lane},
                )
                r.reopen_observation(reason=f"alert {alert.ref} on {alert.consumer}", now=now)

            self.rotations._mutate(rotation.id, apply)
            return
        with self.rotations.uow_factory() as uow:
            uow.alerts.add(alert)
            uow.audit.append(
                AuditEvent(
                    at=now,
                    actor="rotabot",
                    action="alert.received",
                    secret=alert.secret,
                    consumer=alert.consumer,
                    reason=alert.failure_class,
                    detail={"alert": alert.ref, "lane": alert.lane},
                )
            )
            uow.commit()

    def _repeat(self, alert: Alert, now: datetime, rotation: Rotation | None) -> Alert:
        assert alert.id is not None
        alert_id = alert.id
        result: list[Alert] = []

        def bump(uow: UnitOfWork) -> None:
            fresh = uow.alerts.get(alert_id)  # the stored count, not the one read earlier
            fresh.count += 1
            fresh.last_seen = max(fresh.last_seen, now)
            uow.alerts.save(fresh)
            result[:] = [fresh]

        if rotation is not None and rotation.id is not None and rotation.phase is Phase.REVOCABLE:
            # New evidence after the gate opened: back to observing, in the same transaction.
            def apply(r: Rotation, uow: UnitOfWork) -> None:
                bump(uow)
                r.reopen_observation(reason=f"alert A-{alert_id} again", now=now)

            self.rotations._mutate(rotation.id, apply)
        else:
            with self.rotations.uow_factory() as uow:
                bump(uow)
                uow.commit()
            if rotation is not None and rotation.id is not None and self.on_rotation_alert:
                self.on_rotation_alert(rotation.id)
        return result[0]

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

    def _post_new(
        self, alert: Alert, context: AlertContext, rotation: Rotation | None, thread: bool = True
    ) -> bool:
        if self.messenger is None or alert.id is None:
            return False
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

    def _update_soon(self, alert: Alert) -> None:
        """Update now, or once the interval since the last update has passed (one pending)."""
        if self.messenger is None or alert.id is None:
            return
        self._pacer.soon(alert.id)

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
        """Wait until no deferred update is pending or queued for Slack (tests, shutdown)."""
        self._pacer.flush(timeout)
        if self.messenger is not None:
            self.messenger.flush()

    # --- context -------------------------------------------------------------------------

    def _load(self, alert_id: int) -> tuple[Alert, Rotation | None]:
        with self.rotations.uow_factory() as uow:
            alert = uow.alerts.get(alert_id)
            rotation = (
                uow.rotations.get(alert.rotation_id) if alert.rotation_id is not None else None
            )
        return alert, rotation

    def context_for(self, alert: Alert, rotation: Rotation | None = None) -> AlertContext:
        if rotation is None and alert.rotation_id is not None:
            rotation = self.rotations.get(alert.rotation_id)
        last = None
        if rotation is None:
            history = self.rotations.history(alert.secret, 1)
            last = history[0] if history else None
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

    # --- plumbing ------------------------------------------------------------------------

    def _key_lock(self, key: tuple[str, str, str]) -> threading.Lock:
        with self._guard:
            return self._key_locks.setdefault(key, threading.Lock())
