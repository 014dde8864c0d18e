"""The Rotation aggregate: lane order, switch, gate-guarded revoke, rollback, cancel, resume."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.errors import GateClosed, OutOfOrder, RotabotError
from bot.domain.gate import GateResult
from bot.domain.lifecycle import IllegalTransition, Phase, StepState
from bot.domain.rotation import ConsumerPlan, Rotation

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
OBSERVE = timedelta(hours=2)
ADMIN = "U0ADMIN"
CONSUMERS = [
    ConsumerPlan("web", "prod", "U0WEB", "staged"),
    ConsumerPlan("api", "dev", "U0API", "hot"),
    ConsumerPlan("worker", "staging", "U0WORK", "restart"),
]
OPEN = GateResult(())
CLOSED = GateResult(("web (prod) has not signed off (step: validated, owner U0WEB)",))


def new_rotation(*, prepared: bool = True) -> Rotation:
    r = Rotation.begin(secret="model-api-key", lanes=["dev", "staging", "prod"],
                       consumers=CONSUMERS, overlap=timedelta(hours=24), observe=OBSERVE,
                       store_path="ai/model-api-key", actor=ADMIN, now=T0)
    r.id = 42
    if prepared:
        r.prepared(old_version="1", new_version="2", old_key_id="k-old", new_key_id="k-new",
                   actor=ADMIN, now=T0)
    return r


def advance(r: Rotation, name: str, *targets: StepState) -> None:
    for t in targets:
        assert r.mark_step(name, t, actor="U", now=T0)


def validate_all(r: Rotation) -> None:
    for name in ("api", "worker", "web"):
        advance(r, name, StepState.DISTRIBUTED, StepState.VALIDATED)


def switched(r: Rotation | None = None, at: datetime = T0) -> Rotation:
    r = r or new_rotation()
    validate_all(r)
    for name in ("api", "worker", "web"):
        advance(r, name, StepState.SIGNED_OFF)
    r.switch(actor=ADMIN, now=at)
    return r


def phase(r: Rotation) -> Phase:
    """The phase read afresh (a plain ``r.phase`` after an assert is narrowed by mypy)."""
    return r.phase


def step_events(r: Rotation) -> list[tuple[str | None, str | None]]:
    return [(e.consumer, e.after) for e in r.events if e.action == "step"]


# --- construction --------------------------------------------------------------------------


def test_begin_records_start_and_orders_consumers_by_lane() -> None:
    r = new_rotation(prepared=False)
    assert r.phase is Phase.READY_CHECK
    assert [e.action for e in r.events] == ["rotation.started"]
    assert [c.name for c in r.consumers_in_order()] == ["api", "worker", "web"]


def test_begin_without_consumers_is_refused() -> None:
    with pytest.raises(RotabotError, match="no consumers"):
        Rotation.begin(secret="s", lanes=["dev"], consumers=[], overlap=OBSERVE, observe=OBSERVE,
                       store_path="p", actor=ADMIN, now=T0)


def test_unlisted_lane_validates_after_the_listed_ones() -> None:
    r = Rotation.begin(secret="s", lanes=["dev", "prod"],
                       consumers=[ConsumerPlan("a", "qa", "U1", "hot"),
                                  ConsumerPlan("b", "prod", "U2", "hot")],
                       overlap=OBSERVE, observe=OBSERVE, store_path="p", actor=ADMIN, now=T0)
    assert r.lanes == ("dev", "prod", "qa")


def test_prepared_records_versions_overlap_and_moves_to_distributing() -> None:
    r = new_rotation()
    assert r.phase is Phase.DISTRIBUTING
    assert (r.old_version, r.new_version, r.old_key_id, r.new_key_id) == (
        "1", "2", "k-old", "k-new")
    assert r.overlap_until == T0 + timedelta(hours=24)
    assert [(e.before, e.after) for e in r.events if e.action == "phase"] == [
        ("ready-check", "prepared"), ("prepared", "distributing")]


# --- lane order ----------------------------------------------------------------------------


def test_prod_waits_until_dev_and_staging_are_validated() -> None:
    r = new_rotation()
    with pytest.raises(OutOfOrder, match=r"web \(prod\) waits until every dev consumer"):
        r.mark_step("web", StepState.DISTRIBUTED, actor="U", now=T0)
    advance(r, "api", StepState.DISTRIBUTED, StepState.VALIDATED)
    with pytest.raises(OutOfOrder, match=r"waits until every staging consumer"):
        r.mark_step("web", StepState.DISTRIBUTED, actor="U", now=T0)
    advance(r, "worker", StepState.DISTRIBUTED)
    with pytest.raises(OutOfOrder):
        r.mark_step("web", StepState.DISTRIBUTED, actor="U", now=T0)
    advance(r, "worker", StepState.VALIDATED)
    assert r.mark_step("web", StepState.DISTRIBUTED, actor="U", now=T0)
    assert r.consumer("web").state is StepState.DISTRIBUTED


def test_refused_out_of_order_step_changes_nothing() -> None:
    r = new_rotation()
    before = len(r.events)
    with pytest.raises(OutOfOrder):
        r.mark_step("web", StepState.DISTRIBUTED, actor="U", now=T0)
    assert r.consumer("web").state is StepState.WAITING
    assert len(r.events) == before


def test_double_mark_returns_false_and_records_once() -> None:
    r = new_rotation()
    assert r.mark_step("api", StepState.DISTRIBUTED, actor="U0API", now=T0) is True
    assert r.mark_step("api", StepState.DISTRIBUTED, actor="U0API", now=T0) is False
    assert step_events(r) == [("api", "distributed")]


def test_step_event_records_actor_before_after_and_note() -> None:
    r = new_rotation()
    r.mark_step("api", StepState.DISTRIBUTED, actor="U0API", now=T0, note="rolled pods")
    (event,) = [e for e in r.events if e.action == "step"]
    assert (event.actor, event.consumer, event.before, event.after, event.reason) == (
        "U0API", "api", "waiting", "distributed", "rolled pods")
    assert r.consumer("api").updated_by == "U0API"


def test_skipping_a_step_is_illegal() -> None:
    r = new_rotation()
    with pytest.raises(IllegalTransition, match="consumer api cannot go from waiting to"):
        r.mark_step("api", StepState.VALIDATED, actor="U", now=T0)


def test_unknown_consumer_is_named() -> None:
    r = new_rotation()
    with pytest.raises(RotabotError, match="R-42 has no consumer 'nope'"):
        r.mark_step("nope", StepState.DISTRIBUTED, actor="U", now=T0)


def test_all_distributed_moves_to_validating() -> None:
    r = new_rotation()
    advance(r, "api", StepState.DISTRIBUTED, StepState.VALIDATED)
    advance(r, "worker", StepState.DISTRIBUTED, StepState.VALIDATED)
    assert r.phase is Phase.DISTRIBUTING
    advance(r, "web", StepState.DISTRIBUTED)
    assert phase(r) is Phase.VALIDATING


def test_steps_refused_before_prepared() -> None:
    r = new_rotation(prepared=False)
    with pytest.raises(IllegalTransition):
        r.mark_step("api", StepState.DISTRIBUTED, actor="U", now=T0)


# --- switch --------------------------------------------------------------------------------


def test_switch_refused_naming_unvalidated_consumers() -> None:
    r = new_rotation()
    for name in ("api", "worker"):
        advance(r, name, StepState.DISTRIBUTED, StepState.VALIDATED)
    advance(r, "web", StepState.DISTRIBUTED)
    assert r.phase is Phase.VALIDATING
    with pytest.raises(OutOfOrder, match=r"R-42 cannot switch yet: not validated: web$"):
        r.switch(actor=ADMIN, now=T0)
    assert r.phase is Phase.VALIDATING


def test_switch_while_distributing_lists_every_waiting_consumer() -> None:
    r = new_rotation()
    advance(r, "api", StepState.DISTRIBUTED)
    with pytest.raises(OutOfOrder, match="not validated: api, worker, web"):
        r.switch(actor=ADMIN, now=T0)


def test_switch_sets_observe_until_from_switch_time() -> None:
    at = T0 + timedelta(hours=3)
    r = switched(at=at)
    assert r.phase is Phase.OBSERVING
    assert r.switched_at == at
    assert r.observe_until == at + OBSERVE


def test_switch_allowed_with_validated_but_not_signed_off() -> None:
    r = new_rotation()
    validate_all(r)
    r.switch(actor=ADMIN, now=T0)
    assert r.phase is Phase.OBSERVING


# --- gate and revoke -----------------------------------------------------------------------


def test_open_gate_only_while_observing() -> None:
    r = new_rotation()
    assert r.open_gate(OPEN, now=T0) is False
    r = switched()
    assert r.open_gate(CLOSED, now=T0) is False
    assert r.phase is Phase.OBSERVING
    assert r.open_gate(OPEN, now=T0) is True
    assert phase(r) is Phase.REVOCABLE


def test_reopen_observation_after_gate_opened() -> None:
    r = switched()
    r.open_gate(OPEN, now=T0)
    r.reopen_observation(reason="alert on web", now=T0)
    assert r.phase is Phase.OBSERVING
    assert r.events[-1].reason == "alert on web"


def test_revoke_with_closed_gate_raises_with_unmet_list() -> None:
    r = switched()
    with pytest.raises(GateClosed) as info:
        r.revoke(CLOSED, actor=ADMIN, now=T0)
    assert info.value.unmet == CLOSED.unmet
    assert "R-42 cannot be revoked yet" in str(info.value)
    assert "• web (prod) has not signed off" in str(info.value)
    assert r.phase is Phase.OBSERVING


@pytest.mark.parametrize("reason", [None, "", "   "])
def test_blank_override_reason_does_not_open_a_closed_gate(reason: str | None) -> None:
    r = switched()
    with pytest.raises(GateClosed):
        r.revoke(CLOSED, actor=ADMIN, now=T0, override_reason=reason)


def test_break_glass_revoke_records_override_with_reason() -> None:
    r = switched()
    r.revoke(CLOSED, actor=ADMIN, now=T0, override_reason="  key leaked publicly  ")
    assert r.phase is Phase.REVOKED
    assert r.finished_at == T0
    (override,) = [e for e in r.events if e.action == "revoke.override"]
    assert override.reason == "key leaked publicly"
    assert override.actor == ADMIN
    assert "web (prod) has not signed off" in override.detail["unmet"]


def test_revoke_with_open_gate_records_no_override() -> None:
    r = switched()
    r.revoke(OPEN, actor=ADMIN, now=T0)
    assert r.phase is Phase.REVOKED
    assert not [e for e in r.events if e.action == "revoke.override"]


def test_revoke_before_switch_is_illegal_even_with_override() -> None:
    r = new_rotation()
    with pytest.raises(IllegalTransition, match="from distributing to finished"):
        r.revoke(OPEN, actor=ADMIN, now=T0, override_reason="hurry")


# --- rollback, cancel, fail, resume --------------------------------------------------------


def test_rollback_after_revoked_means_emergency_rerotation() -> None:
    r = switched()
    r.revoke(OPEN, actor=ADMIN, now=T0)
    with pytest.raises(RotabotError) as info:
        r.rollback(actor=ADMIN, now=T0)
    assert "emergency re-rotation" in str(info.value)
    assert "/rotate start model-api-key --urgent" in str(info.value)
    assert r.phase is Phase.REVOKED


@pytest.mark.parametrize("steps", ["distributing", "validating", "observing", "revocable"])
def test_rollback_before_revocation_is_allowed(steps: str) -> None:
    r = new_rotation()
    if steps == "validating":
        validate_all(r)
    elif steps in ("observing", "revocable"):
        r = switched(r)
        if steps == "revocable":
            r.open_gate(OPEN, now=T0)
    assert r.phase.value == steps
    r.rollback(actor=ADMIN, now=T0, reason="web errors")
    assert r.phase is Phase.ROLLED_BACK
    assert r.events[-1].reason == "web errors"


def test_cancel_after_switch_points_to_rollback() -> None:
    r = switched()
    with pytest.raises(RotabotError, match=r"use `/rotate rollback R-42`"):
        r.cancel(actor=ADMIN, now=T0)
    assert r.phase is Phase.OBSERVING


def test_cancel_before_switch() -> None:
    r = new_rotation()
    r.cancel(actor=ADMIN, now=T0, reason="wrong day")
    assert r.phase is Phase.CANCELLED
    assert r.terminal


def test_fail_records_where_it_failed_from_and_resume_returns_there() -> None:
    r = new_rotation()
    advance(r, "api", StepState.DISTRIBUTED)
    r.fail(reason="store down", now=T0)
    assert r.phase is Phase.FAILED
    assert (r.failed_from, r.failure_reason) == (Phase.DISTRIBUTING, "store down")
    assert r.resume(actor=ADMIN, now=T0) is Phase.DISTRIBUTING
    assert phase(r) is Phase.DISTRIBUTING
    assert r.failed_from is None and r.failure_reason is None


def test_fail_while_failed_keeps_the_original_phase() -> None:
    r = switched()
    r.fail(reason="first", now=T0)
    r.fail(reason="second", now=T0)
    assert r.failed_from is Phase.OBSERVING
    assert r.failure_reason == "second"
    assert r.resume(actor=ADMIN, now=T0) is Phase.OBSERVING


def test_resume_when_not_failed_is_illegal() -> None:
    r = new_rotation()
    with pytest.raises(IllegalTransition, match="from distributing to resume"):
        r.resume(actor=ADMIN, now=T0)


def test_refusal_is_recorded() -> None:
    r = new_rotation()
    r.record_refusal(actor="U0EVE", now=T0, action="switch", why="only admins")
    event = r.events[-1]
    assert (event.action, event.actor, event.reason, event.detail) == (
        "refused", "U0EVE", "only admins", {"attempted": "switch"})


# --- pending steps -------------------------------------------------------------------------


def pending(r: Rotation) -> list[tuple[str, str]]:
    return [(c.name, s.value) for c, s in r.pending_steps()]


def test_pending_steps_before_prepare_is_empty() -> None:
    assert pending(new_rotation(prepared=False)) == []


def test_pending_steps_follow_the_lanes() -> None:
    r = new_rotation()
    assert pending(r) == [("api", "distributed")]
    advance(r, "api", StepState.DISTRIBUTED)
    assert pending(r) == [("api", "validated")]
    advance(r, "api", StepState.VALIDATED)
    # dev validated: staging's turn; api is not asked to sign off before validating phase.
    assert pending(r) == [("worker", "distributed")]
    advance(r, "worker", StepState.DISTRIBUTED, StepState.VALIDATED)
    assert pending(r) == [("web", "distributed")]
    advance(r, "web", StepState.DISTRIBUTED)
    assert r.phase is Phase.VALIDATING
    # Sign-off ("OK to revoke the old credential") is asked only after the switch.
    assert pending(r) == [("web", "validated")]


def test_pending_steps_after_switch_are_sign_offs_only() -> None:
    r = new_rotation()
    validate_all(r)
    advance(r, "api", StepState.SIGNED_OFF)
    r.switch(actor=ADMIN, now=T0)
    assert pending(r) == [("worker", "signed-off"), ("web", "signed-off")]


def test_pending_steps_skip_failed_consumers() -> None:
    r = new_rotation()
    advance(r, "api", StepState.FAILED)
    assert ("api", "distributed") not in pending(r)
    assert pending(r) == []  # dev is blocked by the failed consumer; nobody else's turn


def test_pending_steps_empty_when_terminal() -> None:
    r = switched()
    r.revoke(OPEN, actor=ADMIN, now=T0)
    assert pending(r) == []
