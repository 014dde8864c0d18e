"""Health checks on Validated: refusal in words, alerts that hold the gate, evidence notes,
and what the rotation message shows (in-memory storage, a fake probe at the port)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fakes import FakeBackends, FakeDatabase

from adapters.file_store import FileStore
from adapters.local_issuer import LocalIssuer
from bot.catalog import HealthCheck, parse_catalog
from bot.domain.clock import FixedClock
from bot.domain.credentials import UsageEvidence
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.services.health import HealthCheckFailed, HealthLine, HealthService, RotationEvidence
from bot.services.rotations import RotationService
from handlers.blocks import MESSAGE_BLOCK_LIMIT, SECTION_LIMIT, override_modal, rotation_message

ADMIN, ALICE, BOB = "U0ADMIN", "U0ALICE", "U0BOB"
CATALOG = """\
version: 1
defaults: {channel: C0ROTATE, admins: [U0ADMIN], lanes: [dev, prod], observe: 2h}
stores:
  files: {kind: file, path: /unused}
secrets:
  api-key:
    issuer: {kind: local}
    store: {name: files, path: ai/key}
    consumers:
      inference-api:
        owner: U0ALICE
        lane: dev
        reload: hot
        health_check: {url: "http://inference.internal/healthz/deep", version_field: v}
      batch: {owner: U0BOB, lane: prod, reload: restart}
