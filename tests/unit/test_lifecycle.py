"""The transition tables: exactly the moves DESIGN.md allows, every other one refused in words."""

from __future__ import annotations

import itertools

import pytest

from bot.domain.lifecycle import (
    PHASE_STATE,
    ROTATION_TRANSITIONS,
    STEP_STATE,
    STEP_TRANSITIONS,
    TERMINAL_PHASES,
    IllegalTransition,
    Phase,
    StepState,
    check_phase_transition,
    check_step_transition,
)

P, S = Phase, StepState

# Written out from DESIGN.md independently of the product table, so that adding or dropping an
# edge in bot/domain/lifecycle.py fails here.
_BEFORE_SWITCH = (P.PREPARED, P.DISTRIBUTING, P.VALIDATING)
EXPECTED_PHASES: dict[Phase, set[Phase]] = {
    P.READY_CHECK: {P.PREPARED, P.CANCELLED, P.FAILED},
    P.PREPARED: {P.DISTRIBUTING, P.ROLLED_BACK, P.CANCELLED, P.FAILED},
    P.DISTRIBUTING: {P.VALIDATING, P.ROLLED_BACK, P.CANCELLED, P.FAILED},
    P.VALIDATING: {P.SWITCHED, P.ROLLED_BACK, P.CANCELLED, P.FAILED},
    P.SWITCHED: {P.OBSERVING, P.ROLLED_BACK, P.FAILED},
    P.OBSERVING: {P.REVOCABLE, P.REVOKED, P.ROLLED_BACK, P.FAILED},
    P.REVOCABLE: {P.REVOKED, P.OBSERVING, P.ROLLED_BACK, P.FAILED},
    P.FAILED: {P.READY_CHECK, *_BEFORE_SWITCH, P.SWITCHED, P.OBSERVING, P.REVOCABLE,
               P.ROLLED_BACK, P.CANCELLED},
    P.REVOKED: set(),
    P.ROLLED_BACK: set(),
    P.CANCELLED: set(),
}
EXPECTED_STEPS: dict[StepState, set[StepState]] = {
    S.WAITING: {S.DISTRIBUTED, S.FAILED},
    S.DISTRIBUTED: {S.VALIDATED, S.FAILED},
    S.VALIDATED: {S.SIGNED_OFF, S.FAILED},
    S.SIGNED_OFF: set(),
    S.FAILED: {S.WAITING},
}

PHASE_PAIRS = list(itertools.product(Phase, Phase))
STEP_PAIRS = list(itertools.product(StepState, StepState))


def test_tables_cover_every_state() -> None:
    assert set(ROTATION_TRANSITIONS) == set(Phase)
    assert set(STEP_TRANSITIONS) == set(StepState)


def test_rotation_table_is_the_designed_one() -> None:
    assert {p: set(t) for p, t in ROTATION_TRANSITIONS.items()} == EXPECTED_PHASES


def test_step_table_is_the_designed_one() -> None:
    assert {s: set(t) for s, t in STEP_TRANSITIONS.items()} == EXPECTED_STEPS


@pytest.mark.parametrize(("current", "target"),
                         [p for p in PHASE_PAIRS if p[1] not in EXPECTED_PHASES[p[0]]],
                         ids=lambda p: p.value)
def test_phase_move_outside_the_table_raises_in_words(current: Phase, target: Phase) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_phase_transition(current, target)
    assert str(info.value) == (
        f"rotation cannot go from {PHASE_STATE[current]} to {PHASE_STATE[target]}; "
        "nothing changed")
    assert (info.value.what, info.value.current, info.value.target) == (
        "rotation", current.value, target.value)


@pytest.mark.parametrize(("current", "target"),
                         [p for p in PHASE_PAIRS if p[1] in EXPECTED_PHASES[p[0]]],
                         ids=lambda p: p.value)
def test_phase_move_in_the_table_is_allowed(current: Phase, target: Phase) -> None:
    check_phase_transition(current, target)


@pytest.mark.parametrize("phase", sorted(TERMINAL_PHASES))
def test_terminal_phases_have_no_exit(phase: Phase) -> None:
    assert ROTATION_TRANSITIONS[phase] == frozenset()
    for target in Phase:
        with pytest.raises(IllegalTransition):
            check_phase_transition(phase, target)


def test_terminal_phases_are_revoked_rolled_back_and_cancelled() -> None:
    assert {P.REVOKED, P.ROLLED_BACK, P.CANCELLED} == TERMINAL_PHASES


def test_no_phase_moves_to_itself() -> None:
    for phase in Phase:
        with pytest.raises(IllegalTransition):
            check_phase_transition(phase, phase)


@pytest.mark.parametrize(("current", "target"),
                         [p for p in STEP_PAIRS if p[1] not in EXPECTED_STEPS[p[0]]],
                         ids=lambda s: s.value)
def test_step_move_outside_the_table_raises_naming_the_consumer(
    current: StepState, target: StepState
) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_step_transition(current, target, "inference-api")
    assert str(info.value) == (
        f"consumer inference-api cannot go from {STEP_STATE[current]} to {STEP_STATE[target]}; "
        "nothing changed")


@pytest.mark.parametrize(("current", "target"),
                         [p for p in STEP_PAIRS if p[1] in EXPECTED_STEPS[p[0]]],
                         ids=lambda s: s.value)
def test_step_move_in_the_table_is_allowed(current: StepState, target: StepState) -> None:
    check_step_transition(current, target, "inference-api")


def test_signed_off_is_final_for_a_consumer() -> None:
    for target in StepState:
        with pytest.raises(IllegalTransition):
            check_step_transition(StepState.SIGNED_OFF, target, "c")
