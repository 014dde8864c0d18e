"""RotationService end to end over in-memory storage, the real FileStore and LocalIssuer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fakes import FakeBackends, FakeDatabase, FakeDirectory

from adapters.file_store import FileStore
from adapters.local_issuer import LocalIssuer
from adapters.manual_issuer import ManualIssuer
from bot.catalog import Catalog, parse_catalog
from bot.domain.clock import FixedClock
from bot.domain.credentials import IssuerError, Minted, StoreError, StoreState, VersionLabel
from bot.domain.errors import (
    BusyElsewhere,
    ChangedMeanwhile,
    GateClosed,
    NotAuthorized,
    RotabotError,
)
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import Rotation
from bot.domain.secret_material import SecretMaterial
from bot.services.rotations import RotationService

SECRET = "model-api-key"
PATH = "ai/model-api-key"
ADMIN = "U0SECOPS"
DEV, STAGING, PROD = "U0DEV", "U0STAGE", "S0PRODTEAM"
CAROL = "U0CAROL"  # member of the prod user group
EVE = "U0EVE"  # nobody's owner, not an admin


def catalog_text(*, prod_owner: str = PROD) -> str:
    return f"""\
version: 1
defaults:
  channel: C0ROTATE
  admins: [{ADMIN}]
  lanes: [dev, staging, prod]
  overlap: 24h
  observe: 2h
stores:
  files: {{kind: file, path: /unused}}
secrets:
  {SECRET}:
    issuer: {{kind: manual}}
    store: {{name: files, path: {PATH}}}
    consumers:
      ingest-dev: {{owner: {DEV}, lane: dev, reload: hot}}
      ingest-staging: {{owner: {STAGING}, lane: staging, reload: hot}}
      inference-api: {{owner: "{prod_owner}", lane: prod, reload: hot}}
