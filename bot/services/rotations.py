"""The rotation service: each user action as one short transaction over the domain.

Listeners and the CLI call these methods and render the result; they never touch storage,
stores or issuers themselves. Back-end calls (issuer, store) happen between transactions,
and every failure leaves the rotation in a named state (``failed`` with the phase it failed
from) that can be resumed, rolled back or cancelled.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from bot.catalog import (
    Catalog,
    ConsumerIdentity,
    ConsumerSpec,
    EffectiveSettings,
    SecretSpec,
    target_label,
)
from bot.catalog.readiness import is_slack_id, readiness_findings
from bot.catalog.shapes import redact_credentials
from bot.domain.alert import Alert, AlertStatus
from bot.domain.audit import AuditEvent
from bot.domain.break_glass import APPROVED, EXPIRED, REQUESTED, BreakGlassRequest, open_request
from bot.domain.clock import Clock
from bot.domain.credentials import (
    IssuerError,
    ReloadFailed,
    StoreConflict,
    StoreError,
    UsageEvidence,
    find_new_version,
)
from bot.domain.errors import (
    AlreadyActive,
    BusyElsewhere,
    ChangedMeanwhile,
    GroupBusy,
    NotAuthorized,
    RotabotError,
)
from bot.domain.freeze import FREEZE_OVERRIDE, Freeze, Frozen, freeze_at
from bot.domain.gate import GateResult, evaluate_gate
from bot.domain.lifecycle import PHASE_STATE, SWITCHED_PHASES, IllegalTransition, Phase, StepState
from bot.domain.log_context import rotation_context
from bot.domain.mentions import mention
from bot.domain.queued_switch import (
    QUEUE_CANCELLED,
    QUEUE_DROPPED,
    QUEUED,
    QueuedSwitch,
    queued_switch,
)
from bot.domain.receipts import Receipt, receipts_for
from bot.domain.reminders import shortened
from bot.domain.replay import ActionLog, once
from bot.domain.rotation import ConsumerPlan, ConsumerProgress, Rotation, step_rank
from bot.domain.secret_material import SecretMaterial
from bot.domain.usage import combined, map_usage, unmapped, unmapped_words
from bot.services.catalog_in_use import CatalogPart, CatalogSlot
from bot.services.distribution import (
    TargetWriteFailed,
    restore_targets,
    select,
    write_everywhere,
    write_lane,
    written_json,
)
from bot.services.ports import (
    PERSON_WRITES,
    BackendRegistry,
    IdentifiesKeys,
    Issuer,
    OwnerDirectory,
    ReportsReads,
    Store,
    TrimsAfterRevoke,
    UnitOfWork,
    UnitOfWorkFactory,
    WorkClaims,
    WorkLocks,
)

# The claim kinds under which one process prepares a rotation, or writes a lane's targets
# (storage/claims.py keeps them).
PREPARE = "prepare"
OPEN_LANE = "open-lane"
# The work lock kinds under which one process switches, revokes or rolls back
# (storage/work_locks.py).
SWITCH = "switch"
REVOKE = "revoke"
ROLLBACK = "rollback"

log = logging.getLogger("rotabot.service")

Turn = tuple[ConsumerProgress, StepState]
# (rotation, consumer, actor) -> an evidence note, or raises to refuse the step.
StepCheck = Callable[[Rotation, str, str], str | None]
# (rotation, consumer, target step, actor) -> the consumer's own evidence for a clicked step,
# or raises to refuse a click that ``require_evidence`` makes insufficient.
EvidenceCheck = Callable[[Rotation, str, StepState, str], str | None]

# A click that races another click on the same rotation reloads and tries again.
_RETRIES = 5
# What a hard cutover's gate says of the old credential's use, where others ask the platform.
CUTOVER_USAGE = "the old value stopped working at the cutover: nothing can use it any more"
# A person's words (a problem report, a reason) as kept in the audit trail and told in Slack.
REPORT_LIMIT = 500


def person_text(text: str | None) -> str | None:
    """What a person typed, on one line, shortened, with credential-shaped runs redacted: a
    key pasted into a reason must not reach Slack, the audit trail or a log. None if empty."""
    return redact_credentials(" ".join((text or "").split()))[:REPORT_LIMIT] or None


@dataclass(frozen=True)
class StepOutcome:
    rotation: Rotation
    changed: bool  # False: it was already done (double click or replay)
    consumer: str
    step: StepState


@dataclass(frozen=True)
class Plan:
    """What `/rotate start --dry-run` shows: nothing is changed to produce it."""

    secret: str
    lanes: tuple[str, ...]
    order: tuple[tuple[str, tuple[ConsumerPlan, ...]], ...]
    overlap: timedelta
    observe: timedelta
    issuer_kind: str
    store_kind: str
    store_path: str
    blockers: tuple[str, ...]
    warnings: tuple[str, ...]
    reload_notes: tuple[str, ...]
    # Lane -> where rotabot writes the new credential on that lane's turn (catalog labels).
    targets: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # False when the plan was made for someone who is not an admin of the secret: the store
    # and issuer were not asked, and their findings (which name environment variables, URLs
    # and paths) are not in ``blockers``.
    backend_checked: bool = True
    # A hard cutover: the window every owner validates in (None: an overlapping rotation).
    cutover_window: timedelta | None = None


@dataclass(frozen=True)
class MessageContext:
    """What the rotation message shows beyond the rotation: who acts next and what blocks it."""

    admins: tuple[str, ...] = ()
    # The manual issuer's instructions, while rotabot waits for a person's new credential.
    instructions: str | None = None
    # Unresolved alerts on the secret since the rotation began: each blocks revocation.
    problems: tuple[Alert, ...] = ()
    # Where a person writes the new credential for the manual issuer (vault-kv2 stages it
    # beside the secret, where consumers do not read it); None: the secret's own path.
    write_to: str | None = None
    # When the message is rendered: a cutover's time left is counted from it (Slack cannot
    # tick a countdown, so each re-render and the timer refresh it).
    now: datetime | None = None
    # A switch an admin queued for the end of a freeze, while the rotation waits for it.
    queued_switch: QueuedSwitch | None = None


RELOAD_REQUIREMENTS = {
    "hot": "picks up the new credential without a restart",
    "restart": "needs a restart after distribution",
    "staged": "rolls out in stages; validate after the last stage",
}


@dataclass(kw_only=True)  # keywords only: `catalog` and `backends` are descriptors
class RotationService(CatalogSlot):
    # One snapshot, swapped whole by a catalog reload (bot/services/catalog_in_use.py).
    catalog: CatalogPart[Catalog] = CatalogPart()  # noqa: RUF009 - a descriptor, not a value
    uow_factory: UnitOfWorkFactory
    backends: CatalogPart[BackendRegistry] = CatalogPart()  # noqa: RUF009 - a descriptor
    clock: Clock
    directory: OwnerDirectory | None = None
    # What each Slack action (trigger id, view id) created: the same action processed twice
    # (a repeat, another replica) creates nothing new in ``start`` and ``report_problem``.
    actions: ActionLog | None = None
    # Preparing a rotation (mint, write pending) runs in one process at a time: `start`, the
    # leader's timer and `resume` may all offer it, and two writers would make the store's
    # check-and-set pause the rotation. None: one process.
    claims: WorkClaims | None = None
    # A switch's promote, a revocation and a rollback run in one process at a time: the same
    # click reaching several replicas would otherwise race in the store (the loser's
    # check-and-set conflict would pause the rotation the winner just moved on; two
    # rollbacks would each restore "previous", the second putting the new credential back).
    # None: one process, one caller at a time.
    work_locks: WorkLocks | None = None
    # Called after each committed change with the consumers whose turn just began.
    on_change: list[Callable[[Rotation, list[Turn]], None]] = field(default_factory=list)
    # Called after each committed change with what the thread should be told about it.
    on_receipts: list[Callable[[Rotation, list[Receipt]], None]] = field(default_factory=list)
    # Run before a consumer is marked validated (bot/services/health.py): each returns an
    # evidence note for the step or raises to refuse it.
    step_checks: list[StepCheck] = field(default_factory=list)
    # Run after step_checks for a Distributed or Validated click whose turn it is
    # (bot/services/evidence.py).
    evidence_checks: list[EvidenceCheck] = field(default_factory=list)
    # The evidence the gate still lacks, in words (bot/services/evidence.py); None: no rule.
    evidence_missing: Callable[[Rotation], list[str]] | None = None
    _rollback_locks: dict[int, threading.Lock] = field(default_factory=dict, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # One writer per rotation in this process: concurrent clicks on one rotation otherwise
    # collide on the revision guard, reload and retry, and ran out of retries under load.
    _write_locks: dict[int, threading.RLock] = field(default_factory=dict, repr=False)
    _group_locks: dict[str, threading.Lock] = field(default_factory=dict, repr=False)

    # --- who may do what ---------------------------------------------------------------

    def is_admin(self, user: str, secret: str) -> bool:
        # `admins` lists users and user groups (S...); a group's members are admins too.
        return any(self.owns(user, admin) for admin in self.catalog.settings_for(secret).admins)

    def owns(self, user: str, owner: str) -> bool:
        if user == owner:
            return True
        if owner.startswith("S") and self.directory is not None:
            return user in self.directory.members(owner)
        return False

    # Each check refuses (audited) before any effect; listeners call them before opening a
    # modal, and the effectful methods call the same check again, so a widened rule can never
    # turn a check into the step itself.

    def authorize_step(self, rotation: Rotation, consumer: str, actor: str, action: str) -> None:
        """Only the consumer's owner (the user, or a member of the owner group) takes its steps."""
        owner = rotation.consumer(consumer).owner
        if not self.owns(actor, owner):
            why = f"this step is {mention(owner)}'s"
            self._audit_refusal(rotation.id, actor, action, why, consumer)
            raise NotAuthorized(why)

    def authorize_report(self, rotation: Rotation, consumer: str, actor: str) -> None:
        """The consumer's owner or an admin may report a problem with it, while the rotation
        runs (after it ended, the incident channel's alerts are the place)."""
        c = rotation.consumer(consumer)
        if rotation.terminal:
            raise RotabotError(
                f"{rotation.ref} has ended ({PHASE_STATE[rotation.phase]}): a problem with "
                f"{consumer} now is not this rotation's; nothing was reported"
            )
        if not (self.owns(actor, c.owner) or self.is_admin(actor, rotation.secret)):
            why = f"only {c.owner} (the owner of {consumer}) or an admin may report a problem"
            self._audit_refusal(rotation.id, actor, "report a problem", why, consumer)
            raise NotAuthorized(why)

    def authorize_rollback(self, rotation: Rotation, consumer: str | None, actor: str) -> None:
        """Admins, and the owner of the consumer an alert is about, may roll back."""
        allowed = self.is_admin(actor, rotation.secret) or (
            consumer is not None and self.owns(actor, rotation.consumer(consumer).owner)
        )
        if not allowed:
            why = f"only admins of {rotation.secret} or the affected consumer's owner may roll back"
            self._audit_refusal(rotation.id, actor, "rollback", why)
            raise NotAuthorized(why)

    def _require_admin(self, uow: UnitOfWork, rotation: Rotation, actor: str, action: str) -> None:
        if not self.is_admin(actor, rotation.secret):
            why = f"only admins of {rotation.secret} may {action} {rotation.ref}"
            self._audit_refusal(rotation.id, actor, action, why)
            raise NotAuthorized(why)

    def refuse(
        self, rotation_id: int, actor: str, action: str, why: str, consumer: str | None = None
    ) -> None:
        """Audit a refusal decided elsewhere (a click the consumer's evidence does not back)."""
        self._audit_refusal(rotation_id, actor, action, why, consumer)

    def _audit_refusal(
        self,
        rotation_id: int | None,
        actor: str,
        action: str,
        why: str,
        consumer: str | None = None,
    ) -> None:
        if rotation_id is None:
            return
        # A refusal racing an owner's click on the same rotation must still be audited.
        self._write(rotation_id, lambda r, uow: r.record_refusal(
            actor=actor, now=self.clock.now(), action=action, why=why, consumer=consumer))

    # --- planning and starting ---------------------------------------------------------

    def plan(
        self,
        secret: str,
        *,
        overlap: timedelta | None = None,
        observe: timedelta | None = None,
        viewer: str | None = None,
    ) -> Plan:
        """What a rotation of ``secret`` would do. For a ``viewer`` (the dry run) who is not an
        admin of the secret, the store and issuer are not asked and the plan carries only
        catalog facts; without a viewer (``start``, which checks the admin itself) it is full."""
        spec = self.catalog.secret(secret)
        backend_checked = viewer is None or self.is_admin(viewer, secret)
        settings = self.catalog.settings_for(secret)
        lanes = tuple(settings.lanes)
        consumers = [self._consumer_plan(name, c) for name, c in spec.consumers.items()]
        order: list[tuple[str, tuple[ConsumerPlan, ...]]] = []
        for lane in (*lanes, *sorted({c.lane for c in consumers} - set(lanes))):
            in_lane = tuple(sorted((c for c in consumers if c.lane == lane), key=lambda c: c.name))
            if in_lane:
                order.append((lane, in_lane))
        warnings = tuple(f.message for f in readiness_findings(self.catalog, secret))
        blockers = self._blockers(secret, backends=backend_checked)
        reload_notes = tuple(
            f"{c.name} ({c.lane}, {c.reload}): {RELOAD_REQUIREMENTS.get(c.reload, c.reload)}"
            for _, lane_consumers in order
            for c in lane_consumers
        )
        store_cfg = self.catalog.resolved_store(secret)
        issuer_cfg = self.catalog.resolved_issuer(secret)
        by_lane = lane_target_labels(spec)
        return Plan(
            secret=secret,
            lanes=tuple(lane for lane, _ in order),
            order=tuple(order),
            overlap=overlap or settings.overlap,
            observe=observe or settings.observe,
            issuer_kind=issuer_cfg.kind,
            store_kind=store_cfg.kind,
            store_path=spec.store.path,
            blockers=tuple(blockers),
            warnings=warnings,
            reload_notes=reload_notes,
            targets=tuple((lane, by_lane[lane]) for lane, _ in order if lane in by_lane),
            backend_checked=backend_checked,
            cutover_window=(
                settings.cutover_window
                if (self.is_cutover(secret) if backend_checked else settings.hard_cutover)
                else None
            ),
        )

    def _consumer_plan(self, name: str, c: ConsumerSpec) -> ConsumerPlan:
        return ConsumerPlan(
            name=name,
            lane=c.lane,
            owner=c.owner,
            reload=c.reload,
        )

    def _blockers(self, secret: str, *, backends: bool = True) -> list[str]:
        """Live readiness: what must be fixed before a rotation may start; the store and
        issuer are asked only with ``backends``."""
        blockers: list[str] = []
        spec = self.catalog.secret(secret)
        if backends:
            blockers += self._backend_blockers(secret)
        for name, c in spec.consumers.items():
            if not is_slack_id(c.owner):
                blockers.append(f"{name}: owner {c.owner!r} is not a Slack user or group id")
        return blockers

    def _backend_blockers(self, secret: str) -> list[str]:
        blockers: list[str] = []
        spec = self.catalog.secret(secret)
        try:
            # An issuer that cannot overlap is no blocker: it is run as a hard cutover.
            self.backends.issuer_for(secret)
        except (IssuerError, RotabotError) as exc:
            blockers.append(f"issuer not usable: {exc}")
        try:
            self.backends.store_for(secret).describe(spec.store.path)
        except (StoreError, RotabotError) as exc:
            blockers.append(f"store not reachable: {exc}")
        try:
            self.backends.targets_for(secret)
        except (StoreError, ReloadFailed, RotabotError) as exc:
            blockers.append(f"distribution targets not usable: {exc}")
        return blockers

    def is_cutover(self, secret: str) -> bool:
        """Whether a rotation of ``secret`` is a hard cutover: the catalog says `overlap:
        none`, or its issuer cannot keep two credentials valid at once."""
        if self.catalog.settings_for(secret).hard_cutover:
            return True
        try:
            return not self.backends.issuer_for(secret).keeps_both_valid
        except (IssuerError, RotabotError):
            return False  # the readiness review names the broken issuer

    def start(
        self,
        secret: str,
        *,
        actor: str,
        overlap: timedelta | None = None,
        observe: timedelta | None = None,
        urgent: bool = False,
        action_id: str | None = None,
        override_freeze: str | None = None,
        recurring: bool = False,
        ready_confirmed: bool = False,
    ) -> Rotation:
        """Readiness first (creating nothing on failure), then the new credential beside the
        old one. Raises RotabotError listing what to fix, Frozen inside a freeze window unless
        an admin overrides it with a reason (``override_freeze``, audited and posted). A hard
        cutover starts only with ``ready_confirmed``: its readiness review (every owner
        confirmed) passed.

        ``action_id`` is the user action that asks (Slack's trigger id, a modal's view id):
        processed again (a repeat with another signature, another replica) it starts nothing
        and returns the rotation it started the first time, whatever became of it since."""

        def first(created: Callable[[str], None]) -> Rotation:
            plan = self.plan(secret, overlap=overlap, observe=observe)
            # A recurring occurrence (`every:`) is the catalog's own order, started by the
            # timer after every owner confirmed: no Slack user asks, so none is checked.
            if not recurring and not self.is_admin(actor, secret):
                raise NotAuthorized(f"only admins of {secret} may start a rotation")
            if plan.blockers:
                lines = "\n".join(f"• {b}" for b in plan.blockers)
                raise RotabotError(f"{secret} is not ready to rotate; fix these first:\n{lines}")
            cutover = self.is_cutover(secret)
            if cutover and not ready_confirmed:
                raise RotabotError(
                    f"{secret} is a hard cutover (the old value stops working at mint): every "
                    f"owner confirms readiness first. `/rotate start {secret}` opens that "
                    "review; nothing was started"
                )
            freeze, why = self._freeze_gate(secret, actor, "start", override_freeze, None)
            settings = self.catalog.settings_for(secret)
            # An urgent start (a leaked credential, an emergency re-rotation) is not held by
            # its exclusive group: an admin said it cannot wait for the partner to finish.
            group = None if urgent else self.catalog.exclusive_group(secret)
            # Partners started at once: one at a time in this process (threads), and across
            # replicas the second waits in hold_group until the first committed.
            with self._group_lock(group[0] if group else None), self.uow_factory() as uow:
                if group is not None:
                    uow.rotations.hold_group(group[0])
                existing = uow.rotations.active_for_secret(secret)
                if existing is not None:
                    raise AlreadyActive(secret, existing.ref)
                busy = self._exclusive_conflict(uow, secret) if group is not None else None
                if busy is not None:
                    raise GroupBusy(busy)
                rotation = Rotation.begin(
                    secret=secret,
                    lanes=plan.lanes,
                    consumers=[c for _, cs in plan.order for c in cs],
                    overlap=plan.overlap,
                    observe=plan.observe,
                    store_path=plan.store_path,
                    actor=actor,
                    now=self.clock.now(),
                    urgent=urgent,
                    auto_revoke=settings.auto_revoke,
                    gated_lanes=[lane for lane, _ in plan.targets],
                    cutover_window=settings.cutover_window if cutover else None,
                )
                rotation.channel = settings.channel
                if freeze is not None:  # audited with the rotation it let start
                    self._record_freeze_override(rotation, actor, "start", freeze, why)
                uow.rotations.add(rotation)
                events = list(rotation.events)
                uow.commit()
                rotation_id = rotation.id
            assert rotation_id is not None
            # Recorded before the credential is minted: a repeat meanwhile mints nothing.
            created(str(rotation_id))
            self._notify(rotation, [])
            if freeze is not None:  # told in the thread the message just opened
                self._tell(self.get(rotation_id), receipts_for(events, ready_to_switch=False))
            return self.prepare(rotation_id, actor=actor)

        def again(result: str) -> Rotation:
            log.info("a repeated start of %s was answered with R-%s; nothing new was started",
                     secret, result)
            return self.get(int(result))

        return once(self.actions, action_id, first=first, again=again)

    def _group_lock(self, group: str | None) -> AbstractContextManager[object]:
        if group is None:
            return nullcontext()
        with self._locks_guard:
            return self._group_locks.setdefault(group, threading.Lock())

    def exclusive_conflict(self, secret: str) -> str | None:
        """Why ``secret`` may not start now because of its exclusive group (`groups:`), e.g.
        "warehouse-pair: R-4 of warehouse-a is still active", or None when it may."""
        with self.uow_factory() as uow:
            return self._exclusive_conflict(uow, secret)

    def _exclusive_conflict(self, uow: UnitOfWork, secret: str) -> str | None:
        group = self.catalog.exclusive_group(secret)
        if group is None:
            return None
        name, partners = group
        for partner in partners:
            active = uow.rotations.active_for_secret(partner)
            if active is not None:
                return f"{name}: {active.ref} of {partner} is still active"
        return None

    def prepare(self, rotation_id: int, *, actor: str) -> Rotation:
        """Create the new credential beside the old one (or notice a manually written one)."""
        with self.uow_factory() as uow:
            rotation = uow.rotations.get(rotation_id)
        if rotation.phase is not Phase.READY_CHECK:
            return rotation
        if self.claims is not None and not self.claims.claim(rotation_id, PREPARE):
            return rotation  # another process is preparing it right now
        try:
            return self._prepare(rotation, actor)
        finally:
            if self.claims is not None:
                self.claims.release(rotation_id, PREPARE)

    def _prepare(self, rotation: Rotation, actor: str) -> Rotation:
        rotation_id = rotation.id
        assert rotation_id is not None
        store = self.backends.store_for(rotation.secret)
        issuer = self.backends.issuer_for(rotation.secret)
        path = rotation.store_path
        try:
            state = store.describe(path)
            current = state.current
            if issuer.kind in PERSON_WRITES:
                # A version already marked pending (a retry after a failed save) is found.
                new_version = state.pending or find_new_version(state)
                if new_version is None:
                    return rotation  # waits in ready-check until someone writes the value
                minted_key, old_key = None, None
                if isinstance(issuer, IdentifiesKeys):
                    # Before it is marked pending: a failure here leaves nothing to undo.
                    minted_key = issuer.identify(store.read(path, new_version))
                    old_key = issuer.identify(store.read(path, current)) if current else None
                    if minted_key is not None and minted_key == old_key:
                        raise IssuerError(
                            f"the value written as version {new_version} is the key in use "
                            f"({minted_key}), not a new one: create a new key at the provider "
                            "and write it to the store, then resume"
                        )
                store.mark_pending(path, new_version)
            else:
                current_material = store.read(path, current) if current else None
                minted = issuer.mint(current_material)
                minted_key, old_key = minted.key_id, minted.previous_key_id
                if minted.material is None:
                    raise IssuerError(f"{issuer.kind} issuer returned no credential")
                try:
                    new_version = store.write_pending(
                        path, minted.material, expected_current=current
                    )
                except StoreError:
                    # Do not strand a credential that no store holds: take it back.
                    self._best_effort_revoke(issuer, minted.key_id, rotation)
                    raise
        except (StoreError, IssuerError) as exc:
            return self._fail(
                rotation_id,
                f"preparing the new credential failed: {exc}",
                paused=isinstance(exc, StoreConflict),
            )

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            if r.phase is Phase.READY_CHECK:
                r.prepared(
                    old_version=current,
                    new_version=new_version,
                    old_key_id=old_key,
                    new_key_id=minted_key,
                    actor=actor,
                    now=self.clock.now(),
                )

        rotation = self._mutate(rotation_id, apply)
        if rotation.cutover:
            return self.cut_over(rotation_id)
        return self.open_lane(rotation_id) if rotation.lane_to_open() else rotation

    def _best_effort_revoke(
        self, issuer: Issuer, key_id: str | None, rotation: Rotation | None = None
    ) -> None:
        try:
            issuer.revoke(key_id)
        except IssuerError as exc:
            log.error("could not take back a minted credential %s: %s", key_id, exc,
                      extra=rotation_context(rotation))

    # --- owner steps -------------------------------------------------------------------

    def step(
        self,
        rotation_id: int,
        consumer: str,
        target: StepState,
        *,
        actor: str,
        note: str | None = None,
    ) -> StepOutcome:
        with self.uow_factory() as uow:
            rotation = uow.rotations.get(rotation_id)
        self.authorize_step(rotation, consumer, actor, f"{target.value} {consumer}")
        if (
            target is StepState.VALIDATED
            and rotation.consumer(consumer).state is StepState.DISTRIBUTED
            and rotation.phase in (Phase.DISTRIBUTING, Phase.VALIDATING)
        ):
            for check in self.step_checks:
                evidence = check(rotation, consumer, actor)
                if evidence is not None and note is None:
                    note = evidence
        # Only a step whose turn it is: any other click is refused by the transition itself,
        # with the reason that applies (out of order, already done).
        if target in (StepState.DISTRIBUTED, StepState.VALIDATED) and (
            (rotation.consumer(consumer), target) in rotation.pending_steps()
        ):
            for evidence_check in self.evidence_checks:
                evidence = evidence_check(rotation, consumer, target, actor)
                if evidence is not None and note is None:
                    note = evidence
        changed = False

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            nonlocal changed
            changed = r.mark_step(consumer, target, actor=actor, now=self.clock.now(), note=note)

        rotation = self._mutate(rotation_id, apply)
        if changed:
            rotation = self._after_step(rotation_id, rotation)
        return StepOutcome(rotation, changed, consumer, target)

    def _after_step(self, rotation_id: int, rotation: Rotation) -> Rotation:
        """What a step that changed something sets off: the next lane opens, or a hard
        cutover whose every owner validated moves on to observing by itself (the store made
        the new value current at the cutover, so there is no admin's Switch to wait for)."""
        if rotation.lane_to_open():
            return self.open_lane(rotation_id)  # this step finished a lane: the next opens
        if rotation.cutover and rotation.ready_to_switch():
            return self._mutate(rotation_id, lambda r, uow: (
                r.switch(actor="rotabot", now=self.clock.now()) if r.ready_to_switch() else None
            ))
        return rotation

    def step_from_evidence(
        self, rotation_id: int, consumer: str, target: StepState, *, actor: str, note: str
    ) -> StepOutcome:
        """A consumer's own report moves its step (bot/services/evidence.py decided it is its
        turn): the same transition as an owner's click, with ``actor`` the evidence and
        ``note`` what was reported. A step no longer its turn (a click or another replica got
        there first) changes nothing."""
        changed = False

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            nonlocal changed
            if (r.consumer(consumer), target) not in r.pending_steps():
                return
            changed = r.mark_step(consumer, target, actor=actor, now=self.clock.now(), note=note)

        rotation = self._mutate(rotation_id, apply)
        if changed:
            rotation = self._after_step(rotation_id, rotation)
        return StepOutcome(rotation, changed, consumer, target)

    # --- admin actions -----------------------------------------------------------------

    def switch(
        self, rotation_id: int, *, actor: str, override_freeze: str | None = None
    ) -> Rotation:
        with self.uow_factory() as uow:
            rotation = uow.rotations.get(rotation_id)
            self._require_admin(uow, rotation, actor, "switch")
        if rotation.phase in SWITCHED_PHASES:
            return rotation  # already switched: a replay
        if not rotation.ready_to_switch():
            rotation.switch(actor=actor, now=self.clock.now())  # raises the reason in words
        freeze, why = self._freeze_gate(
            rotation.secret, actor, "switch", override_freeze, rotation_id
        )
        return self._switch_now(rotation, actor, freeze, why)

    def _switch_now(
        self, rotation: Rotation, actor: str, freeze: Freeze | None, why: str | None
    ) -> Rotation:
        """Promote the new credential and record the switch (callers checked who and when)."""
        return self._one_writer(rotation, SWITCH, lambda fresh: self._promote_and_switch(
            fresh, actor, freeze, why))

    def _promote_and_switch(
        self, rotation: Rotation, actor: str, freeze: Freeze | None, why: str | None
    ) -> Rotation:
        rotation_id = rotation.id
        assert rotation_id is not None and rotation.new_version is not None
        try:
            current = self.backends.store_for(rotation.secret).promote(
                rotation.store_path, rotation.new_version
            )
        except StoreError as exc:
            return self._fail(rotation_id, f"switching to the new credential failed: {exc}")

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            if r.phase is not Phase.VALIDATING:
                return
            if freeze is not None:
                self._record_freeze_override(r, actor, "switch", freeze, why)
            r.switch(actor=actor, now=self.clock.now(), current=current)

        return self._mutate(rotation_id, apply)

    # --- a consumer the catalog gained while the rotation runs ----------------------------

    def add_consumer(self, rotation_id: int, consumer: str, *, actor: str) -> Rotation:
        """An admin adds a consumer the current catalog lists for the rotation's secret but
        the rotation does not have, as a new step in its lane: its owner is asked at once when
        its lane is open. Its own targets are written now when its lane's were written already
        (refused, nothing changed, if one cannot be); otherwise its lane opens as usual."""
        rotation = self.get(rotation_id)
        with self.uow_factory() as uow:
            self._require_admin(uow, rotation, actor, "add a consumer to")
        spec = self.catalog.secret(rotation.secret)
        c = spec.consumers.get(consumer)
        if c is None:
            raise RotabotError(self._not_a_consumer(rotation, consumer))
        plan = self._consumer_plan(consumer, c)
        labels = [target_label(t) for t in c.targets]
        done = set(rotation.lane_writes.get(c.lane, ()))
        written: list[str] = []
        detail: dict[str, str] = {}
        if (labels and c.lane in rotation.lane_writes and not rotation.terminal
                and rotation.switched_at is None and rotation.cutover_until is None
                and consumer not in rotation.consumers):
            targets, _ = select(self.backends.targets_for(rotation.secret),
                                [label for label in labels if label not in done])
            if targets:
                try:
                    new, previous = self._materials(rotation)
                    wrote = write_lane(c.lane, targets, new, previous,
                                       self._hook_event(rotation, c.lane))
                except (StoreError, ReloadFailed, TargetWriteFailed) as exc:
                    raise RotabotError(
                        f"{consumer} was not added to {rotation.ref}: {exc}. Nothing changed; "
                        "fix the target, then add it again") from None
                written = [w.target for w in wrote]
                detail["written"] = written_json(wrote)

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            r.add_consumer(plan, actor=actor, now=self.clock.now(),
                           gated=bool(labels) and c.lane not in r.lane_writes,
                           written=written, detail=detail)

        rotation = self._mutate(rotation_id, apply)
        return self.open_lane(rotation_id) if rotation.lane_to_open() else rotation

    def _not_a_consumer(self, rotation: Rotation, consumer: str) -> str:
        """Why ``consumer`` cannot join: another secret's, or not in the catalog at all."""
        elsewhere = sorted(name for name, s in self.catalog.secrets.items()
                           if consumer in s.consumers)
        if elsewhere:
            return (f"{consumer} is a consumer of {', '.join(elsewhere)}, not of "
                    f"{rotation.secret}: it cannot join {rotation.ref}; nothing changed")
        missing = sorted(set(self.catalog.secret(rotation.secret).consumers)
                         - set(rotation.consumers))
        hint = (f"catalog consumers of {rotation.secret} not in {rotation.ref}: "
                f"{', '.join(missing)}" if missing else
                f"add it under secrets.{rotation.secret}.consumers, then `/rotate reload`")
        return f"the catalog has no consumer {consumer}; nothing changed ({hint})"

    def joinable(self, catalog: Catalog | None = None) -> list[tuple[Rotation, list[str]]]:
        """Rotations in flight, before their switch, with the consumers of their secret in
        ``catalog`` (default: the one in use) they do not have: each may be added by an admin.
        A reload passes the catalog it applied (its own request still runs on the old one)."""
        catalog = catalog or self.catalog
        out: list[tuple[Rotation, list[str]]] = []
        for rotation in self.active():
            if rotation.switched_at is not None or rotation.cutover_until is not None:
                continue
            try:
                listed = catalog.secret(rotation.secret).consumers
            except RotabotError:
                continue
            missing = [name for name in listed if name not in rotation.consumers]
            if missing:
                out.append((rotation, missing))
        return out

    # --- a switch queued through a freeze -------------------------------------------------

    def queued_switch(self, rotation_id: int) -> QueuedSwitch | None:
        """The switch an admin queued for the end of a freeze, if one waits."""
        with self.uow_factory() as uow:
            return queued_switch(uow.audit.for_rotation(rotation_id))

    def queue_switch(self, rotation_id: int, *, actor: str) -> tuple[Rotation, QueuedSwitch]:
        """An admin's answer to a frozen switch: rotabot switches once, when the freeze ends
        (audited, told in the thread with the time). Only while frozen and ready to switch;
        asked again while one waits, it returns the one waiting."""
        rotation = self.get(rotation_id)
        with self.uow_factory() as uow:
            self._require_admin(uow, rotation, actor, "switch")
        if not rotation.ready_to_switch():
            rotation.switch(actor=actor, now=self.clock.now())  # raises the reason in words
        freeze = self.freeze_of(rotation.secret)
        if freeze is None:
            raise RotabotError(
                f"{rotation.ref} is not frozen now: nothing to wait for, nothing was queued. "
                f"Switch it with `/rotate switch {rotation.ref}`"
            )

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            if queued_switch(uow.audit.for_rotation(rotation_id)) is not None:
                return  # a double click or another replica queued it already
            r.record_note(actor=actor, now=self.clock.now(), action=QUEUED, detail={
                "freeze": freeze.describe(), **freeze.detail(), "after": freeze.until.isoformat()})

        rotation = self._mutate(rotation_id, apply)
        waiting = self.queued_switch(rotation_id)
        assert waiting is not None
        return rotation, waiting

    def cancel_queued_switch(self, rotation_id: int, *, actor: str) -> Rotation:
        """An admin takes back a queued switch (audited, told in the thread)."""
        rotation = self.get(rotation_id)
        with self.uow_factory() as uow:
            self._require_admin(uow, rotation, actor, "cancel the queued switch of")

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            waiting = queued_switch(uow.audit.for_rotation(rotation_id))
            if waiting is None:
                raise RotabotError(
                    f"no switch is queued on {r.ref} (it ran, was cancelled or dropped); "
                    "nothing changed"
                )
            r.record_note(actor=actor, now=self.clock.now(), action=QUEUE_CANCELLED,
                          detail={"requester": waiting.requester,
                                  "after": waiting.after.isoformat()})

        return self._mutate(rotation_id, apply)

    def run_queued_switch(self, rotation_id: int) -> bool:
        """Timer: after the freeze, perform a queued switch once, or drop it saying why when
        the rotation is no longer ready. True if it switched or dropped one now."""
        waiting = self.queued_switch(rotation_id)
        now = self.clock.now()
        if waiting is None or not waiting.due(now):
            return False
        rotation = self.get(rotation_id)
        if self.freeze_of(rotation.secret) is not None:
            return False  # a window began meanwhile (or the catalog moved it): wait for it
        # One process performs it: a second replica's promote must not race the first's.
        if self.claims is not None and not self.claims.claim(rotation_id, QUEUED):
            return False
        try:
            return self._run_queued_switch(rotation, waiting)
        finally:
            if self.claims is not None:
                self.claims.release(rotation_id, QUEUED)

    def _run_queued_switch(self, rotation: Rotation, waiting: QueuedSwitch) -> bool:
        rotation_id = rotation.id
        assert rotation_id is not None
        if self.queued_switch(rotation_id) is None:
            return False  # another replica performed it between our read and the claim
        rotation = self.get(rotation_id)
        why = None
        if not rotation.ready_to_switch():
            try:
                rotation.switch(actor="rotabot", now=self.clock.now())
            except (RotabotError, IllegalTransition) as exc:  # the reason, in words
                why = str(exc)
            why = why or f"{rotation.ref} is {PHASE_STATE[rotation.phase]}"
        elif not self.is_admin(waiting.requester, rotation.secret):
            why = f"{mention(waiting.requester)} who queued it is no longer an admin of " \
                  f"{rotation.secret}"
        if why is not None:
            reason = f"{why}. An admin switches by hand when it is ready"

            def drop(r: Rotation, uow: UnitOfWork) -> None:
                if queued_switch(uow.audit.for_rotation(rotation_id)) is not None:
                    r.record_note(actor="rotabot", now=self.clock.now(), action=QUEUE_DROPPED,
                                  reason=reason, detail={"requester": waiting.requester})

            self._mutate(rotation_id, drop)
            return True
        after = self._switch_now(rotation, "rotabot", None, None)
        return after.phase is not Phase.VALIDATING

    def reminder_settings(
        self, rotation: Rotation, settings: EffectiveSettings
    ) -> EffectiveSettings:
        """The reminder timing of one rotation: an urgent one (an emergency re-rotation)
        reminds and escalates sooner."""
        return reminder_settings(rotation, settings)

    def message_context(self, rotation: Rotation) -> MessageContext:
        """Admins, the manual issuer's instructions and the open problems, for the message."""
        try:
            admins = self.catalog.settings_for(rotation.secret).admins
            issuer = self.catalog.resolved_issuer(rotation.secret).config
        except RotabotError:  # the secret left the catalog mid-rotation
            return MessageContext(now=self.clock.now())
        instructions = write_to = None
        if rotation.phase is Phase.READY_CHECK and issuer.kind in PERSON_WRITES:
            instructions = getattr(issuer, "instructions", None)
            store = self.catalog.resolved_store(rotation.secret).config
            prefix = getattr(store, "pending_prefix", None)
            if prefix:
                write_to = f"{getattr(store, 'mount', 'secret')}/{prefix}/{rotation.store_path}"
        problems: tuple[Alert, ...] = ()
        if not rotation.terminal:
            with self.uow_factory() as uow:
                problems = tuple(uow.alerts.for_secret(
                    rotation.secret, unresolved_only=True, since=rotation.created_at))
        # Read only while it could apply: one audit read, never for most renders.
        queued = self.queued_switch(rotation.id) if (
            rotation.id is not None and rotation.ready_to_switch()) else None
        return MessageContext(admins, instructions, problems, write_to, self.clock.now(),
                              queued)

    def gate(self, rotation_id: int) -> GateResult:
        return self.gate_of(self.get(rotation_id))

    def gate_of(self, rotation: Rotation) -> GateResult:
        """The gate of a rotation already loaded: reads only its unresolved alerts."""
        with self.uow_factory() as uow:
            alerts = uow.alerts.for_secret(
                rotation.secret, unresolved_only=True, since=rotation.created_at
            )
        missing = self.evidence_missing(rotation) if self.evidence_missing is not None else []
        return evaluate_gate(
            rotation, now=self.clock.now(), alerts=alerts, usage=self.usage_of_old(rotation),
            missing_evidence=missing,
        )

    def usage_of_old(self, rotation: Rotation) -> UsageEvidence:
        """Who still uses the old credential: the issuer's evidence, plus the store's record
        of reads of the old version since the switch where it keeps one, with each client
        mapped to a catalog consumer by ``identity`` (or left unmapped)."""
        if rotation.cutover:
            # The platform holds one valid value: the old one stopped working at the cutover.
            return UsageEvidence(in_use=False, summary=CUTOVER_USAGE)
        parts: list[UsageEvidence] = []
        try:
            parts.append(self.backends.issuer_for(rotation.secret).usage(rotation.old_key_id))
        except (IssuerError, RotabotError) as exc:
            parts.append(UsageEvidence(in_use=None, summary=f"usage evidence unavailable: {exc}"))
        if rotation.switched_at is not None and rotation.old_version is not None:
            try:
                store = self.backends.store_for(rotation.secret)
                if isinstance(store, ReportsReads):
                    parts.append(store.reads_of(
                        rotation.store_path, rotation.old_version, since=rotation.switched_at))
            except (StoreError, RotabotError) as exc:
                parts.append(UsageEvidence(
                    in_use=None, summary=f"the store's audit log is unavailable: {exc}"))
        return map_usage(combined(parts), self._identities(rotation.secret))

    def unmapped_consumers(self, rotations: list[Rotation]) -> list[tuple[Rotation, str]]:
        """Clients using the old credential of a switched rotation that match no catalog
        consumer, in words (App Home lists them so the map is fixed before revoking)."""
        now = self.clock.now()
        return [
            (r, unmapped_words(seen, now))
            for r in rotations
            if r.phase in (Phase.OBSERVING, Phase.REVOCABLE)
            for seen in unmapped(self.usage_of_old(r))
        ]

    def _identities(self, secret: str) -> dict[str, ConsumerIdentity]:
        try:
            consumers = self.catalog.secret(secret).consumers
        except RotabotError:  # the secret left the catalog mid-rotation: nobody to map to
            return {}
        return {name: c.identity for name, c in consumers.items() if c.identity is not None}

    def tick(self, rotation_id: int) -> Rotation:
        """Timer: when observation has elapsed and the gate is open, mark it revocable (and
        revoke at once where the secret sets auto_revoke). Idempotent."""
        gate = self.gate(rotation_id)
        rotation = self._mutate(
            rotation_id, lambda r, uow: r.open_gate(gate, now=self.clock.now())
        )
        if rotation.phase is Phase.REVOCABLE and rotation.auto_revoke:
            if self.freeze_of(rotation.secret) is not None:
                return rotation  # the timer revokes once the freeze ends (TimerWork.due)
            return self.revoke(rotation_id, actor="rotabot")
        return rotation

    def revoke(
        self,
        rotation_id: int,
        *,
        actor: str,
        override_reason: str | None = None,
        override_freeze: str | None = None,
    ) -> Rotation:
        """Revoke the old credential once the gate is open; past a closed gate only with a
        reason (break-glass), and where the secret asks for two people, only once another
        admin approved (``approve_break_glass``): here the request is recorded and posted."""
        with self.uow_factory() as uow:
            rotation = uow.rotations.get(rotation_id)
            if actor != "rotabot":
                self._require_admin(uow, rotation, actor, "revoke")
        if rotation.phase is Phase.REVOKED:
            return rotation
        override_reason = person_text(override_reason)
        gate = self.gate(rotation_id)
        if not gate.open and not override_reason:
            self._audit_refusal(rotation_id, actor, "revoke", "; ".join(gate.unmet))
            # Raises GateClosed with the unmet conditions in words.
            rotation.revoke(gate, actor=actor, now=self.clock.now())
        freeze, why = self._freeze_gate(
            rotation.secret, actor, "revoke", override_freeze, rotation_id
        )
        if not gate.open and self.two_person(rotation.secret):
            return self._request_break_glass(rotation, actor, override_reason or "", freeze, why)
        return self._revoke_now(rotation, gate, actor, override_reason, freeze, why)

    def _revoke_now(
        self,
        rotation: Rotation,
        gate: GateResult,
        actor: str,
        override_reason: str | None,
        freeze: Freeze | None,
        freeze_reason: str | None,
        before: Callable[[Rotation], None] | None = None,
    ) -> Rotation:
        """The revocation itself, every check passed; ``before`` records what let it happen
        (an approval) in the same transaction. One process at a time (see _one_writer)."""

        def revoke(rotation: Rotation) -> Rotation:
            rotation_id = rotation.id
            assert rotation_id is not None
            issuer = self.backends.issuer_for(rotation.secret)
            store = self.backends.store_for(rotation.secret)
            try:
                # No key id means the old credential predates rotabot (or a person minted it):
                # nobody can revoke it for us, so the audit trail and the message say so. After
                # a cutover the old value died at mint: there is nothing left to revoke.
                if rotation.old_key_id is not None and not rotation.cutover:
                    issuer.revoke(rotation.old_key_id)
                if rotation.old_version is not None:
                    store.retire(rotation.store_path, rotation.old_version)
                trimmed = self._trim_after_revoke(rotation, issuer, store)
            except (IssuerError, StoreError) as exc:
                return self._fail(rotation_id, f"revoking the old credential failed: {exc}")

            def apply(r: Rotation, uow: UnitOfWork) -> None:
                # Already revoked by a concurrent caller (another replica's timer): nothing to do.
                if r.phase is Phase.REVOKED:
                    return
                now = self.clock.now()
                if before is not None:
                    before(r)
                if freeze is not None:
                    self._record_freeze_override(r, actor, "revoke", freeze, freeze_reason)
                if r.cutover:
                    r.record_note(actor=actor, now=now, action="revoke.nothing-left",
                                  reason="the old credential stopped working at the cutover; "
                                  "there was nothing left to revoke")
                # Nobody can revoke a key without its id: say so, unless a person revokes anyway
                # (manual) or there is no provider (a webhook secret: dropping it from the list
                # is the revocation).
                elif (
                    r.old_key_id is None
                    and (issuer.kind not in PERSON_WRITES or isinstance(issuer, IdentifiesKeys))
                    and not isinstance(issuer, TrimsAfterRevoke)
                ):
                    r.record_note(actor=actor, now=now, action="revoke.by-hand",
                                  reason=f"the {issuer.kind} issuer has no id for the old "
                                  "credential: revoke it at the provider by hand")
                if trimmed:
                    r.record_note(actor=actor, now=now, action="credential.trimmed", detail=trimmed)
                r.revoke(gate, actor=actor, now=now, override_reason=override_reason)

            return self._mutate(rotation_id, apply)

        return self._one_writer(rotation, REVOKE, revoke)

    def _one_writer(
        self, rotation: Rotation, kind: str, work: Callable[[Rotation], Rotation]
    ) -> Rotation:
        """Run ``work`` on the stored rotation while holding the work lock ``kind``: the same
        click reaching several replicas (a double click, a retried request) must not run one
        store or issuer change twice at once, or the loser's check-and-set conflict pauses
        a rotation the winner moved on. Nothing is done when another process holds the
        lock (it does this now), or when the one that held it moved the phase on since the
        caller's checks."""
        rotation_id = rotation.id
        assert rotation_id is not None
        with self._work_lock(rotation_id, kind) as mine:
            if not mine:
                return rotation
            fresh = self.get(rotation_id)
            if fresh.phase is not rotation.phase:
                return fresh
            return work(fresh)

    def _work_lock(self, rotation_id: int, kind: str) -> AbstractContextManager[bool]:
        """The work lock ``kind`` of the rotation (storage/work_locks.py); always held when
        this service runs alone (no ``work_locks``)."""
        if self.work_locks is None:
            return nullcontext(True)
        return self.work_locks.hold(rotation_id, kind)

    def _trim_after_revoke(
        self, rotation: Rotation, issuer: Issuer, store: Store
    ) -> dict[str, str]:
        """For an issuer whose current credential still lists the old one (webhook secrets):
        the trimmed credential becomes a new current version and is written to every target
        this rotation wrote. Idempotent: once trimmed there is nothing left to drop."""
        if not isinstance(issuer, TrimsAfterRevoke):
            return {}
        current = store.describe(rotation.store_path).current
        if current is None:
            return {}
        trimmed = issuer.after_revoke(store.read(rotation.store_path, current))
        if trimmed is None:
            return {}
        staged = store.write_pending(rotation.store_path, trimmed, expected_current=current)
        version = store.promote(rotation.store_path, staged)
        targets, _ = select(self.backends.targets_for(rotation.secret),
                            rotation.written_targets())
        written = restore_targets(targets, trimmed, self._hook_event(rotation, "revoke"),
                                  what="the credential without the revoked one")
        return {"version": version, "targets": written_json(written)}

    # --- freeze windows -----------------------------------------------------------------

    def freeze_of(self, secret: str) -> Freeze | None:
        """The freeze in force now for a secret (its windows and the catalog's), if any."""
        try:
            windows = self.catalog.freeze_windows(secret)
        except RotabotError:  # the secret left the catalog mid-rotation: no windows apply
            return None
        return freeze_at(windows, self.clock.now())

    def _freeze_gate(
        self,
        secret: str,
        actor: str,
        action: str,
        override: str | None,
        rotation_id: int | None,
    ) -> tuple[Freeze | None, str | None]:
        """Refuse ``action`` inside a freeze window (audited on the rotation), unless an admin
        gave a reason to override it: then the freeze and the reason, to record with the
        action. Callers checked the admin already; timers (``rotabot``) never override."""
        freeze = self.freeze_of(secret)
        if freeze is None:
            return None, None
        reason = person_text(override) if actor != "rotabot" else None
        if reason is None:
            self._audit_refusal(rotation_id, actor, action, f"frozen: {freeze.describe()}")
            target = secret if rotation_id is None else f"R-{rotation_id}"
            queue = rotation_id if action == "switch" and actor != "rotabot" else None
            raise Frozen(freeze, action, f"/rotate {action} {target}", queue)
        return freeze, reason

    def _record_freeze_override(
        self, r: Rotation, actor: str, action: str, freeze: Freeze, reason: str | None
    ) -> None:
        r.record_note(actor=actor, now=self.clock.now(), action=FREEZE_OVERRIDE, reason=reason,
                      detail={"action": action, "freeze": freeze.describe(), **freeze.detail()})

    # --- two-person break-glass -----------------------------------------------------------

    def two_person(self, secret: str) -> bool:
        """Whether revoking past the gate needs a second admin (``break_glass`` in the catalog)."""
        try:
            return self.catalog.secret(secret).break_glass is not None
        except RotabotError:
            return False

    def break_glass_request(self, rotation_id: int) -> BreakGlassRequest | None:
        """The break-glass request waiting for approval on a rotation, if any."""
        with self.uow_factory() as uow:
            return open_request(uow.audit.for_rotation(rotation_id))

    def _request_break_glass(
        self,
        rotation: Rotation,
        actor: str,
        reason: str,
        freeze: Freeze | None,
        freeze_reason: str | None,
    ) -> Rotation:
        """Record the request (the thread's receipt carries the Approve button); nothing is
        revoked. A second request while one waits is refused with who asked and until when."""
        assert rotation.id is not None
        spec = self.catalog.secret(rotation.secret).break_glass
        assert spec is not None
        now = self.clock.now()

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            waiting = open_request(uow.audit.for_rotation(r.id or 0))
            if waiting is not None and not waiting.expired(now):
                raise RotabotError(
                    f"{r.ref}: {mention(waiting.requester)} already asked to break the glass; "
                    f"another admin approves it on the thread's request until "
                    f"{waiting.expires_at:%H:%M} UTC. Nothing changed"
                )
            if waiting is not None:
                self._record_expiry(r, waiting)
            if freeze is not None:  # the approval inherits it: noted with the request
                self._record_freeze_override(r, actor, "revoke", freeze, freeze_reason)
            r.record_note(actor=actor, now=now, action=REQUESTED, reason=reason, detail={
                "expires_at": (now + spec.within).isoformat(),
                "approvals": str(spec.approvals),
            })

        return self._mutate(rotation.id, apply)

    def authorize_break_glass_approval(self, rotation_id: int, actor: str) -> BreakGlassRequest:
        """Before the approval modal opens and again on submission: an admin of the secret
        other than the requester (and anyone who approved already), while a request waits and
        has not expired. Refusals are audited."""
        rotation = self.get(rotation_id)
        with self.uow_factory() as uow:
            self._require_admin(uow, rotation, actor, "approve a break-glass revoke of")
        waiting = self.break_glass_request(rotation_id)
        if waiting is None:
            raise RotabotError(
                f"no break-glass request waits on {rotation.ref} (it was approved, expired or "
                "the rotation moved on); nothing changed"
            )
        if waiting.expired(self.clock.now()):
            self.expire_break_glass(rotation_id)
            raise RotabotError(
                f"the break-glass request on {rotation.ref} expired at "
                f"{waiting.expires_at:%H:%M} UTC; nothing was revoked. Ask again if still needed"
            )
        if waiting.has_acted(actor):
            why = ("you asked for this break-glass revoke: another admin must approve it"
                   if actor == waiting.requester else "you approved it already: another admin "
                   "must approve too")
            self._audit_refusal(rotation_id, actor, "approve break-glass", why)
            raise NotAuthorized(why)
        return waiting

    def approve_break_glass(self, rotation_id: int, *, actor: str, reason: str | None) -> Rotation:
        """A second admin approves: recorded with their reason; with enough approvals the
        old credential is revoked past the gate in the same transaction as the last one."""
        waiting = self.authorize_break_glass_approval(rotation_id, actor)
        if not waiting.freeze_overridden:
            # A window that began since the request: the approver may not revoke inside it.
            self._freeze_gate(self.get(rotation_id).secret, actor, "revoke", None, rotation_id)
        told = person_text(reason)
        now = self.clock.now()

        def approve(r: Rotation) -> None:
            r.record_note(actor=actor, now=now, action=APPROVED, reason=told, detail={
                "requester": waiting.requester, "requester_reason": waiting.reason})

        if waiting.people() + 1 < waiting.approvals:  # with this approval
            return self._mutate(rotation_id, lambda r, uow: approve(r))
        rotation = self.get(rotation_id)
        gate = self.gate(rotation_id)
        why = f"{waiting.reason} (approved by {actor}: {told or 'no reason given'})"
        return self._revoke_now(rotation, gate, actor, why, None, None, before=approve)

    def expire_break_glass(self, rotation_id: int) -> bool:
        """Timer and late clicks: a request past its time limit is cancelled, and the thread
        is told. True if this call expired one."""
        now = self.clock.now()
        done = False

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            nonlocal done
            waiting = open_request(uow.audit.for_rotation(r.id or 0))
            if waiting is not None and waiting.expired(now):
                self._record_expiry(r, waiting)
                done = True

        self._mutate(rotation_id, apply)
        return done

    def _record_expiry(self, r: Rotation, waiting: BreakGlassRequest) -> None:
        r.record_note(actor="rotabot", now=self.clock.now(), action=EXPIRED,
                      reason=waiting.reason, detail={
                          "requester": waiting.requester,
                          "expires_at": waiting.expires_at.isoformat()})

    def rollback(
        self,
        rotation_id: int,
        *,
        actor: str,
        revoke_new: bool = False,
        reason: str | None = None,
        consumer: str | None = None,
    ) -> Rotation:
        """Before revocation: the previous credential becomes current again. Allowed to admins,
        and to the owner of the consumer an alert is about."""
        return self.rollback_once(
            rotation_id, actor=actor, revoke_new=revoke_new, reason=reason, consumer=consumer
        )[0]

    def rollback_once(
        self,
        rotation_id: int,
        *,
        actor: str,
        revoke_new: bool = False,
        reason: str | None = None,
        consumer: str | None = None,
    ) -> tuple[Rotation, bool]:
        """As rollback; also says whether this call rolled back (False: it already was, a
        second click or a racing modal). Serialized per rotation in this process and, through
        the work lock, across replicas; and the store is restored only while the new version is
        still current, so a retry or a race never restores the new credential over the old
        one. Raises BusyElsewhere while another replica is rolling it back."""
        with self.uow_factory() as uow:
            rotation = uow.rotations.get(rotation_id)
        self.authorize_rollback(rotation, consumer, actor)
        with self._rollback_lock(rotation_id), self._work_lock(rotation_id, ROLLBACK) as mine:
            if not mine:
                raise BusyElsewhere(
                    f"{rotation.ref} is being rolled back by another rotabot process right now; "
                    "nothing was changed by this request, and the rotation's thread will say "
                    "how that rollback ended")
            return self._rollback_locked(rotation_id, actor, revoke_new, person_text(reason))

    def _rollback_lock(self, rotation_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._rollback_locks.setdefault(rotation_id, threading.Lock())

    def _rollback_locked(
        self, rotation_id: int, actor: str, revoke_new: bool, reason: str | None
    ) -> tuple[Rotation, bool]:
        rotation = self.get(rotation_id)  # fresh: a racing rollback may have finished
        if rotation.phase is Phase.ROLLED_BACK:
            return rotation, False
        if rotation.phase is Phase.REVOKED:
            rotation.rollback(actor=actor, now=self.clock.now())  # raises: emergency re-rotation
        if rotation.cutover and rotation.prepared_at is not None:
            return self._reissue(rotation, actor, reason)
        store = self.backends.store_for(rotation.secret)
        issuer = self.backends.issuer_for(rotation.secret)
        switched = rotation.switched_at is not None
        try:
            if switched:
                state = store.describe(rotation.store_path)
                # Only while the new version is current: after a restore (a retry of a rollback
                # that failed later on) "previous" is the new credential, not the old one.
                if state.current == rotation.new_version:
                    store.restore_previous(rotation.store_path)
            targets = self._restore_targets(rotation)
            if revoke_new:
                issuer.revoke(rotation.new_key_id)
                if rotation.new_version is not None:
                    # After a restore the new version is labelled previous; either way it is
                    # not current, and a revoked credential must not stay readable.
                    store.retire(rotation.store_path, rotation.new_version)
        except (IssuerError, StoreError) as exc:
            return self._fail(rotation_id, f"rollback failed: {exc}"), False
        detail = {"new_credential": "revoked" if revoke_new else "kept pending", **targets}
        changed = False

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            nonlocal changed
            if r.phase is Phase.ROLLED_BACK:  # another replica got there first
                return
            now = self.clock.now()
            r.record_note(actor=actor, now=now, action="rollback.detail", reason=reason,
                          detail=detail)
            r.rollback(actor=actor, now=now, reason=reason)
            changed = True

        rotation = self._mutate(rotation_id, apply)
        log.warning(
            "rolled back %s; new credential %s", rotation.ref, detail["new_credential"],
            extra=rotation_context(rotation),
        )
        return rotation, changed

    def _reissue(
        self, rotation: Rotation, actor: str, reason: str | None
    ) -> tuple[Rotation, bool]:
        """A hard cutover's rollback: the value before is gone, so issue another replacement,
        make it current and write it to every lane's targets at once; the rotation's new
        credential is retired. A failure pauses the rotation; a retry issues another one."""
        rotation_id = rotation.id
        assert rotation_id is not None
        issuer = self.backends.issuer_for(rotation.secret)
        if issuer.kind in PERSON_WRITES:
            raise RotabotError(
                f"{rotation.ref} is a hard cutover and its {issuer.kind} credential is created "
                "by a person, so rotabot cannot issue another one: create a replacement at the "
                f"provider, write it to the store, then `/rotate start {rotation.secret}`. "
                "Nothing changed"
            )
        store = self.backends.store_for(rotation.secret)
        path = rotation.store_path
        try:
            current = store.describe(path).current
            minted = issuer.mint(store.read(path, current) if current else None)
            if minted.material is None:
                raise IssuerError(f"{issuer.kind} issuer returned no credential")
            try:
                staged = store.write_pending(path, minted.material, expected_current=current)
            except StoreError:
                self._best_effort_revoke(issuer, minted.key_id, rotation)
                raise
            version = store.promote(path, staged)
            if current is not None and current != version:
                store.retire(path, current)  # the replaced value must not stay readable
            written = write_everywhere(self.backends.targets_for(rotation.secret),
                                       rotation.lanes, minted.material,
                                       self._hook_event(rotation, "rollback"))
        except (IssuerError, StoreError, ReloadFailed, TargetWriteFailed, RotabotError) as exc:
            return self._fail(
                rotation_id,
                f"rollback by re-issue failed: {exc}. Resume or roll back again (that issues "
                "another replacement)",
            ), False
        everything = [w for ws in written.values() for w in ws]
        changed = False

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            nonlocal changed
            if r.phase is Phase.ROLLED_BACK:  # another replica got there first
                return
            r.reissued(version=version, key_id=minted.key_id, actor=actor,
                       now=self.clock.now(), reason=reason,
                       detail={"targets": written_json(everything)})
            changed = True

        rotation = self._mutate(rotation_id, apply)
        log.warning("rolled back %s by issuing another credential", rotation.ref,
                    extra=rotation_context(rotation))
        return rotation, changed

    def cancel(self, rotation_id: int, *, actor: str, reason: str | None = None) -> Rotation:
        reason = person_text(reason)
        with self.uow_factory() as uow:
            rotation = uow.rotations.get(rotation_id)
            self._require_admin(uow, rotation, actor, "cancel")
        if rotation.phase is Phase.CANCELLED:
            return rotation
        if rotation.cutover and rotation.prepared_at is not None:
            rotation.cancel(actor=actor, now=self.clock.now())  # raises: the old value is gone
        distributed = [
            c.name
            for c in rotation.consumers.values()
            if step_rank(c.state) >= step_rank(StepState.DISTRIBUTED)
        ]
        if rotation.new_version is not None and distributed:
            raise RotabotError(
                f"{rotation.ref}: {', '.join(distributed)} already received the new credential; "
                f"cancelling would strand them. Use `/rotate rollback {rotation.ref}` instead"
            )
        targets: dict[str, str] = {}
        if rotation.new_version is not None or rotation.new_key_id is not None:
            try:
                targets = self._restore_targets(rotation)
                self.backends.issuer_for(rotation.secret).revoke(rotation.new_key_id)
                if rotation.new_version is not None:
                    self.backends.store_for(rotation.secret).retire(
                        rotation.store_path, rotation.new_version
                    )
            except (IssuerError, StoreError) as exc:
                return self._fail(rotation_id, f"cancelling failed: {exc}")

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            now = self.clock.now()
            if targets:
                r.record_note(actor=actor, now=now, action="cancel.detail", detail=targets)
            r.cancel(actor=actor, now=now, reason=reason)

        return self._mutate(rotation_id, apply)

    def resume(self, rotation_id: int, *, actor: str) -> Rotation:
        with self.uow_factory() as uow:
            rotation = uow.rotations.get(rotation_id)
            self._require_admin(uow, rotation, actor, "resume")
        rotation = self._mutate(
            rotation_id, lambda r, uow: r.resume(actor=actor, now=self.clock.now())
        )
        if rotation.phase is Phase.READY_CHECK:
            return self.prepare(rotation_id, actor=actor)
        if rotation.cutover and rotation.cutover_until is None:
            return self.cut_over(rotation_id)
        if rotation.lane_to_open():
            return self.open_lane(rotation_id)
        return rotation

    # --- lanes and their targets -------------------------------------------------------

    def cut_over(self, rotation_id: int) -> Rotation:
        """A hard cutover, right after the mint (the old value is dead already): make the new
        value current in the store and write it to every lane's targets at once; every owner
        then validates within the cutover window. A failure pauses the rotation (failed,
        resumable) naming the store or target; a retry writes everything again. Idempotent."""
        rotation = self.get(rotation_id)
        if (
            not rotation.cutover
            or rotation.cutover_until is not None
            or rotation.phase is not Phase.DISTRIBUTING
        ):
            return rotation
        if self.claims is not None and not self.claims.claim(rotation_id, OPEN_LANE):
            return rotation  # another process is cutting over right now
        try:
            return self._cut_over(rotation)
        finally:
            if self.claims is not None:
                self.claims.release(rotation_id, OPEN_LANE)

    def _cut_over(self, rotation: Rotation) -> Rotation:
        rotation_id = rotation.id
        assert rotation_id is not None and rotation.new_version is not None
        store = self.backends.store_for(rotation.secret)
        try:
            current = self._make_current(store, rotation.store_path, rotation.old_version,
                                         rotation.new_version)
            new = store.read(rotation.store_path, current)
            written = write_everywhere(self.backends.targets_for(rotation.secret),
                                       rotation.lanes, new, self._hook_event(rotation, "all"))
        except (StoreError, ReloadFailed, TargetWriteFailed, RotabotError) as exc:
            return self._fail(
                rotation_id,
                f"the cutover failed: {exc}. The old value no longer works: fix it, then "
                "resume (every target is written again)",
            )
        writes = {lane: tuple(w.target for w in ws) for lane, ws in written.items()}
        everything = [w for ws in written.values() for w in ws]
        return self._mutate(rotation_id, lambda r, uow: r.cut_over(
            writes, current=current, actor="rotabot", now=self.clock.now(),
            detail={"written": written_json(everything)},
        ))

    @staticmethod
    def _make_current(store: Store, path: str, before: str | None, version: str) -> str:
        """Promote ``version`` unless a previous attempt did (the store's current moved off
        ``before``); returns the version now current."""
        current = store.describe(path).current
        if current != before and current is not None:
            return current
        return store.promote(path, version)

    def open_lane(self, rotation_id: int) -> Rotation:
        """Write the new credential to the targets of the lane whose turn it is; its
        consumers are asked only then. A target that cannot be written pauses the rotation
        (failed, resumable) with the target and the error class named; the targets written
        before it get the previous credential back, so nothing else changed. Idempotent."""
        rotation = self.get(rotation_id)
        lane = rotation.lane_to_open()
        if lane is None:
            return rotation
        if self.claims is not None and not self.claims.claim(rotation_id, OPEN_LANE):
            return rotation  # another process is writing this lane's targets right now
        try:
            return self._open_lane(rotation, lane)
        finally:
            if self.claims is not None:
                self.claims.release(rotation_id, OPEN_LANE)

    def _open_lane(self, rotation: Rotation, lane: str) -> Rotation:
        rotation_id = rotation.id
        assert rotation_id is not None and rotation.new_version is not None
        try:
            targets = list(self.backends.targets_for(rotation.secret).get(lane, ()))
            new, previous = self._materials(rotation)
            written = write_lane(lane, targets, new, previous, self._hook_event(rotation, lane))
        except (StoreError, ReloadFailed, TargetWriteFailed, RotabotError) as exc:
            return self._fail(
                rotation_id,
                f"opening the {lane} lane failed: {exc}. Its consumers were not asked and "
                "nothing else changed: fix it, then resume",
            )
        return self._mutate(rotation_id, lambda r, uow: r.opened_lane(
            lane, [w.target for w in written], actor="rotabot", now=self.clock.now(),
            detail={"written": written_json(written)},
        ))

    def _materials(self, rotation: Rotation) -> tuple[SecretMaterial, SecretMaterial | None]:
        """The new credential and the one before it, read from the store (in memory only)."""
        store = self.backends.store_for(rotation.secret)
        assert rotation.new_version is not None
        new = store.read(rotation.store_path, rotation.new_version)
        previous = (
            store.read(rotation.store_path, rotation.old_version)
            if rotation.old_version is not None
            else None
        )
        return new, previous

    def _restore_targets(self, rotation: Rotation) -> dict[str, str]:
        """Rollback and cancel: every target written gets the previous credential back.
        Returns what to record; raises StoreError naming a target that cannot be written."""
        labels = rotation.written_targets()
        if not labels:
            return {}
        targets, gone = select(self.backends.targets_for(rotation.secret), labels)
        detail: dict[str, str] = {}
        if gone:
            detail["targets_gone"] = ", ".join(gone)  # left the catalog: restore by hand
        if rotation.old_version is None:
            detail["targets_kept"] = ", ".join(labels)  # a first credential: nothing before it
            return detail
        previous = self.backends.store_for(rotation.secret).read(
            rotation.store_path, rotation.old_version
        )
        restored = restore_targets(targets, previous, self._hook_event(rotation, "rollback"))
        detail["targets"] = written_json(restored)
        return detail

    @staticmethod
    def _hook_event(rotation: Rotation, lane: str) -> dict[str, str]:
        return {"secret": rotation.secret, "rotation": rotation.ref, "lane": lane}

    def report_problem(
        self,
        rotation_id: int,
        consumer: str,
        *,
        actor: str,
        description: str,
        action_id: str | None = None,
    ) -> Alert:
        """An owner reports that a consumer fails: it becomes an alert tagged with the
        rotation, which blocks revocation until resolved. ``action_id`` (the modal's view id):
        the same report processed again adds no alert and returns the first one."""
        from bot.domain.failures import classify

        def first(created: Callable[[str], None]) -> Alert:
            rotation = self.get(rotation_id)
            self.authorize_report(rotation, consumer, actor)
            c = rotation.consumer(consumer)
            told = person_text(description)
            if told is None:
                raise RotabotError("say what fails, in a sentence; nothing was reported")
            verdict = classify(message=told)
            now = self.clock.now()
            added: list[Alert] = []

            def apply(r: Rotation, uow: UnitOfWork) -> None:
                # A new object per attempt: a retried write must not reuse the id a rolled
                # back attempt was given.
                added[:] = [uow.alerts.add(Alert(
                    consumer=consumer,
                    secret=rotation.secret,
                    lane=c.lane,
                    failure_class=verdict.failure_class.value,
                    reason=told,
                    first_seen=now,
                    last_seen=now,
                    source=f"reported by {actor}",
                    rotation_id=rotation_id,
                    phase_at_alert=rotation.phase.value,
                    began_during_rotation=True,
                ))]
                r.record_note(
                    actor=actor,
                    now=now,
                    action="alert.reported",
                    reason=told,
                    detail={"consumer": consumer, "alert": added[0].ref, "lane": c.lane,
                            "failure_class": verdict.failure_class.value},
                )
                r.reopen_observation(reason=f"alert on {consumer}", now=now)

            self._mutate(rotation_id, apply)
            alert = added[0]
            assert alert.id is not None
            created(str(alert.id))
            return alert

        def again(result: str) -> Alert:
            log.info("a repeated report on %s was answered with A-%s; no alert was added",
                     consumer, result)
            with self.uow_factory() as uow:
                return uow.alerts.get(int(result))

        return once(self.actions, action_id, first=first, again=again)

    def record_health(
        self,
        rotation_id: int,
        consumer: str,
        *,
        actor: str,
        ok: bool,
        failure_class: str | None,
        reason: str,
        version: str | None = None,
    ) -> Alert | None:
        """Record one health check result of a consumer (an audit event). A failing one
        opens an alert tagged with the rotation, or counts into the open one of the same
        class, so the gate stays closed; a passing one resolves the alerts earlier health
        checks of this consumer opened. Returns the failing check's alert."""
        rotation = self.get(rotation_id)
        c = rotation.consumer(consumer)
        now = self.clock.now()
        source = f"health check of {consumer}"
        outcome: Alert | None = None

        def apply(r: Rotation, uow: UnitOfWork) -> None:
            nonlocal outcome
            detail = {"consumer": consumer, "ok": "yes" if ok else "no"}
            if failure_class:
                detail["failure_class"] = failure_class
            if version:
                detail["version"] = version
            r.record_note(actor=actor, now=now, action="health.checked", reason=reason,
                          detail=detail)
            mine = [
                a for a in uow.alerts.for_secret(r.secret, unresolved_only=True,
                                                 since=r.created_at)
                if a.consumer == consumer and a.rotation_id == rotation_id
                and a.source == source
            ]
            if ok:
                for a in mine:
                    a.status, a.resolved_by = AlertStatus.RESOLVED, actor
                    uow.alerts.save(a)
                return
            same = [a for a in mine if a.failure_class == (failure_class or "unknown")]
            if same:
                assert same[0].id is not None
                alert = uow.alerts.add_count(same[0].id, 1, now)
                alert.reason = reason
                uow.alerts.save(alert)
            else:
                alert = uow.alerts.add(Alert(
                    consumer=consumer, secret=r.secret, lane=c.lane,
                    failure_class=failure_class or "unknown", reason=reason,
                    first_seen=now, last_seen=now, source=source, rotation_id=rotation_id,
                    phase_at_alert=r.phase.value, began_during_rotation=True,
                ))
            r.reopen_observation(reason=f"health check of {consumer} failed", now=now)
            outcome = alert

        self._mutate(rotation_id, apply)
        return outcome

    def attach_message(self, rotation_id: int, channel: str, ts: str) -> None:
        """Remember where the rotation's message lives (no listeners: it is not a change
        anybody needs to hear about)."""

        def apply(rotation: Rotation, uow: UnitOfWork) -> None:
            rotation.channel, rotation.message_ts = channel, ts
            rotation.record_note(actor="rotabot", now=self.clock.now(), action="message.posted",
                                 detail={"channel": channel, "ts": ts})

        self._write(rotation_id, apply)

    # --- reading -----------------------------------------------------------------------

    def get(self, rotation_id: int) -> Rotation:
        with self.uow_factory() as uow:
            return uow.rotations.get(rotation_id)

    def active(self) -> list[Rotation]:
        with self.uow_factory() as uow:
            return uow.rotations.list_active()

    def history(self, secret: str, limit: int = 10) -> list[Rotation]:
        self.catalog.secret(secret)  # unknown secret: a clear error with suggestions
        with self.uow_factory() as uow:
            return uow.rotations.history(secret, limit)

    def recent_alerts(self, limit: int = 5) -> list[Alert]:
        with self.uow_factory() as uow:
            return uow.alerts.recent(limit)

    # --- plumbing ----------------------------------------------------------------------

    def _mutate(
        self, rotation_id: int, apply: Callable[[Rotation, UnitOfWork], object]
    ) -> Rotation:
        """Load, apply, commit, then tell listeners whose turn just began and what the thread
        should hear of the change."""
        rotation, before, revision, events = self._write_events(rotation_id, apply)
        self.announce(rotation, before, revision, events)
        return rotation

    def announce(
        self,
        rotation: Rotation,
        before: set[tuple[str, StepState]],
        revision: int,
        events: list[AuditEvent],
    ) -> None:
        """After a change of ``rotation`` committed (loaded at ``revision`` with pending steps
        ``before``, recording ``events``): tell the thread and the change listeners. Callers
        that commit a rotation in a transaction of their own (the alert group commit) call
        this once it committed."""
        if rotation.revision != revision:
            receipts = receipts_for(events, ready_to_switch=rotation.ready_to_switch())
            # The thread reads in order: what happened, then whose turn it is now. Without a
            # message yet, the change listeners post it first (receipts go in its thread).
            told = rotation.message_ts is not None
            if told:
                self._tell(rotation, receipts)
            self._notify(
                rotation, [(c, s) for c, s in rotation.pending_steps() if (c.name, s) not in before]
            )
            if not told:
                self._tell(rotation, receipts)

    def _tell(self, rotation: Rotation, receipts: list[Receipt]) -> None:
        if receipts:
            for listener in self.on_receipts:
                listener(rotation, receipts)

    def _write(
        self, rotation_id: int, apply: Callable[[Rotation, UnitOfWork], object]
    ) -> tuple[Rotation, set[tuple[str, StepState]], int]:
        """Load, apply, commit; a concurrent writer makes us reload and apply again.
        Returns the rotation, its pending steps before, and its revision before."""
        rotation, before, revision, _ = self._write_events(rotation_id, apply)
        return rotation, before, revision

    def _write_events(
        self, rotation_id: int, apply: Callable[[Rotation, UnitOfWork], object]
    ) -> tuple[Rotation, set[tuple[str, StepState]], int, list[AuditEvent]]:
        """As _write, plus the audit events the committed change recorded."""
        with self._locks_guard:
            write_lock = self._write_locks.setdefault(rotation_id, threading.RLock())
        # Another replica can still write meanwhile: the revision guard and retries stay.
        with write_lock:
            for attempt in range(_RETRIES):
                try:
                    with self.uow_factory() as uow:
                        rotation = uow.rotations.get(rotation_id)
                        before = {(c.name, s) for c, s in rotation.pending_steps()}
                        revision = rotation.revision
                        apply(rotation, uow)
                        events = list(rotation.events)  # commit clears them
                        uow.commit()
                    return rotation, before, revision, events
                except ChangedMeanwhile:
                    if attempt == _RETRIES - 1:
                        raise
        raise AssertionError("unreachable: the loop returns or raises")

    def _notify(self, rotation: Rotation, turns: list[Turn]) -> None:
        for listener in self.on_change:
            listener(rotation, turns)

    def _fail(self, rotation_id: int, reason: str, *, paused: bool = False) -> Rotation:
        note = " (paused: someone else wrote the secret; check, then resume)" if paused else ""
        rotation = self._mutate(
            rotation_id, lambda r, uow: r.fail(reason=reason + note, now=self.clock.now())
        )
        # The reason is built from store/issuer errors, which name paths and causes, not values.
        log.warning("%s failed: %s", rotation.ref, reason, extra=rotation_context(rotation))
        return rotation


def lane_target_labels(spec: SecretSpec) -> dict[str, tuple[str, ...]]:
    """Lane -> the labels of its distribution targets, as the catalog names them."""
    return {
        lane: tuple(target_label(t) for t in targets)
        for lane, targets in spec.lane_targets().items()
    }


def reminder_settings(rotation: Rotation, settings: EffectiveSettings) -> EffectiveSettings:
    """The settings the reminder timer uses for this rotation: an urgent one reminds and
    escalates URGENT_FACTOR times sooner."""
    if not rotation.urgent:
        return settings
    return replace(
        settings,
        remind_after=shortened(settings.remind_after, True),
        escalate_after=shortened(settings.escalate_after, True),
    )
