"""Rotation and consumer-step state machines as explicit transition tables.

Read one arm at a time: each phase lists the phases it may move to. Anything not listed
raises ``IllegalTransition``; nothing is ever silently ignored.
"""

from __future__ import annotations

from enum import StrEnum


class Phase(StrEnum):
    READY_CHECK = "ready-check"
    PREPARED = "prepared"
    DISTRIBUTING = "distributing"
    VALIDATING = "validating"
    SWITCHED = "switched"
    OBSERVING = "observing"
    REVOCABLE = "revocable"
    REVOKED = "revoked"
    ROLLED_BACK = "rolled-back"
    CANCELLED = "cancelled"
    FAILED = "failed"


class StepState(StrEnum):
    WAITING = "waiting"
    DISTRIBUTED = "distributed"
    VALIDATED = "validated"
    SIGNED_OFF = "signed-off"
    FAILED = "failed"


# The states in words for sentences people read ("R-2 is rolled back", "signed off by"):
# the enum values are identifiers for storage and code, not prose.
PHASE_STATE: dict[Phase, str] = {
    Phase.READY_CHECK: "waiting for the new credential",
    Phase.PREPARED: "prepared",
    Phase.DISTRIBUTING: "distributing",
    Phase.VALIDATING: "validating",
    Phase.SWITCHED: "switched",
    Phase.OBSERVING: "observing",
    Phase.REVOCABLE: "ready to revoke",
    Phase.REVOKED: "finished (old credential revoked)",
    Phase.ROLLED_BACK: "rolled back",
    Phase.CANCELLED: "cancelled",
    Phase.FAILED: "paused by a failure",
}
STEP_STATE: dict[StepState, str] = {
    StepState.WAITING: "waiting",
    StepState.DISTRIBUTED: "distributed",
    StepState.VALIDATED: "validated",
    StepState.SIGNED_OFF: "signed off",
    StepState.FAILED: "failed",
}


def state_words(value: str, *, step: bool = False) -> str:
    """A phase (or, with ``step``, a consumer step) value in words; anything else as it is."""
    try:
        return STEP_STATE[StepState(value)] if step else PHASE_STATE[Phase(value)]
    except ValueError:
        return value


class IllegalTransition(Exception):
    """A state change that the lifecycle does not allow."""

    def __init__(self, what: str, current: str, target: str) -> None:
        step = what.startswith("consumer ")
        super().__init__(
            f"{what} cannot go from {state_words(current, step=step)} to "
            f"{state_words(target, step=step)}; "
            "nothing changed"
        )
        self.what = what
        self.current = current
        self.target = target


_P = Phase

# The new credential exists from `prepared` on, so every phase from there until revocation
# can roll back; before `switched` a rotation can also simply be cancelled.
ROTATION_TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    _P.READY_CHECK: frozenset({_P.PREPARED, _P.CANCELLED, _P.FAILED}),
    _P.PREPARED: frozenset({_P.DISTRIBUTING, _P.ROLLED_BACK, _P.CANCELLED, _P.FAILED}),
    _P.DISTRIBUTING: frozenset({_P.VALIDATING, _P.ROLLED_BACK, _P.CANCELLED, _P.FAILED}),
    _P.VALIDATING: frozenset({_P.SWITCHED, _P.ROLLED_BACK, _P.CANCELLED, _P.FAILED}),
    _P.SWITCHED: frozenset({_P.OBSERVING, _P.ROLLED_BACK, _P.FAILED}),
    _P.OBSERVING: frozenset({_P.REVOCABLE, _P.REVOKED, _P.ROLLED_BACK, _P.FAILED}),
    # An alert raised after the gate opened sends the rotation back to observing.
    _P.REVOCABLE: frozenset({_P.REVOKED, _P.OBSERVING, _P.ROLLED_BACK, _P.FAILED}),
    # `failed` is resumable: back to the phase it failed from, or out by rollback/cancel.
    _P.FAILED: frozenset(
        {
            _P.READY_CHECK,
            _P.PREPARED,
            _P.DISTRIBUTING,
            _P.VALIDATING,
            _P.SWITCHED,
            _P.OBSERVING,
            _P.REVOCABLE,
            _P.ROLLED_BACK,
            _P.CANCELLED,
        }
    ),
    _P.REVOKED: frozenset(),
    _P.ROLLED_BACK: frozenset(),
    _P.CANCELLED: frozenset(),
}

TERMINAL_PHASES: frozenset[Phase] = frozenset({_P.REVOKED, _P.ROLLED_BACK, _P.CANCELLED})
# Phases in which a rotation holds two credentials and could be rolled back.
ACTIVE_PHASES: frozenset[Phase] = frozenset(
    {
        _P.PREPARED,
        _P.DISTRIBUTING,
        _P.VALIDATING,
        _P.SWITCHED,
        _P.OBSERVING,
        _P.REVOCABLE,
        _P.FAILED,
    }
)
# Phases after the switch: consumers are on the new credential, `previous` is the old one.
SWITCHED_PHASES: frozenset[Phase] = frozenset({_P.SWITCHED, _P.OBSERVING, _P.REVOCABLE})

_S = StepState

STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    _S.WAITING: frozenset({_S.DISTRIBUTED, _S.FAILED}),
    _S.DISTRIBUTED: frozenset({_S.VALIDATED, _S.FAILED}),
    _S.VALIDATED: frozenset({_S.SIGNED_OFF, _S.FAILED}),
    _S.SIGNED_OFF: frozenset(),
    # A failed consumer starts over once its owner has fixed it.
    _S.FAILED: frozenset({_S.WAITING}),
}


def check_phase_transition(current: Phase, target: Phase) -> None:
    if target not in ROTATION_TRANSITIONS[current]:
        raise IllegalTransition("rotation", current.value, target.value)


def check_step_transition(current: StepState, target: StepState, consumer: str) -> None:
    if target not in STEP_TRANSITIONS[current]:
        raise IllegalTransition(f"consumer {consumer}", current.value, target.value)