"""


ORDER = [("ingest-dev", DEV), ("ingest-staging", STAGING), ("inference-api", CAROL)]


@dataclass
class World:
    service: RotationService
    db: FakeDatabase
    store: FileStore
    issuer: LocalIssuer
    clock: FixedClock
    old_key: str
    old_material: SecretMaterial


def labels(store: FileStore) -> dict[str, set[str]]:
    state = store.describe(PATH)
    return {v.version: {label.value for label in v.labels} for v in state.versions}


def make_world(tmp_path: Path, *, catalog: Catalog | None = None, store: object = None,
               issuer: LocalIssuer | ManualIssuer | None = None) -> World:
    files = FileStore(tmp_path / "store")
    local = LocalIssuer()
    # The credential in use before the rotation: minted by the same issuer, current in the store.
    minted = local.mint(None)
    assert minted.material is not None and minted.key_id is not None
    files.promote(PATH, files.write_pending(PATH, minted.material, expected_current=None))
    db = FakeDatabase()
    clock = FixedClock()
    service = RotationService(
        catalog=catalog or parse_catalog(catalog_text()),
        uow_factory=db.uow,
        backends=FakeBackends(store or files, issuer or local),  # type: ignore[arg-type]
        clock=clock,
        directory=FakeDirectory({PROD: {CAROL}}),
    )
    return World(service, db, files, local, clock, minted.key_id, minted.material)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def step_all(w: World, rotation_id: int, *targets: StepState) -> Rotation:
    rotation = w.service.get(rotation_id)
    for name, who in ORDER:
        for target in targets:
            rotation = w.service.step(rotation_id, name, target, actor=who).rotation
    return rotation


def validated(w: World) -> int:
    rotation = w.service.start(SECRET, actor=ADMIN)
    assert rotation.id is not None
    step_all(w, rotation.id, StepState.DISTRIBUTED, StepState.VALIDATED)
    return rotation.id


def switched(w: World) -> int:
    rid = validated(w)
    step_all(w, rid, StepState.SIGNED_OFF)
    w.service.switch(rid, actor=ADMIN)
    return rid


# --- a whole rotation ----------------------------------------------------------------------


def test_whole_rotation_from_start_to_revoke(world: World) -> None:
    w = world
    assert labels(w.store) == {"1": {"current"}}

    rotation = w.service.start(SECRET, actor=ADMIN)
    assert rotation.id is not None
    rid = rotation.id
    assert rotation.phase is Phase.DISTRIBUTING
    assert (rotation.old_version, rotation.new_version) == ("1", "2")
    assert rotation.old_key_id == w.old_key
    assert rotation.new_key_id == w.issuer.minted[-1] != w.old_key
    assert labels(w.store) == {"1": {"current"}, "2": {"pending"}}
    assert w.store.read(PATH) == w.old_material  # consumers still read the old one

    rotation = step_all(w, rid, StepState.DISTRIBUTED, StepState.VALIDATED)
    assert rotation.phase is Phase.VALIDATING
    assert labels(w.store) == {"1": {"current"}, "2": {"pending"}}
    rotation = step_all(w, rid, StepState.SIGNED_OFF)

    rotation = w.service.switch(rid, actor=ADMIN)
    assert rotation.phase is Phase.OBSERVING
    assert rotation.observe_until == w.clock.now() + timedelta(hours=2)
    assert labels(w.store) == {"1": {"previous"}, "2": {"current"}}
    assert w.store.read(PATH) != w.old_material

    with pytest.raises(GateClosed, match="observation window runs 2h more"):
        w.service.revoke(rid, actor=ADMIN)
    assert w.service.tick(rid).phase is Phase.OBSERVING

    w.clock.advance(timedelta(hours=2))
    assert w.service.tick(rid).phase is Phase.REVOCABLE
    assert not w.issuer.is_revoked(w.old_key)

    rotation = w.service.revoke(rid, actor=ADMIN)
    assert rotation.phase is Phase.REVOKED
    state = w.store.describe(PATH)
    old = next(v for v in state.versions if v.version == "1")
    assert old.destroyed
    assert old.labels == {VersionLabel.REVOKED}
    assert labels(w.store) == {"1": {"revoked"}, "2": {"current"}}
    with pytest.raises(StoreError):
        w.store.read(PATH, "1")
    assert w.issuer.is_revoked(w.old_key)
    assert not w.issuer.is_revoked(rotation.new_key_id or "")

    phases = [(e.before, e.after) for e in w.db.events(rid, "phase")]
    assert phases == [
        ("ready-check", "prepared"), ("prepared", "distributing"),
        ("distributing", "validating"), ("validating", "switched"),
        ("switched", "observing"), ("observing", "revocable"), ("revocable", "revoked")]
    assert len(w.db.events(rid, "step")) == 9
    assert w.db.events(rid, "rotation.started")[0].actor == ADMIN
    stored = w.service.get(rid)
    assert stored.phase is Phase.REVOKED and stored.events == []


def test_start_refused_for_non_admin_and_creates_nothing(world: World) -> None:
    with pytest.raises(NotAuthorized, match=f"only admins of {SECRET}"):
        world.service.start(SECRET, actor=DEV)
    assert world.db.rotations == {}
    assert world.issuer.minted == [world.old_key]
    assert labels(world.store) == {"1": {"current"}}


@pytest.mark.parametrize("owner", ["alice", "@alice", "Sarah", "Walter"])
def test_readiness_blocker_creates_nothing(tmp_path: Path, owner: str) -> None:
    w = make_world(tmp_path, catalog=parse_catalog(catalog_text(prod_owner=owner)))
    with pytest.raises(RotabotError) as info:
        w.service.start(SECRET, actor=ADMIN)
    assert "not ready to rotate" in str(info.value)
    assert f"inference-api: owner {owner!r} is not a Slack user or group id" in str(info.value)
    assert w.db.rotations == {} and w.db.audit == []
    assert w.issuer.minted == [w.old_key]
    assert labels(w.store) == {"1": {"current"}}


def test_second_start_while_active_is_refused(world: World) -> None:
    rotation = world.service.start(SECRET, actor=ADMIN)
    with pytest.raises(RotabotError, match=f"already being rotated in {rotation.ref}"):
        world.service.start(SECRET, actor=ADMIN)
    assert len(world.db.rotations) == 1


# --- who may click -------------------------------------------------------------------------


def test_non_owner_click_is_refused_and_audited(world: World) -> None:
    rid = world.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    with pytest.raises(NotAuthorized, match=f"<@{DEV}>"):
        world.service.step(rid, "ingest-dev", StepState.DISTRIBUTED, actor=EVE)
    (refused,) = world.db.events(rid, "refused")
    assert refused.actor == EVE
    assert refused.consumer == "ingest-dev"
    assert refused.detail == {"attempted": "distributed ingest-dev"}
    assert world.service.get(rid).consumer("ingest-dev").state is StepState.WAITING


def test_user_group_member_may_click_and_others_may_not(world: World) -> None:
    rid = validated_until_prod(world)
    with pytest.raises(NotAuthorized, match=f"<!subteam\\^{PROD}>"):
        world.service.step(rid, "inference-api", StepState.DISTRIBUTED, actor=DEV)
    outcome = world.service.step(rid, "inference-api", StepState.DISTRIBUTED, actor=CAROL)
    assert outcome.changed
    assert outcome.rotation.consumer("inference-api").updated_by == CAROL


def validated_until_prod(w: World) -> int:
    rid = w.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    for name, who in ORDER[:2]:
        for target in (StepState.DISTRIBUTED, StepState.VALIDATED):
            w.service.step(rid, name, target, actor=who)
    return rid


@pytest.mark.parametrize("action", ["switch", "revoke", "cancel", "resume"])
def test_admin_actions_refused_to_others_and_audited(world: World, action: str) -> None:
    rid = switched(world) if action == "revoke" else world.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    with pytest.raises(NotAuthorized, match=f"only admins of {SECRET} may {action}"):
        getattr(world.service, action)(rid, actor=DEV)
    (refused,) = world.db.events(rid, "refused")
    assert refused.detail == {"attempted": action}


def test_double_step_is_applied_once(world: World) -> None:
    rid = world.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    first = world.service.step(rid, "ingest-dev", StepState.DISTRIBUTED, actor=DEV)
    second = world.service.step(rid, "ingest-dev", StepState.DISTRIBUTED, actor=DEV)
    assert (first.changed, second.changed) == (True, False)
    assert [(e.consumer, e.after) for e in world.db.events(rid, "step")] == [
        ("ingest-dev", "distributed")]
    assert second.rotation.revision == first.rotation.revision


def test_concurrent_change_is_retried_and_applied_once(world: World) -> None:
    rid = world.service.start(SECRET, actor=ADMIN).id
    assert rid is not None

    def someone_else_writes() -> None:
        # Another replica records a note on the same rotation between our read and commit.
        with world.db.uow() as other:
            r = other.rotations.get(rid)
            r.record_note(actor="U0OTHER", now=world.clock.now(), action="message.posted")
            other.commit()

    world.db.before_commit.append(someone_else_writes)
    outcome = world.service.step(rid, "ingest-dev", StepState.DISTRIBUTED, actor=DEV)

    assert world.db.conflicts == 1
    assert outcome.changed
    assert [(e.consumer, e.after) for e in world.db.events(rid, "step")] == [
        ("ingest-dev", "distributed")]
    assert len(world.db.events(rid, "message.posted")) == 1  # the other write is not lost
    stored = world.service.get(rid)
    assert stored.consumer("ingest-dev").state is StepState.DISTRIBUTED


def test_fake_refuses_a_stale_write(world: World) -> None:
    # The guarantee the retry test relies on: a stale revision writes nothing.
    rid = world.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    with world.db.uow() as a, world.db.uow() as b:
        ra, rb = a.rotations.get(rid), b.rotations.get(rid)
        ra.record_note(actor="U1", now=world.clock.now(), action="a")
        a.commit()
        rb.record_note(actor="U2", now=world.clock.now(), action="b")
        with pytest.raises(ChangedMeanwhile):
            b.commit()
    assert world.db.events(rid, "b") == []


# --- failures, resume, rollback ------------------------------------------------------------


class FailingWrites:
    """A Store that delegates to a FileStore but refuses write_pending while ``broken``."""

    kind = "file"

    def __init__(self, inner: FileStore) -> None:
        self.inner = inner
        self.broken = True

    def describe(self, path: str) -> StoreState:
        return self.inner.describe(path)

    def read(self, path: str, version: str | None = None) -> SecretMaterial:
        return self.inner.read(path, version)

    def write_pending(self, path: str, material: SecretMaterial, *,
                      expected_current: str | None) -> str:
        if self.broken:
            raise StoreError(f"file store: {path}: disk full")
        return self.inner.write_pending(path, material, expected_current=expected_current)

    def mark_pending(self, path: str, version: str) -> None:
        self.inner.mark_pending(path, version)

    def promote(self, path: str, version: str) -> str:
        return self.inner.promote(path, version)

    def restore_previous(self, path: str) -> str:
        return self.inner.restore_previous(path)

    def retire(self, path: str, version: str) -> None:
        self.inner.retire(path, version)


def failing_world(tmp_path: Path) -> tuple[World, FailingWrites]:
    w = make_world(tmp_path)
    wrapper = FailingWrites(w.store)
    w.service.backends = FakeBackends(wrapper, w.issuer)
    return w, wrapper


def test_store_failure_in_prepare_fails_and_takes_back_the_minted_key(tmp_path: Path) -> None:
    w, _ = failing_world(tmp_path)
    rotation = w.service.start(SECRET, actor=ADMIN)
    assert rotation.phase is Phase.FAILED
    assert rotation.failed_from is Phase.READY_CHECK
    assert rotation.failure_reason is not None and "disk full" in rotation.failure_reason
    stranded = w.issuer.minted[-1]
    assert stranded != w.old_key
    assert w.issuer.is_revoked(stranded)
    assert not w.issuer.is_revoked(w.old_key)
    assert labels(w.store) == {"1": {"current"}}
    assert w.service.get(rotation.id or 0).phase is Phase.FAILED


def test_resume_after_store_failure_completes_preparation(tmp_path: Path) -> None:
    w, wrapper = failing_world(tmp_path)
    rid = w.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    wrapper.broken = False
    rotation = w.service.resume(rid, actor=ADMIN)
    assert rotation.phase is Phase.DISTRIBUTING
    assert rotation.failed_from is None
    assert (rotation.old_version, rotation.new_version) == ("1", "2")
    assert rotation.new_key_id == w.issuer.minted[-1]
    assert not w.issuer.is_revoked(rotation.new_key_id)
    assert labels(w.store) == {"1": {"current"}, "2": {"pending"}}


def test_resume_after_store_failure_keeps_the_real_old_key(tmp_path: Path) -> None:
    # The key to revoke at the end is the one consumers used before, not the key minted and
    # taken back in the failed attempt: otherwise the old credential is never revoked.
    w, wrapper = failing_world(tmp_path)
    rid = w.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    wrapper.broken = False
    rotation = w.service.resume(rid, actor=ADMIN)
    assert rotation.old_key_id == w.old_key


def test_rollback_after_switch_makes_old_data_current(world: World) -> None:
    rid = switched(world)
    assert world.store.read(PATH) != world.old_material
    rotation = world.service.rollback(rid, actor=ADMIN, reason="inference errors")
    assert rotation.phase is Phase.ROLLED_BACK
    assert world.store.read(PATH) == world.old_material
    assert world.store.describe(PATH).current == "3"
    assert not world.issuer.is_revoked(world.old_key)
    (note,) = world.db.events(rid, "rollback.detail")
    assert note.detail == {"new_credential": "kept pending"}


KEY_IN_A_REASON = "sk-proj-" + "Zq8wT2vLm4Xr9Kp3Nd7Ys1Fb6Hc0Jg5"


def test_a_key_pasted_into_a_reason_is_redacted_before_it_is_kept_or_told(world: World) -> None:
    """Reasons reach the audit trail and the thread's receipts: a pasted key must not."""
    rid = switched(world)
    told: list[str] = []
    world.service.on_receipts.append(lambda r, receipts: told.extend(
        str(x.reason) for x in receipts))
    world.service.rollback(rid, actor=ADMIN, reason=f"it 401s with  {KEY_IN_A_REASON}\n again")
    (event,) = world.db.events(rid, "phase")[-1:]
    assert event.reason == "it 401s with [redacted] again"
    assert told == ["it 401s with [redacted] again"]
    assert KEY_IN_A_REASON not in repr(world.db.audit)


