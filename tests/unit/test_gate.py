"""The revocation gate: every unmet condition in words, and open only when all are met."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.alert import Alert, AlertStatus
from bot.domain.credentials import UsageEvidence, UsageSeen
from bot.domain.gate import evaluate_gate
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import ConsumerPlan, Rotation

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
OBSERVE = timedelta(hours=2)
CONSUMERS = [
    ConsumerPlan("api", "dev", "U0API", "hot"),
    ConsumerPlan("web", "prod", "S0WEBTEAM", "staged"),
]


Usage = UsageEvidence


def rotation(*, signed_off: tuple[str, ...] = ("api", "web"), switch: bool = True) -> Rotation:
    r = Rotation.begin(secret="model-api-key", lanes=["dev", "prod"], consumers=CONSUMERS,
                       overlap=timedelta(hours=24), observe=OBSERVE, store_path="p",
                       actor="U0ADMIN", now=T0)
    r.id = 7
    r.prepared(old_version="1", new_version="2", old_key_id=None, new_key_id=None,
               actor="U0ADMIN", now=T0)
    for name in ("api", "web"):
        r.mark_step(name, StepState.DISTRIBUTED, actor="U", now=T0)
        r.mark_step(name, StepState.VALIDATED, actor="U", now=T0)
    for name in signed_off:
        r.mark_step(name, StepState.SIGNED_OFF, actor="U", now=T0)
    if switch:
        r.switch(actor="U0ADMIN", now=T0)
    return r


def alert(status: AlertStatus = AlertStatus.OPEN, secret: str = "model-api-key") -> Alert:
    return Alert(consumer="web", secret=secret, lane="prod", failure_class="authentication",
                 reason="HTTP 401 invalid_api_key", first_seen=T0, last_seen=T0, id=12,
                 status=status, count=3)


AFTER = T0 + OBSERVE


def test_open_when_everything_is_met() -> None:
    gate = evaluate_gate(rotation(), now=AFTER, alerts=[],
                         usage=Usage(in_use=False, summary="no use in 24h"))
    assert gate.unmet == ()
    assert gate.open


def test_open_exactly_when_the_window_ends() -> None:
    assert evaluate_gate(rotation(), now=AFTER).open
    assert not evaluate_gate(rotation(), now=AFTER - timedelta(seconds=1)).open


def test_owner_not_signed_off_names_consumer_lane_step_and_owner() -> None:
    gate = evaluate_gate(rotation(signed_off=("api",)), now=AFTER)
    assert gate.unmet == (
        "web (prod) has not signed off (step: validated, owner S0WEBTEAM)",)
    assert not gate.open


def test_each_missing_sign_off_is_listed_in_lane_order() -> None:
    gate = evaluate_gate(rotation(signed_off=()), now=AFTER)
    assert [u.split(" ")[0] for u in gate.unmet] == ["api", "web"]
    assert "owner U0API" in gate.unmet[0]


def test_window_says_remaining_time_and_end() -> None:
    now = T0 + timedelta(minutes=30)
    gate = evaluate_gate(rotation(), now=now)
    assert gate.unmet == (
        "the observation window runs 1h 30m more (until 2026-11-25 11:00:00 UTC)",)


def test_unresolved_alert_named_with_ref_consumer_lane_and_class() -> None:
    gate = evaluate_gate(rotation(), now=AFTER, alerts=[alert()])
    assert gate.unmet == (
        "unresolved alert A-12: web (prod) failing authentication (3x, open)",)


def test_acknowledged_alert_still_blocks() -> None:
    gate = evaluate_gate(rotation(), now=AFTER, alerts=[alert(AlertStatus.ACKNOWLEDGED)])
    assert not gate.open
    assert "acknowledged" in gate.unmet[0]


@pytest.mark.parametrize("status", [AlertStatus.RESOLVED, AlertStatus.NOT_RELATED])
def test_resolved_or_not_related_alert_does_not_block(status: AlertStatus) -> None:
    assert evaluate_gate(rotation(), now=AFTER, alerts=[alert(status)]).open


def test_alert_about_another_secret_does_not_block() -> None:
    assert evaluate_gate(rotation(), now=AFTER, alerts=[alert(secret="other")]).open


def test_usage_evidence_in_use_blocks_with_its_summary() -> None:
    usage = Usage(in_use=True, summary="3 connections as app_a in the last 10m")
    gate = evaluate_gate(rotation(), now=AFTER, usage=usage)
    assert gate.unmet == (
        "the old credential is still in use: 3 connections as app_a in the last 10m",)


@pytest.mark.parametrize("in_use", [False, None])
def test_usage_not_in_use_or_unknown_does_not_block(in_use: bool | None) -> None:
    assert evaluate_gate(rotation(), now=AFTER, usage=Usage(in_use, "whatever")).open


def test_phase_before_switch_is_unmet() -> None:
    r = rotation(switch=False)
    assert r.phase is Phase.VALIDATING
    gate = evaluate_gate(r, now=AFTER)
    assert gate.unmet == (
        "R-7 is validating: revocation comes only after the switch and the observation window",
        "the observation window has not started",
    )


def test_revocable_phase_is_fine() -> None:
    r = rotation()
    r.open_gate(evaluate_gate(r, now=AFTER), now=AFTER)
    assert r.phase is Phase.REVOCABLE
    assert evaluate_gate(r, now=AFTER).open


def test_every_condition_at_once_is_listed() -> None:
    gate = evaluate_gate(rotation(signed_off=("api",)), now=T0, alerts=[alert()],
                         usage=Usage(True, "in use"))
    assert len(gate.unmet) == 4


def test_old_credential_in_use_names_who_and_when() -> None:
    usage = UsageEvidence(True, "1 read of version 1 since the switch", seen=(
        UsageSeen(address="10.0.3.7", at=AFTER - timedelta(minutes=4, seconds=20)),))
    gate = evaluate_gate(rotation(), now=AFTER, usage=usage)
    assert gate.unmet == (
        "the old credential is still in use: 1 read of version 1 since the switch: "
        "used 4m ago by 10.0.3.7 (not in the catalog)",)
    assert gate.usage.startswith("old credential still in use: ")


def test_cannot_tell_is_said_but_does_not_block() -> None:
    gate = evaluate_gate(rotation(), now=AFTER, usage=Usage(None, "manual issuer: no platform"))
    assert gate.open
    assert gate.usage == "usage evidence: cannot tell (manual issuer: no platform)"
