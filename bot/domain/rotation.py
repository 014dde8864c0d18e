"""The Rotation aggregate: one run for one secret, and the only place its state changes.

Every change goes through a method that checks the transition table and records an
AuditEvent in ``rotation.events``; storage writes those events in the same transaction as
the state, so there is no state change without its audit row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.audit import AuditEvent
from bot.domain.durations import format_duration
from bot.domain.errors import GateClosed, OutOfOrder, RotabotError
from bot.domain.lifecycle import (
    ACTIVE_PHASES,
    PHASE_STATE,
    SWITCHED_PHASES,
    TERMINAL_PHASES,
    IllegalTransition,
    Phase,
    StepState,
    check_phase_transition,
    check_step_transition,
    state_words,
)


class GateVerdict(Protocol):
    """What a rotation needs of the revocation gate (``bot.domain.gate`` computes it)."""

    @property
    def open(self) -> bool: ...

    @property
    def unmet(self) -> tuple[str, ...]: ...


# The order a consumer's steps go in; FAILED sits outside it.
STEP_ORDER: tuple[StepState, ...] = (
    StepState.WAITING,
    StepState.DISTRIBUTED,
    StepState.VALIDATED,
    StepState.SIGNED_OFF,
)


def step_rank(state: StepState) -> int:
    return STEP_ORDER.index(state) if state in STEP_ORDER else -1


@dataclass
class ConsumerProgress:
    name: str
    lane: str
    owner: str
    reload: str
    state: StepState = StepState.WAITING
    updated_at: datetime | None = None
    updated_by: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class ConsumerPlan:
    """What a rotation needs to know of a catalog consumer."""

    name: str
    lane: str
    owner: str
    reload: str


@dataclass
class Rotation:
    secret: str
    lanes: tuple[str, ...]
    consumers: dict[str, ConsumerProgress]
    overlap: timedelta
    observe: timedelta
    created_at: datetime
    started_by: str
    store_path: str = ""
    id: int | None = None
    phase: Phase = Phase.READY_CHECK
    prepared_at: datetime | None = None
    switched_at: datetime | None = None
    observe_until: datetime | None = None
    overlap_until: datetime | None = None
    finished_at: datetime | None = None
    failed_from: Phase | None = None
    failure_reason: str | None = None
    # Credential references: the version consumers used before (old) and the new one.
    old_version: str | None = None
    new_version: str | None = None
    old_key_id: str | None = None
    new_key_id: str | None = None
    channel: str | None = None
    message_ts: str | None = None
    urgent: bool = False
    auto_revoke: bool = False
    # Lanes with distribution targets (fixed when the rotation starts): such a lane opens only
    # once rotabot wrote the new credential to its targets. lane -> the targets written there.
    gated_lanes: tuple[str, ...] = ()
    lane_writes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # A hard cutover (the platform holds one valid value): the window every owner validates
    # in once the new value is out, and when it ends (set at the cutover). None: an overlap.
    cutover_window: timedelta | None = None
    cutover_until: datetime | None = None
    revision: int = 0  # optimistic lock, owned by storage
    events: list[AuditEvent] = field(default_factory=list)

    # --- construction -----------------------------------------------------------------

    @classmethod
    def begin(
        cls,
        *,
        secret: str,
        lanes: Sequence[str],
        consumers: Iterable[ConsumerPlan],
        overlap: timedelta,
        observe: timedelta,
        store_path: str,
        actor: str,
        now: datetime,
        urgent: bool = False,
        auto_revoke: bool = False,
        gated_lanes: Sequence[str] = (),
        cutover_window: timedelta | None = None,
    ) -> Rotation:
        progress = {
            c.name: ConsumerProgress(name=c.name, lane=c.lane, owner=c.owner, reload=c.reload)
            for c in consumers
        }
        if not progress:
            raise RotabotError(f"{secret} has no consumers in the catalog; nothing to rotate")
        known = list(lanes)
        for c in progress.values():
            if c.lane not in known:
                known.append(c.lane)  # unlisted lanes validate last (readiness warns)
        rotation = cls(
            secret=secret,
            lanes=tuple(known),
            consumers=progress,
            overlap=overlap,
            observe=observe,
            created_at=now,
            started_by=actor,
            store_path=store_path,
            urgent=urgent,
            auto_revoke=auto_revoke,
            gated_lanes=tuple(lane for lane in known if lane in gated_lanes),
            cutover_window=cutover_window,
        )
        detail = {"overlap": str(overlap), "observe": str(observe)}
        if cutover_window is not None:
            detail = {"cutover_window": str(cutover_window), "observe": str(observe)}
        rotation._record(
            now, actor, "rotation.started", after=Phase.READY_CHECK.value, detail=detail
        )
        return rotation

    # --- reading --------------------------------------------------------------------

    @property
    def ref(self) -> str:
        return f"R-{self.id}" if self.id is not None else f"R-?({self.secret})"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def cutover(self) -> bool:
        """A hard cutover: no overlap, every lane at once, rollback by re-issue."""
        return self.cutover_window is not None

    def cutover_pending(self) -> list[ConsumerProgress]:
        """During a cutover, the consumers not validated yet (their owners are late once
        ``cutover_until`` passed)."""
        if self.cutover_until is None or self.phase not in (
            Phase.DISTRIBUTING, Phase.VALIDATING
        ):
            return []
        return [
            c for c in self.consumers_in_order()
            if step_rank(c.state) < step_rank(StepState.VALIDATED)
        ]

    def consumers_in_order(self) -> list[ConsumerProgress]:
        return sorted(self.consumers.values(), key=lambda c: (self.lanes.index(c.lane), c.name))

    def consumers_in_lane(self, lane: str) -> list[ConsumerProgress]:
        return [c for c in self.consumers_in_order() if c.lane == lane]

    def active_lane(self) -> str | None:
        """The lowest lane with a consumer not yet validated; higher lanes wait for it."""
        for lane in self.lanes:
            if any(
                step_rank(c.state) < step_rank(StepState.VALIDATED)
                for c in self.consumers_in_lane(lane)
            ):
                return lane
        return None

    def lane_open(self, lane: str) -> bool:
        """A lane without targets is open as soon as its turn comes; one with targets once
        rotabot wrote the new credential there. In a cutover every lane opens at once."""
        if self.cutover:
            return self.cutover_until is not None
        return lane not in self.gated_lanes or lane in self.lane_writes

    def lane_to_open(self) -> str | None:
        """The lane whose turn it is but whose targets do not hold the new credential yet."""
        if self.cutover or self.phase not in (Phase.DISTRIBUTING, Phase.VALIDATING):
            return None  # a cutover writes every lane at once (cut_over)
        lane = self.active_lane()
        return lane if lane is not None and not self.lane_open(lane) else None

    def written_targets(self) -> list[str]:
        """Every target written with the new credential, lane by lane."""
        return [t for lane in self.lanes for t in self.lane_writes.get(lane, ())]

    def consumer(self, name: str) -> ConsumerProgress:
        try:
            return self.consumers[name]
        except KeyError:
            raise RotabotError(f"{self.ref} has no consumer {name!r}") from None

    def ready_to_switch(self) -> bool:
        return self.phase is Phase.VALIDATING and all(
            step_rank(c.state) >= step_rank(StepState.VALIDATED) for c in self.consumers.values()
        )

    def pending_steps(self) -> list[tuple[ConsumerProgress, StepState]]:
        """(consumer, the step its owner should click next) for consumers whose turn it is."""
        out: list[tuple[ConsumerProgress, StepState]] = []
        lane = self.active_lane()
        lane_rank = self.lanes.index(lane) if lane is not None else len(self.lanes)
        if self.cutover:
            lane_rank = len(self.lanes)  # the old value is gone everywhere: no lane waits
        for c in self.consumers_in_order():
            if c.state is StepState.FAILED or c.state is StepState.SIGNED_OFF:
                continue
            if c.state is StepState.VALIDATED:
                # Signing off means "OK to revoke the old credential": asked after the switch.
                if self.phase in SWITCHED_PHASES:
                    out.append((c, StepState.SIGNED_OFF))
                continue
            if (
                self.phase in (Phase.DISTRIBUTING, Phase.VALIDATING)
                and self.lanes.index(c.lane) <= lane_rank
                and self.lane_open(c.lane)
            ):
                out.append((c, STEP_ORDER[step_rank(c.state) + 1]))
        return out

    # --- phase changes --------------------------------------------------------------

    def prepared(
        self,
        *,
        old_version: str | None,
        new_version: str,
        old_key_id: str | None,
        new_key_id: str | None,
        actor: str,
        now: datetime,
    ) -> None:
        """The new credential exists beside the old one (labelled pending)."""
        self._move(Phase.PREPARED, actor, now)
        self.old_version, self.new_version = old_version, new_version
        self.old_key_id, self.new_key_id = old_key_id, new_key_id
        self.prepared_at = now
        # A cutover has no overlap: nothing to warn about before its end.
        self.overlap_until = None if self.cutover else now + self.overlap
        self._record(
            now,
            actor,
            "credential.prepared",
            after=new_version,
            detail={"old_version": old_version or "", "new_version": new_version},
        )
        self._move(Phase.DISTRIBUTING, actor, now)

    def switch(self, *, actor: str, now: datetime, current: str | None = None) -> None:
        """Make the new credential current; the old one stays valid as previous. ``current``:
        the version the store made current, when it is not the pending reference (a store
        that staged the pending credential elsewhere copies it onto the secret's path)."""
        if not self.ready_to_switch():
            waiting = [
                c.name
                for c in self.consumers_in_order()
                if step_rank(c.state) < step_rank(StepState.VALIDATED)
            ]
            raise OutOfOrder(
                f"{self.ref} cannot switch yet: not validated: {', '.join(waiting) or 'none'}"
                if self.phase is Phase.VALIDATING or self.phase is Phase.DISTRIBUTING
                else f"{self.ref} cannot switch while {self.phase.value}"
            )
        self._move(Phase.SWITCHED, actor, now)
        if current is not None and current != self.new_version:
            self._record(now, actor, "credential.promoted", before=self.new_version, after=current,
                         detail={"staged": self.new_version or "", "new_version": current})
            self.new_version = current
        self.switched_at = now
        self._move(Phase.OBSERVING, actor, now)
        self.observe_until = now + self.observe

    def opened_lane(
        self,
        lane: str,
        targets: Sequence[str],
        *,
        actor: str,
        now: datetime,
        detail: dict[str, str] | None = None,
    ) -> bool:
        """rotabot wrote the new credential to every target of ``lane`` (``detail``: which
        versions, what the reload hooks said). False when the lane was open already."""
        if self.lane_to_open() != lane:
            return False
        self.lane_writes[lane] = tuple(targets)
        self._record(now, actor, "lane.opened", after=lane, detail={"lane": lane, **(detail or {})})
        return True

    def cut_over(
        self,
        writes: dict[str, tuple[str, ...]],
        *,
        current: str,
        actor: str,
        now: datetime,
        detail: dict[str, str] | None = None,
    ) -> bool:
        """A hard cutover: the new value is current in the store (the old one died at mint)
        and rotabot wrote it to every lane's targets (``writes``) at once; every owner now
        validates before ``cutover_until``. False when it was done already."""
        if not self.cutover:
            raise RotabotError(f"{self.ref} overlaps: its lanes open one by one")
        if self.cutover_until is not None:
            return False
        if self.phase is not Phase.DISTRIBUTING:
            raise IllegalTransition("rotation", self.phase.value, "cutover")
        assert self.cutover_window is not None
        if current != self.new_version:
            self._record(now, actor, "credential.promoted", before=self.new_version,
                         after=current,
                         detail={"staged": self.new_version or "", "new_version": current})
            self.new_version = current
        self.lane_writes = dict(writes)
        self.cutover_until = now + self.cutover_window
        self._record(
            now, actor, "cutover.written", after=current,
            detail={"window": format_duration(self.cutover_window),
                    "until": self.cutover_until.isoformat(), **(detail or {})},
        )
        return True

    def add_consumer(
        self,
        consumer: ConsumerPlan,
        *,
        actor: str,
        now: datetime,
        gated: bool = False,
        written: Sequence[str] = (),
        detail: dict[str, str] | None = None,
    ) -> None:
        """An admin adds a consumer the catalog gained since the start, as a waiting step in
        its lane (a lane new to the rotation validates last). ``gated``: it brings targets to
        a lane none of whose targets were written yet, so the lane opens only once they are;
        ``written``: its targets rotabot just wrote in a lane already open."""
        if self.terminal:
            raise RotabotError(
                f"{self.ref} has ended ({PHASE_STATE[self.phase]}): no consumer can join it; "
                "nothing changed. The next rotation of the secret includes every catalog "
                "consumer")
        # Also failed after the switch; a hard cutover made it current when it cut over.
        if self.switched_at is not None or self.cutover_until is not None:
            done = "cut over" if self.cutover else "switched"
            raise RotabotError(
                f"{self.ref} has {done} already: the new credential is current, so "
                f"{consumer.name} reads it now and its owner should check it works; a step "
                "cannot join after the switch, nothing changed")
        if consumer.name in self.consumers:
            raise RotabotError(
                f"{consumer.name} is already in {self.ref} "
                f"({state_words(self.consumers[consumer.name].state, step=True)}); nothing changed")
        self.consumers[consumer.name] = ConsumerProgress(
            name=consumer.name, lane=consumer.lane, owner=consumer.owner, reload=consumer.reload)
        if consumer.lane not in self.lanes:
            self.lanes = (*self.lanes, consumer.lane)
        if gated and consumer.lane not in self.lane_writes:
            self.gated_lanes = tuple(
                lane for lane in self.lanes if lane in {*self.gated_lanes, consumer.lane})
        if written:
            self.lane_writes[consumer.lane] = (
                *self.lane_writes.get(consumer.lane, ()), *written)
        self._record(now, actor, "consumer.added", consumer=consumer.name, detail={
            "consumer": consumer.name, "lane": consumer.lane, "owner": consumer.owner,
            **(detail or {})})

    def open_gate(self, gate: GateVerdict, *, now: datetime, actor: str = "rotabot") -> bool:
        """Observation elapsed and the gate is open: the old credential may be revoked."""
        if self.phase is Phase.OBSERVING and gate.open:
            self._move(Phase.REVOCABLE, actor, now)
            return True
        return False

    def reopen_observation(self, *, reason: str, now: datetime, actor: str = "rotabot") -> None:
        """New evidence (an alert) arrived after the gate opened."""
        if self.phase is Phase.REVOCABLE:
            self._move(Phase.OBSERVING, actor, now, reason=reason)

    def revoke(
        self,
        gate: GateVerdict,
        *,
        actor: str,
        now: datetime,
        override_reason: str | None = None,
    ) -> None:
        """Revoke the old credential: only with an open gate, or break-glass with a reason."""
        if self.phase not in (Phase.OBSERVING, Phase.REVOCABLE):
            raise IllegalTransition("rotation", self.phase.value, Phase.REVOKED.value)
        if not gate.open:
            if not (override_reason and override_reason.strip()):
                raise GateClosed(self.ref, gate.unmet)
            self._record(
                now,
                actor,
                "revoke.override",
                reason=override_reason.strip(),
                detail={"unmet": " | ".join(gate.unmet)},
            )
        self._move(Phase.REVOKED, actor, now, reason=override_reason)
        self.finished_at = now

    def reissued(
        self,
        *,
        version: str,
        key_id: str | None,
        actor: str,
        now: datetime,
        reason: str | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        """A cutover's rollback: the previous value is gone, so another replacement was
        issued, made current and written to every target. It replaces the rotation's new
        credential, which is retired; the rotation ends rolled back."""
        if not self.cutover or self.prepared_at is None:
            raise RotabotError(f"{self.ref} is not a hard cutover past its mint")
        self._record(
            now, actor, "credential.reissued", before=self.new_version, after=version,
            reason=reason,
            detail={"replaced": self.new_version or "", "new_version": version,
                    **(detail or {})},
        )
        self.new_version, self.new_key_id = version, key_id
        self.rollback(actor=actor, now=now, reason=reason)

    def rollback(self, *, actor: str, now: datetime, reason: str | None = None) -> None:
        if self.phase is Phase.REVOKED:
            raise RotabotError(
                f"{self.ref} already revoked the old credential: rollback now means an "
                f"emergency re-rotation (`/rotate start {self.secret} --urgent`)"
            )
        self._move(Phase.ROLLED_BACK, actor, now, reason=reason)
        self.finished_at = now

    def cancel(self, *, actor: str, now: datetime, reason: str | None = None) -> None:
        if self.cutover and self.prepared_at is not None:
            raise RotabotError(
                f"{self.ref} is a hard cutover: the old value stopped working at mint, so there is "
                f"nothing to go back to. Use `/rotate rollback {self.ref}` to issue another "
                "replacement"
            )
        if self.phase in SWITCHED_PHASES:
            raise RotabotError(
                f"{self.ref} has switched to the new credential: cancel is no longer possible, "
                f"use `/rotate rollback {self.ref}`"
            )
        self._move(Phase.CANCELLED, actor, now, reason=reason)
        self.finished_at = now

    def fail(self, *, reason: str, now: datetime, actor: str = "rotabot") -> None:
        """A step failed; the rotation waits in `failed` to be resumed, rolled back or cancelled."""
        if self.phase is Phase.FAILED:
            self.failure_reason = reason
            self._record(now, actor, "failure", reason=reason)
            return
        failed_from = self.phase
        self._move(Phase.FAILED, actor, now, reason=reason)
        self.failed_from = failed_from
        self.failure_reason = reason

    def resume(self, *, actor: str, now: datetime) -> Phase:
        if self.phase is not Phase.FAILED or self.failed_from is None:
            raise IllegalTransition("rotation", self.phase.value, "resume")
        target = self.failed_from
        self._move(target, actor, now)
        self.failed_from = None
        self.failure_reason = None
        return target

    # --- consumer steps -------------------------------------------------------------

    def mark_step(
        self,
        consumer: str,
        target: StepState,
        *,
        actor: str,
        now: datetime,
        note: str | None = None,
    ) -> bool:
        """Move one consumer forward. Returns False when it is already there (a double
        click or replay), so each step is applied once."""
        c = self.consumer(consumer)
        if c.state is target:
            return False
        if target is StepState.FAILED:
            if self.phase not in ACTIVE_PHASES:
                raise IllegalTransition("rotation", self.phase.value, "report a problem")
        elif target is StepState.SIGNED_OFF:
            # Owners are asked after the switch, but one who validated may sign off early.
            if self.phase not in (Phase.VALIDATING, *SWITCHED_PHASES):
                raise IllegalTransition(f"consumer {consumer}", self.phase.value, target.value)
        elif target is StepState.WAITING:
            if self.phase not in (Phase.DISTRIBUTING, Phase.VALIDATING):
                raise IllegalTransition(f"consumer {consumer}", self.phase.value, target.value)
        else:
            if self.phase not in (Phase.DISTRIBUTING, Phase.VALIDATING):
                raise IllegalTransition(f"consumer {consumer}", c.state.value, target.value)
            lane = self.active_lane()
            if (
                not self.cutover
                and lane is not None
                and self.lanes.index(c.lane) > self.lanes.index(lane)
            ):
                raise OutOfOrder(
                    f"{consumer} ({c.lane}) waits until every {lane} consumer is validated"
                )
            if not self.lane_open(c.lane):
                raise OutOfOrder(
                    f"{consumer} ({c.lane}) waits until rotabot has written the new credential "
                    f"to the {c.lane} lane's targets"
                )
        check_step_transition(c.state, target, consumer)
        before = c.state
        c.state, c.updated_at, c.updated_by = target, now, actor
        # A Distributed or Validated step's note is its evidence: a click without any must not
        # keep the evidence of the step before it.
        if note is not None or target in (StepState.DISTRIBUTED, StepState.VALIDATED):
            c.note = note
        self._record(
            now,
            actor,
            "step",
            consumer=consumer,
            before=before.value,
            after=target.value,
            reason=note,
        )
        self._advance_after_step(actor, now)
        return True

    def _advance_after_step(self, actor: str, now: datetime) -> None:
        if self.phase is Phase.DISTRIBUTING and all(
            step_rank(c.state) >= step_rank(StepState.DISTRIBUTED) for c in self.consumers.values()
        ):
            self._move(Phase.VALIDATING, actor, now)

    # --- audit ----------------------------------------------------------------------

    def record_refusal(
        self, *, actor: str, now: datetime, action: str, why: str, consumer: str | None = None
    ) -> None:
        """A click or command that was refused still leaves a trace."""
        self._record(
            now, actor, "refused", consumer=consumer, reason=why, detail={"attempted": action}
        )

    def record_note(
        self,
        *,
        actor: str,
        now: datetime,
        action: str,
        reason: str | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        self._record(now, actor, action, reason=reason, detail=detail or {})

    def _move(self, target: Phase, actor: str, now: datetime, reason: str | None = None) -> None:
        check_phase_transition(self.phase, target)
        before = self.phase
        self.phase = target
        self._record(now, actor, "phase", before=before.value, after=target.value, reason=reason)

    def _record(
        self,
        now: datetime,
        actor: str,
        action: str,
        *,
        consumer: str | None = None,
        before: str | None = None,
        after: str | None = None,
        reason: str | None = None,
        detail: dict[str, str] | None = None,
    ) -> None:
        self.events.append(
            AuditEvent(
                at=now,
                actor=actor,
                action=action,
                secret=self.secret,
                rotation_id=self.id,
                consumer=consumer,
                before=before,
                after=after,
                reason=reason,
                detail=detail or {},
            )
        )