def test_rollback_before_switch_with_revoke_new_retires_the_pending_version(world: World
                                                                             ) -> None:
    rid = world.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    rotation = world.service.rollback(rid, actor=ADMIN, revoke_new=True)
    assert rotation.phase is Phase.ROLLED_BACK
    assert world.issuer.is_revoked(rotation.new_key_id or "")
    assert labels(world.store) == {"1": {"current"}, "2": {"revoked"}}
    assert world.store.read(PATH) == world.old_material


def test_rollback_after_revoke_means_emergency_rerotation(world: World) -> None:
    rid = switched(world)
    world.service.revoke(rid, actor=ADMIN, override_reason="leaked")
    with pytest.raises(RotabotError, match="emergency re-rotation"):
        world.service.rollback(rid, actor=ADMIN)
    assert world.service.get(rid).phase is Phase.REVOKED


def test_break_glass_revoke_is_audited_with_reason(world: World) -> None:
    rid = switched(world)
    rotation = world.service.revoke(rid, actor=ADMIN, override_reason="key leaked")
    assert rotation.phase is Phase.REVOKED
    (override,) = world.db.events(rid, "revoke.override")
    assert override.reason == "key leaked"
    assert "observation window" in override.detail["unmet"]
    assert world.issuer.is_revoked(world.old_key)


