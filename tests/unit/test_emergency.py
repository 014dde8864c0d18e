"""After revocation rollback means an emergency re-rotation: urgent, sooner reminders, once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fakes import FakeBackends, FakeDatabase, FakeDirectory

from adapters.file_store import FileStore
from adapters.local_issuer import LocalIssuer
from bot.catalog import parse_catalog
from bot.domain.clock import FixedClock
from bot.domain.errors import NotAuthorized, RotabotError
from bot.domain.lifecycle import Phase, StepState
from bot.domain.secret_material import SecretMaterial
from bot.services.emergency import owners_to_act, reminder_settings, start_emergency
from bot.services.rotations import RotationService

ADMIN = "U0SECOPS"
CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  admins: [U0SECOPS]
  lanes: [dev, prod]
  overlap: 24h
  observe: 2h
  remind_after: 40m
  escalate_after: 4h
stores:
  files: {kind: file, path: /unused}
secrets:
  model-api-key:
    issuer: {kind: local}
    store: {name: files, path: ai/model-api-key}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: restart, rollback: Restart pinned}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot}
      reranker: {owner: U0CAROL, lane: dev, reload: staged}
"""
STEPS = (("retriever", "U0BOB"), ("reranker", "U0CAROL"), ("inference-api", "U0ALICE"))


def revoked_service(tmp_path: Path) -> tuple[RotationService, FakeDatabase, int]:
    files = FileStore(tmp_path / "store")
    files.put("ai/model-api-key", SecretMaterial({"api_key": "old"}))
    db, clock = FakeDatabase(), FixedClock()
    service = RotationService(catalog=parse_catalog(CATALOG), uow_factory=db.uow,
                              backends=FakeBackends(files, LocalIssuer()),
                              clock=clock, directory=FakeDirectory({}))
    rid = service.start("model-api-key", actor=ADMIN).id
    assert rid is not None
    for name, owner in STEPS:  # lane by lane
        for target in (StepState.DISTRIBUTED, StepState.VALIDATED):
            service.step(rid, name, target, actor=owner)
    service.switch(rid, actor=ADMIN)
    for name, owner in STEPS:
        service.step(rid, name, StepState.SIGNED_OFF, actor=owner)
    clock.advance(timedelta(hours=3))
    assert service.revoke(rid, actor=ADMIN).phase is Phase.REVOKED
    return service, db, rid


def test_emergency_re_rotation_starts_one_urgent_rotation_and_is_audited(tmp_path: Path) -> None:
    service, db, rid = revoked_service(tmp_path)
    with pytest.raises(RotabotError, match="emergency re-rotation"):
        service.rollback(rid, actor=ADMIN)

    first = start_emergency(service, rid, actor=ADMIN, reason="forgotten consumer")
    assert first.started and first.rotation.urgent
    assert first.rotation.phase is Phase.DISTRIBUTING and first.rotation.id != rid
    again = start_emergency(service, rid, actor=ADMIN)
    assert not again.started and again.rotation.id == first.rotation.id
    assert len(service.active()) == 1
    assert [e.detail for e in db.events(rid, "emergency.re-rotation")] == [
        {"new_rotation": first.rotation.ref}]


def test_only_admins_may_and_a_refusal_is_audited(tmp_path: Path) -> None:
    service, db, rid = revoked_service(tmp_path)
    with pytest.raises(NotAuthorized):
        start_emergency(service, rid, actor="U0BOB")
    assert service.active() == []
    assert [e.actor for e in db.events(rid) if e.action == "refused"] == ["U0BOB"]


def test_not_for_a_rotation_that_can_still_roll_back(tmp_path: Path) -> None:
    service, _, rid = revoked_service(tmp_path)
    fresh = start_emergency(service, rid, actor=ADMIN).rotation
    assert fresh.id is not None
    with pytest.raises(RotabotError, match="roll it back instead"):
        start_emergency(service, fresh.id, actor=ADMIN)


def test_urgent_rotations_remind_four_times_sooner(tmp_path: Path) -> None:
    service, _, rid = revoked_service(tmp_path)
    settings = service.catalog.settings_for("model-api-key")
    normal = service.get(rid)
    assert service.reminder_settings(normal, settings) == settings
    urgent = start_emergency(service, rid, actor=ADMIN).rotation
    fast = reminder_settings(urgent, settings)
    assert (fast.remind_after, fast.escalate_after) == (timedelta(minutes=10), timedelta(hours=1))


def test_owners_to_act_are_the_restart_and_staged_consumers_in_lane_order() -> None:
    notes = owners_to_act(parse_catalog(CATALOG), "model-api-key")
    assert [(n.consumer, n.owner, n.reload, n.note) for n in notes] == [
        ("reranker", "U0CAROL", "staged", None),
        ("retriever", "U0BOB", "restart", "Restart pinned"),
    ]