"""


@dataclass(frozen=True)
class Report:
    ok: bool
    failure_class: str | None
    reason: str
    reported_version: str | None = None


@dataclass
class FakeProbe:
    answers: list[Report]
    asked: list[str] = field(default_factory=list)

    def check(self, consumer_name: str, lane: str, hc: HealthCheck) -> Report:
        self.asked.append(f"{consumer_name}@{lane}:{hc.url}")
        return self.answers.pop(0)


FAIL = Report(False, "authentication",
              "inference-api (dev): HTTP 401, expected 200: authentication (invalid key)")
PASS = Report(True, None, "inference-api reports version 2", "2")


@pytest.fixture
def world(tmp_path: Path) -> tuple[RotationService, FakeProbe, FakeDatabase, FixedClock]:
    files = FileStore(tmp_path / "store")
    local = LocalIssuer()
    minted = local.mint(None)
    assert minted.material is not None
    files.promote("ai/key", files.write_pending("ai/key", minted.material, expected_current=None))
    db, clock = FakeDatabase(), FixedClock()
    service = RotationService(catalog=parse_catalog(CATALOG), uow_factory=db.uow,
                              backends=FakeBackends(files, local), clock=clock)
    probe = FakeProbe([])
    HealthService(service=service, probe=probe).install()
    return service, probe, db, clock


def test_failing_check_refuses_validated_and_its_alert_holds_the_gate(
    world: tuple[RotationService, FakeProbe, FakeDatabase, FixedClock],
) -> None:
    service, probe, _, _ = world
    probe.answers = [FAIL, FAIL]
    rid = service.start("api-key", actor=ADMIN).id
    assert rid is not None
    service.step(rid, "inference-api", StepState.DISTRIBUTED, actor=ALICE)
    with pytest.raises(HealthCheckFailed) as refused:
        service.step(rid, "inference-api", StepState.VALIDATED, actor=ALICE)
    assert "authentication failure" in str(refused.value)
    assert "A-1 is open and blocks revocation" in str(refused.value)
    assert service.get(rid).consumer("inference-api").state is StepState.DISTRIBUTED
    with pytest.raises(HealthCheckFailed):
        service.step(rid, "inference-api", StepState.VALIDATED, actor=ALICE)
    alerts = service.recent_alerts()
    assert [(a.consumer, a.failure_class, a.count, a.unresolved) for a in alerts] == [
        ("inference-api", "authentication", 2, True)]
    assert any("unresolved alert A-1" in u for u in service.gate(rid).unmet)
    assert probe.asked == ["inference-api@dev:http://inference.internal/healthz/deep"] * 2


def test_passing_check_is_the_step_note_and_resolves_the_checks_alert(
    world: tuple[RotationService, FakeProbe, FakeDatabase, FixedClock],
) -> None:
    service, probe, _, _ = world
    probe.answers = [FAIL, PASS]
    rid = service.start("api-key", actor=ADMIN).id
    assert rid is not None
    service.step(rid, "inference-api", StepState.DISTRIBUTED, actor=ALICE)
    with pytest.raises(HealthCheckFailed):
        service.step(rid, "inference-api", StepState.VALIDATED, actor=ALICE)
    out = service.step(rid, "inference-api", StepState.VALIDATED, actor=ALICE)
    assert out.changed
    assert out.rotation.consumer("inference-api").note == "inference-api reports version 2"
    assert [a.unresolved for a in service.recent_alerts()] == [False]
    latest = HealthService(service=service, probe=probe).latest(rid)
    assert latest["inference-api"].ok and latest["inference-api"].version == "2"
    # A replayed click runs no second check.
    assert not service.step(rid, "inference-api", StepState.VALIDATED, actor=ALICE).changed
    assert probe.answers == [] and len(probe.asked) == 2


def test_consumer_without_check_and_non_owner_run_no_probe(
    world: tuple[RotationService, FakeProbe, FakeDatabase, FixedClock],
) -> None:
    service, probe, _, _ = world
    probe.answers = [PASS]
    rid = service.start("api-key", actor=ADMIN).id
    assert rid is not None
    service.step(rid, "inference-api", StepState.DISTRIBUTED, actor=ALICE)
    with pytest.raises(Exception, match="this step is"):
        service.step(rid, "inference-api", StepState.VALIDATED, actor=BOB)
    assert probe.asked == []
    service.step(rid, "inference-api", StepState.VALIDATED, actor=ALICE)
    service.step(rid, "batch", StepState.DISTRIBUTED, actor=BOB)
    service.step(rid, "batch", StepState.VALIDATED, actor=BOB)
    assert len(probe.asked) == 1
    assert service.get(rid).phase is Phase.VALIDATING


def big_rotation(n: int) -> Rotation:
    r = Rotation.begin(
        secret="api-key", lanes=("dev",), overlap=timedelta(hours=1),
        observe=timedelta(hours=1), store_path="ai/key", actor=ADMIN,
        now=datetime(2026, 1, 1, tzinfo=UTC),
        consumers=[ConsumerPlan(f"consumer-{i:03d}", "dev", ALICE, "hot") for i in range(n)])
    r.id = 7
    r.phase = Phase.OBSERVING
    return r


@pytest.mark.parametrize("n", [3, 60])
def test_message_shows_usage_and_health_within_block_kit_limits(n: int) -> None:
    r = big_rotation(n)
    at = datetime(2026, 1, 1, 10, tzinfo=UTC)
    long_failure = "network " + "x" * 400
    health = {
        c: HealthLine(c, i % 2 == 0, None if i % 2 == 0 else "network",
                      f"{c} reports version 2" if i % 2 == 0 else f"{c} (dev): {long_failure}",
                      "2", at)
        for i, c in enumerate(sorted(r.consumers))
    }
    usage = UsageEvidence(True, "1 session still uses app_a (<!channel> ingest, 10.0.0.5)")
    _, blocks = rotation_message(r, None, RotationEvidence(usage=usage, health=health))
    body = json.dumps([b.to_dict() for b in blocks])
    assert "old credential: 1 session still uses app_a (&lt;!channel&gt; ingest, 10.0.0.5)" in body
    assert "consumer-000` health: consumer-000 reports version 2" in body
    assert len(blocks) <= MESSAGE_BLOCK_LIMIT
    for b in blocks:
        d = b.to_dict()
        assert len(d.get("text", {}).get("text", "")) <= SECTION_LIMIT
    if n > 20:
        assert f"and {n - 20} more health results" in body


def test_where_nothing_can_tell_the_message_status_and_break_glass_say_so(
    world: tuple[RotationService, FakeProbe, FakeDatabase, FixedClock],
) -> None:
    service, probe, _, _ = world
    probe.answers = [PASS]
    rid = service.start("api-key", actor=ADMIN).id
    assert rid is not None
    for consumer, owner in (("inference-api", ALICE), ("batch", BOB)):
        for step in (StepState.DISTRIBUTED, StepState.VALIDATED):
            service.step(rid, consumer, step, actor=owner)
    rotation = service.switch(rid, actor=ADMIN)
    said = ("usage evidence: cannot tell (local issuer: nothing reports use of these "
            "credentials; the file store keeps no record of who read a version)")
    evidence = HealthService(service=service, probe=probe).evidence(rotation)
    assert evidence.usage_line == said and evidence.unmapped == ()
    gate = service.gate_of(rotation)
    assert gate.usage == said and not gate.open  # closed by sign-offs, not by usage
    _, body = rotation_message(rotation, gate, evidence)
    assert f":grey_question: {said}" in json.dumps([b.to_dict() for b in body])
    modal = override_modal(rotation, gate).to_dict()
    assert said in json.dumps(modal)