def test_switch_before_validation_is_refused_and_store_untouched(world: World) -> None:
    rid = world.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    with pytest.raises(RotabotError, match="not validated: ingest-dev"):
        world.service.switch(rid, actor=ADMIN)
    assert labels(world.store) == {"1": {"current"}, "2": {"pending"}}


def test_cancel_before_distribution_takes_back_the_new_credential(world: World) -> None:
    rotation = world.service.start(SECRET, actor=ADMIN)
    assert rotation.id is not None
    cancelled = world.service.cancel(rotation.id, actor=ADMIN, reason="wrong day")
    assert cancelled.phase is Phase.CANCELLED
    assert world.issuer.is_revoked(rotation.new_key_id or "")
    assert labels(world.store) == {"1": {"current"}, "2": {"revoked"}}


def test_cancel_after_distribution_points_to_rollback(world: World) -> None:
    rid = world.service.start(SECRET, actor=ADMIN).id
    assert rid is not None
    world.service.step(rid, "ingest-dev", StepState.DISTRIBUTED, actor=DEV)
    with pytest.raises(RotabotError, match=f"/rotate rollback R-{rid}"):
        world.service.cancel(rid, actor=ADMIN)


def test_reported_problem_blocks_revocation_until_resolved(world: World) -> None:
    rid = switched(world)
    world.clock.advance(timedelta(hours=2))
    alert = world.service.report_problem(rid, "inference-api", actor=CAROL,
                                         description="HTTP 401 invalid_api_key")
    assert alert.id is not None and alert.rotation_id == rid
    gate = world.service.gate(rid)
    assert any(f"unresolved alert {alert.ref}: inference-api (prod)" in u for u in gate.unmet)
    assert world.service.tick(rid).phase is Phase.OBSERVING


# --- manual issuer -------------------------------------------------------------------------


def test_manual_issuer_waits_for_a_person_to_write_the_new_version(tmp_path: Path) -> None:
    w = make_world(tmp_path, issuer=ManualIssuer())
    rotation = w.service.start(SECRET, actor=ADMIN)
    assert rotation.id is not None
    assert rotation.phase is Phase.READY_CHECK
    assert w.service.prepare(rotation.id, actor=ADMIN).phase is Phase.READY_CHECK
    assert labels(w.store) == {"1": {"current"}}

    new = SecretMaterial({"api_key": "typed-in-by-a-person"})
    assert w.store.put(PATH, new) == "2"
    rotation = w.service.prepare(rotation.id, actor=ADMIN)
    assert rotation.phase is Phase.DISTRIBUTING
    assert (rotation.old_version, rotation.new_version) == ("1", "2")
    assert labels(w.store) == {"1": {"current"}, "2": {"pending"}}
    assert w.store.read(PATH, "2") == new


class KeyFinder(ManualIssuer):
    """A person-writes issuer whose provider can tell which key a value is (like anthropic)."""

    kind = "anthropic"

    def __init__(self, ids: dict[str, str]) -> None:
        super().__init__()
        self.ids = ids

    def identify(self, material: SecretMaterial) -> str | None:
        return self.ids.get(material.reveal()["api_key"])


def test_the_key_in_use_written_again_is_not_taken_as_the_new_one(tmp_path: Path) -> None:
    finder = KeyFinder({})
    w = make_world(tmp_path, issuer=finder)
    finder.ids = {w.old_material.reveal()["api_key"]: "key-1", "fresh": "key-2"}
    rotation = w.service.start(SECRET, actor=ADMIN)
    assert rotation.id is not None
    w.store.put(PATH, w.old_material)  # the same key again, as a new version

    failed = w.service.prepare(rotation.id, actor=ADMIN)

    assert failed.phase is Phase.FAILED and failed.failure_reason is not None
    assert "is the key in use (key-1), not a new one" in failed.failure_reason
    assert labels(w.store) == {"1": {"current"}, "2": set()}  # nothing marked pending
    w.store.put(PATH, SecretMaterial({"api_key": "fresh"}))
    resumed = w.service.resume(rotation.id, actor=ADMIN)
    assert resumed.phase is Phase.DISTRIBUTING
    assert (resumed.new_version, resumed.new_key_id, resumed.old_key_id) == ("3", "key-2", "key-1")


@pytest.mark.parametrize("reason", ["", "   "])
def test_blank_override_reason_revokes_nothing(world: World, reason: str) -> None:
    # A blank reason is no break-glass reason: the gate stays closed and the old credential
    # must stay valid and in the store.
    rid = switched(world)
    with pytest.raises(GateClosed):
        world.service.revoke(rid, actor=ADMIN, override_reason=reason)
    assert world.service.get(rid).phase is Phase.OBSERVING
    assert not world.issuer.is_revoked(world.old_key)
    assert labels(world.store) == {"1": {"previous"}, "2": {"current"}}


class ForgetfulIssuer(LocalIssuer):
    """An issuer that, like an http provider with a pre-existing key, has no id for the old
    credential, and refuses to revoke without one."""

    kind = "http"

    def mint(self, current: SecretMaterial | None) -> Minted:
        minted = super().mint(current)
        return Minted(minted.material, minted.key_id, previous_key_id=None)

    def revoke(self, key_id: str | None) -> None:
        if key_id is None:
            raise IssuerError("revoke needs the id of the key to revoke")
        super().revoke(key_id)


def test_revoke_without_an_old_key_id_says_to_revoke_by_hand(tmp_path: Path) -> None:
    w = make_world(tmp_path, issuer=ForgetfulIssuer())
    rid = switched(w)
    w.clock.advance(timedelta(hours=2))
    rotation = w.service.revoke(rid, actor=ADMIN)
    assert rotation.phase is Phase.REVOKED
    notes = w.db.events(rid, "revoke.by-hand")
    assert len(notes) == 1 and "revoke it at the provider by hand" in (notes[0].reason or "")
    assert labels(w.store)["1"] == {"revoked"}


class HeldClaims:
    """WorkClaims where another process may hold a claim; records what this one claimed."""

    def __init__(self) -> None:
        self.held_elsewhere: set[tuple[int, str]] = set()
        self.mine: set[tuple[int, str]] = set()

    def claim(self, rotation_id: int, kind: str) -> bool:
        key = (rotation_id, kind)
        if key in self.held_elsewhere or key in self.mine:
            return False
        self.mine.add(key)
        return True

    def release(self, rotation_id: int, kind: str) -> None:
        self.mine.discard((rotation_id, kind))


def test_a_rotation_another_process_is_preparing_is_left_to_it(tmp_path: Path) -> None:
    """start, the leader's timer and resume may all offer one preparation: one writer only,
    or the store's check-and-set would pause the rotation."""
    w = make_world(tmp_path)
    claims = HeldClaims()
    w.service.claims = claims
    claims.held_elsewhere.add((1, "prepare"))  # rotation 1 is the first one the world adds
    rotation = w.service.start(SECRET, actor=ADMIN)
    assert rotation.id == 1 and rotation.phase is Phase.READY_CHECK
    assert labels(w.store) == {"1": {"current"}}  # nothing minted, nothing written
    claims.held_elsewhere.clear()  # the other process finished (or its claim lapsed)
    rotation = w.service.prepare(1, actor="rotabot")
    assert rotation.phase is Phase.DISTRIBUTING
    assert labels(w.store) == {"1": {"current"}, "2": {"pending"}}
    assert claims.mine == set()  # released after the work


class HeldLocks:
    """WorkLocks where another process may hold a lock; records what this one holds."""

    def __init__(self) -> None:
        self.held_elsewhere: set[tuple[int, str]] = set()
        self.mine: set[tuple[int, str]] = set()
        self.asked: list[str] = []

    @contextmanager
    def hold(self, rotation_id: int, kind: str) -> Iterator[bool]:
        self.asked.append(kind)
        key = (rotation_id, kind)
        if key in self.held_elsewhere or key in self.mine:
            yield False
            return
        self.mine.add(key)
        try:
            yield True
        finally:
            self.mine.discard(key)


def test_a_switch_or_revocation_another_process_is_making_is_left_to_it(tmp_path: Path) -> None:
    """The same Switch or Revoke click delivered to several replicas: one promotes or
    revokes in the store, the others leave it to it. Two at once, OpenBao's check-and-set on
    the labels refuses the loser, which paused the rotation its twin had just moved on."""
    w = make_world(tmp_path)
    locks = HeldLocks()
    w.service.work_locks = locks
    rid = validated(w)
    step_all(w, rid, StepState.SIGNED_OFF)
    locks.held_elsewhere.add((rid, "switch"))
    assert w.service.switch(rid, actor=ADMIN).phase is Phase.VALIDATING
    assert labels(w.store) == {"1": {"current"}, "2": {"pending"}}  # nothing promoted
    locks.held_elsewhere.clear()
    assert w.service.switch(rid, actor=ADMIN).phase is Phase.OBSERVING
    w.clock.advance(timedelta(hours=2))
    locks.held_elsewhere.add((rid, "revoke"))
    assert w.service.revoke(rid, actor=ADMIN).phase is not Phase.REVOKED
    assert labels(w.store) == {"1": {"previous"}, "2": {"current"}}  # nothing retired
    locks.held_elsewhere.clear()
    assert w.service.revoke(rid, actor=ADMIN).phase is Phase.REVOKED
    assert labels(w.store)["1"] == {"revoked"}
    assert locks.mine == set()  # let go after the work
    assert [e.after for e in w.db.events(rid, "phase")][-3:] == ["switched", "observing",
                                                                 "revoked"]


def test_a_rollback_another_process_is_making_is_left_to_it(tmp_path: Path) -> None:
    """Two people press Roll back on two replicas at once. Each would see the new version
    current and restore "previous"; the second restore would put the new credential back.
    The one without the lock changes nothing and says who is at it."""
    w = make_world(tmp_path)
    locks = HeldLocks()
    w.service.work_locks = locks
    rid = switched(w)
    before = labels(w.store)
    locks.held_elsewhere.add((rid, "rollback"))
    with pytest.raises(BusyElsewhere, match="being rolled back by another rotabot process"):
        w.service.rollback(rid, actor=ADMIN, reason="inference errors")
    assert labels(w.store) == before and w.store.read(PATH) != w.old_material
    assert w.service.get(rid).phase is Phase.OBSERVING
    locks.held_elsewhere.clear()
    assert w.service.rollback(rid, actor=ADMIN).phase is Phase.ROLLED_BACK
    assert w.store.read(PATH) == w.old_material
    assert locks.asked[-2:] == ["rollback", "rollback"] and locks.mine == set()


class CountingStore(FileStore):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.retired = 0

    def retire(self, path: str, version: str) -> None:
        self.retired += 1
        super().retire(path, version)


def test_a_revocation_finished_while_taking_its_lock_is_not_made_again(tmp_path: Path) -> None:
    """A replica whose gate check passed gets the lock just after another one revoked and
    let go of it: it finds the rotation revoked and leaves the store alone."""
    store = CountingStore(tmp_path / "store")
    w = make_world(tmp_path, store=store)
    twin = RotationService(catalog=w.service.catalog, uow_factory=w.db.uow,
                           backends=w.service.backends, clock=w.clock,
                           directory=FakeDirectory({PROD: {CAROL}}))

    class TwinFinishesFirst(HeldLocks):
        @contextmanager
        def hold(self, rotation_id: int, kind: str) -> Iterator[bool]:
            if kind == "revoke":
                twin.revoke(rotation_id, actor=ADMIN)  # its whole revocation, lock to release
                assert store.retired == 1
            with super().hold(rotation_id, kind) as mine:
                yield mine

    rid = switched(w)
    w.clock.advance(timedelta(hours=2))
    w.service.work_locks = locks = TwinFinishesFirst()
    assert w.service.revoke(rid, actor=ADMIN).phase is Phase.REVOKED
    assert locks.asked == ["revoke"]
    assert store.retired == 1  # the twin's; ours found it done
    assert [e.after for e in w.db.events(rid, "phase")].count("revoked") == 1
