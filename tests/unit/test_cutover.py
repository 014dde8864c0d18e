"""Hard-cutover rotations (a platform that holds one valid value): the domain rules and the
service over in-memory storage, the real FileStore, the LocalIssuer standing in for a
single-key platform, and dotenv targets; the timer driven by a FixedClock.

Covers: no start without the readiness review's confirmation; mint, promote and every lane's
targets written at once; owners validating in any lane order within the window and the
rotation switching by itself; the window's end told once with the late owners and admins;
finishing with nothing to revoke; rollback by re-issue (a third value everywhere, the second
retired); cancel refused after the mint; the message's cliff line and countdown.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fakes import FakeBackends, FakeDatabase

from adapters.env_file import EnvFileTarget
from adapters.file_store import FileStore
from adapters.local_issuer import LocalIssuer
from adapters.manual_issuer import ManualIssuer
from bot.catalog import parse_catalog
from bot.domain.clock import FixedClock
from bot.domain.errors import RotabotError
from bot.domain.lifecycle import Phase, StepState
from bot.domain.receipts import ReceiptKind, receipts_for
from bot.domain.reminders import gate_blocked_text
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.domain.secret_material import SecretMaterial
from bot.services.emergency import start_emergency
from bot.services.ports import LaneTarget
from bot.services.rotations import CUTOVER_USAGE, MessageContext, RotationService
from bot.services.timers import TimerWork
from handlers.blocks.modals import rollback_modal
from handlers.blocks.replies import plan_message
from handlers.blocks.rotation import rotation_message

SECRET = "crm-token"
PATH = "crm/token"
ADMIN = "U0SECOPS"
DEV, PROD = "U0DEV", "U0PROD"
WINDOW = timedelta(minutes=15)

CATALOG = f"""\
version: 1
defaults:
  channel: C0ROTATE
  admins: [{ADMIN}]
  lanes: [dev, prod]
  observe: 1h
  cutover_window: 15m
stores:
  files: {{kind: file, path: /unused}}
secrets:
  {SECRET}:
    issuer: {{kind: local, dual_valid: false}}
    store: {{name: files, path: {PATH}}}
    consumers:
      sync-dev: {{owner: {DEV}, lane: dev, reload: hot}}
      sync: {{owner: {PROD}, lane: prod, reload: restart}}
"""


@dataclass
class World:
    service: RotationService
    store: FileStore
    issuer: LocalIssuer
    clock: FixedClock
    targets: dict[str, EnvFileTarget]
    first_key: str


def make_world(tmp_path: Path, issuer: LocalIssuer | ManualIssuer | None = None) -> World:
    store = FileStore(tmp_path / "store")
    local = LocalIssuer(keeps_both_valid=False)
    first = local.mint(None)
    assert first.material is not None and first.key_id is not None
    store.promote(PATH, store.write_pending(PATH, first.material, expected_current=None))
    targets = {
        lane: EnvFileTarget(tmp_path / f"{lane}.env", "CRM_TOKEN") for lane in ("dev", "prod")
    }
    backends = FakeBackends(store, issuer or local)
    backends.targets = {lane: [LaneTarget(f"{lane}.env", t)] for lane, t in targets.items()}
    clock = FixedClock()
    service = RotationService(catalog=parse_catalog(CATALOG), uow_factory=FakeDatabase().uow,
                              backends=backends, clock=clock)
    return World(service, store, local, clock, targets, first.key_id)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def token(material: SecretMaterial | None) -> str:
    """The one value a store version or a dotenv line holds."""
    assert material is not None
    [value] = material.reveal().values()
    return value


def cut_over(w: World) -> Rotation:
    rotation = w.service.start(SECRET, actor=ADMIN, ready_confirmed=True)
    assert rotation.id is not None
    return rotation


# --- the domain ------------------------------------------------------------------------------


def begin(window: timedelta | None) -> Rotation:
    now = datetime(2026, 11, 30, 9, 0)
    rotation = Rotation.begin(
        secret=SECRET, lanes=("dev", "prod"),
        consumers=[ConsumerPlan("sync-dev", "dev", DEV, "hot"),
                   ConsumerPlan("sync", "prod", PROD, "restart")],
        overlap=timedelta(0), observe=timedelta(hours=1), store_path=PATH, actor=ADMIN,
        now=now, cutover_window=window, gated_lanes=("dev", "prod"),
    )
    rotation.id = 1
    rotation.prepared(old_version="1", new_version="2", old_key_id="k-old", new_key_id="k-new",
                      actor="rotabot", now=now)
    return rotation


def test_a_cutover_opens_no_lane_until_it_writes_them_all_at_once() -> None:
    rotation = begin(WINDOW)
    assert rotation.cutover and rotation.overlap_until is None  # no overlap to warn about
    assert rotation.lane_to_open() is None and rotation.pending_steps() == []
    with pytest.raises(RotabotError, match="waits until rotabot has written"):
        rotation.mark_step("sync-dev", StepState.DISTRIBUTED, actor=DEV, now=datetime.now())
    at = datetime(2026, 11, 30, 9, 1)
    assert rotation.cut_over({"dev": ("dev.env",), "prod": ("prod.env",)}, current="2",
                             actor="rotabot", now=at)
    assert rotation.cutover_until == at + WINDOW
    assert not rotation.cut_over({}, current="2", actor="rotabot", now=at)  # once
    # Every lane at once: prod's owner need not wait for dev.
    assert {c.name for c, _ in rotation.pending_steps()} == {"sync-dev", "sync"}
    rotation.mark_step("sync", StepState.DISTRIBUTED, actor=PROD, now=at)
    rotation.mark_step("sync", StepState.VALIDATED, actor=PROD, now=at)
    assert [c.name for c in rotation.cutover_pending()] == ["sync-dev"]
    [receipt] = [r for r in receipts_for(rotation.events, ready_to_switch=False)
                 if r.kind is ReceiptKind.CUT_OVER]
    assert receipt.detail["window"] == "15m"


def test_an_overlapping_rotation_cannot_cut_over_and_a_cutover_cannot_cancel() -> None:
    with pytest.raises(RotabotError, match="overlaps"):
        begin(None).cut_over({}, current="2", actor="rotabot", now=datetime.now())
    with pytest.raises(RotabotError, match="stopped working at mint"):
        begin(WINDOW).cancel(actor=ADMIN, now=datetime.now())


# --- the service -----------------------------------------------------------------------------


def test_a_cutover_does_not_start_without_every_owner_confirmed(world: World) -> None:
    w = world
    assert w.service.is_cutover(SECRET)
    plan = w.service.plan(SECRET)
    assert plan.blockers == () and plan.cutover_window == WINDOW  # run, not refused
    assert "*hard cutover* (no overlap; every owner validates within 15m" in plan_message(
        plan)[0] + str([b.to_dict() for b in plan_message(plan)[1]])
    with pytest.raises(RotabotError, match="every owner confirms readiness first"):
        w.service.start(SECRET, actor=ADMIN)
    assert w.service.active() == [] and w.issuer.minted == [w.first_key]


def test_cutover_mints_promotes_and_writes_every_lane_then_finishes_with_nothing_to_revoke(
    world: World,
) -> None:
    w = world
    rotation = cut_over(w)
    rid = rotation.id
    assert rid is not None
    assert rotation.phase is Phase.DISTRIBUTING
    assert rotation.cutover_until == w.clock.now() + WINDOW
    # Minted: the old key died at once; the store's current and every lane hold the new one.
    assert w.issuer.is_revoked(w.first_key)
    assert w.store.describe(PATH).current == "2" == rotation.new_version
    new = token(w.store.read(PATH))
    assert token(w.targets["dev"].read()) == new == token(w.targets["prod"].read())
    assert rotation.lane_writes == {"dev": ("dev.env",), "prod": ("prod.env",)}

    # Prod validates first; once dev has too, the rotation switches by itself.
    for name, owner in (("sync", PROD), ("sync-dev", DEV)):
        w.service.step(rid, name, StepState.DISTRIBUTED, actor=owner)
        rotation = w.service.step(rid, name, StepState.VALIDATED, actor=owner).rotation
    assert rotation.phase is Phase.OBSERVING and rotation.switched_at == w.clock.now()
    for name, owner in (("sync", PROD), ("sync-dev", DEV)):
        w.service.step(rid, name, StepState.SIGNED_OFF, actor=owner)
    assert w.service.gate(rid).unmet[0].startswith("the observation window runs")
    gate = w.service.gate(rid)
    assert "rotation cannot be finished yet" in gate_blocked_text(rotation, gate.unmet)
    # The platform is not asked who uses the old value: nothing can, it died at the cutover.
    usage = w.service.usage_of_old(rotation)
    assert (usage.in_use, usage.summary) == (False, CUTOVER_USAGE)
    w.clock.advance(timedelta(hours=1))
    assert w.service.tick(rid).phase is Phase.REVOCABLE

    revoked_before = set(w.issuer.revoked)
    done = w.service.revoke(rid, actor=ADMIN)
    assert done.phase is Phase.REVOKED
    assert w.issuer.revoked == revoked_before  # nothing was revoked: nothing was left
    assert w.store.describe(PATH).current == "2"
    with w.service.uow_factory() as uow:
        actions = {e.action: e for e in uow.audit.for_rotation(rid)}
    assert "revoke.nothing-left" in actions and "revoke.by-hand" not in actions
    assert actions["cutover.written"].detail["window"] == "15m"


def test_a_consumer_reporting_the_new_value_completes_the_cutover_too(world: World) -> None:
    w = world
    rid = cut_over(w).id
    assert rid is not None
    w.service.step(rid, "sync-dev", StepState.DISTRIBUTED, actor=DEV)
    w.service.step(rid, "sync-dev", StepState.VALIDATED, actor=DEV)
    for step in (StepState.DISTRIBUTED, StepState.VALIDATED):
        outcome = w.service.step_from_evidence(rid, "sync", step, actor="evidence",
                                               note="runs version 2")
        assert outcome.changed
    assert outcome.rotation.phase is Phase.OBSERVING  # no Switch to wait for


def test_an_emergency_after_the_finish_cuts_over_again_at_once(world: World) -> None:
    w = world
    rid = cut_over(w).id
    assert rid is not None
    for step in (StepState.DISTRIBUTED, StepState.VALIDATED, StepState.SIGNED_OFF):
        for name, owner in (("sync", PROD), ("sync-dev", DEV)):
            w.service.step(rid, name, step, actor=owner)
    w.service.revoke(rid, actor=ADMIN, override_reason="provider reports the token leaked")
    urgent = start_emergency(w.service, rid, actor=ADMIN, reason="leaked").rotation
    # No review in an emergency: the admin's word stands in; every lane gets value 3 at once.
    assert urgent.urgent and urgent.cutover_until is not None
    assert w.store.describe(PATH).current == "3" == urgent.new_version
    assert token(w.targets["prod"].read()) == token(w.store.read(PATH))


def test_rollback_issues_a_third_value_everywhere_and_retires_the_second(world: World) -> None:
    w = world
    rotation = cut_over(w)
    rid = rotation.id
    assert rid is not None
    second, second_key = token(w.store.read(PATH)), rotation.new_key_id
    with pytest.raises(RotabotError, match="issue another replacement"):
        w.service.cancel(rid, actor=ADMIN)

    back, changed = w.service.rollback_once(rid, actor=ADMIN, reason="sync cannot log in")
    assert changed and back.phase is Phase.ROLLED_BACK
    state = w.store.describe(PATH)
    assert state.current == back.new_version == "3"
    third = token(w.store.read(PATH))
    assert third not in (second,)
    assert token(w.targets["dev"].read()) == third == token(w.targets["prod"].read())
    # The second value is gone: its key died with the new mint, its store version retired.
    assert second_key is not None and w.issuer.is_revoked(second_key)
    assert [v.destroyed for v in state.versions if v.version == "2"] == [True]
    assert back.new_key_id != second_key
    # A second click changes nothing.
    assert w.service.rollback_once(rid, actor=ADMIN) == (w.service.get(rid), False)


def test_a_person_written_cutover_cannot_be_reissued_by_rotabot(tmp_path: Path) -> None:
    w = make_world(tmp_path, issuer=ManualIssuer(keeps_both_valid=False))
    rotation = w.service.start(SECRET, actor=ADMIN, ready_confirmed=True)
    assert rotation.id is not None and rotation.phase is Phase.READY_CHECK
    w.store.write_pending(PATH, SecretMaterial({"api_key": "typed-by-a-person"}),
                          expected_current="1")
    rid = rotation.id
    rotation = w.service.prepare(rid, actor=ADMIN)
    assert rotation.cutover_until is not None  # noticed, then cut over at once
    with pytest.raises(RotabotError, match="create a replacement at the provider"):
        w.service.rollback(rid, actor=ADMIN)
    assert w.service.get(rid).phase is Phase.DISTRIBUTING  # nothing changed


# --- the timer: the window's end -------------------------------------------------------------


class Reminders:
    def __init__(self) -> None:
        self.keys: set[tuple[int, str, str]] = set()

    def sent(self, rotation_id: int) -> set[tuple[str, str]]:
        return {(c, k) for r, c, k in self.keys if r == rotation_id}

    def claim(self, rotation_id: int, consumer: str, kind: str, at: datetime) -> bool:
        if (rotation_id, consumer, kind) in self.keys:
            return False
        self.keys.add((rotation_id, consumer, kind))
        return True

    def release(self, rotation_id: int, consumer: str, kind: str) -> None:
        self.keys.discard((rotation_id, consumer, kind))


class Thread:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def direct_message(self, user: str, text: str) -> str:
        return "D1"

    def thread_note(self, rotation: Rotation, text: str) -> str | None:
        self.notes.append(text)
        return "1.0"


def test_the_window_end_is_told_once_with_the_late_owners_and_admins(world: World) -> None:
    w = world
    rid = cut_over(w).id
    assert rid is not None
    w.service.step(rid, "sync-dev", StepState.DISTRIBUTED, actor=DEV)
    w.service.step(rid, "sync-dev", StepState.VALIDATED, actor=DEV)
    thread, refreshed = Thread(), list[int]()
    timers = TimerWork(w.service, reminders=Reminders(), notices=thread,
                       refresh=refreshed.append)
    timers.run_once()
    assert refreshed == [rid] and thread.notes == []  # the countdown, nothing late yet
    w.clock.advance(timedelta(seconds=30))
    timers.run_once()
    assert refreshed == [rid]  # re-rendered at most once a minute
    w.clock.advance(WINDOW)
    timers.run_once()
    timers.run_once()
    [late] = [n for n in thread.notes if "cutover window has ended" in n]
    assert f"`sync` (prod, <@{PROD}>)" in late and f"<@{ADMIN}>" in late
    assert "sync-dev" not in late
    assert refreshed == [rid, rid]  # once more: the message now says *ended*
    # Nothing is lost: the late owner still validates and the rotation moves on.
    w.service.step(rid, "sync", StepState.DISTRIBUTED, actor=PROD)
    after = w.service.step(rid, "sync", StepState.VALIDATED, actor=PROD).rotation
    assert after.phase is Phase.OBSERVING


class BusyOnce:
    """WorkClaims where another process holds the cutover's claim the first time (and then
    dies, so its lease lapses)."""

    def __init__(self) -> None:
        self.refused = 0

    def claim(self, rotation_id: int, kind: str) -> bool:
        if kind == "open-lane" and self.refused == 0:
            self.refused += 1
            return False
        return True

    def release(self, rotation_id: int, kind: str) -> None:
        pass


def test_a_cutover_left_unwritten_is_finished_by_the_timer(world: World) -> None:
    w = world
    w.service.claims = BusyOnce()
    rotation = cut_over(w)
    assert rotation.id is not None and rotation.cutover_until is None
    assert w.targets["prod"].read() is None  # minted, nothing written yet
    TimerWork(w.service).run_once()
    after = w.service.get(rotation.id)
    assert after.cutover_until is not None
    assert token(w.targets["prod"].read()) == token(w.store.read(PATH)) == token(
        w.targets["dev"].read())


# --- what Slack shows ------------------------------------------------------------------------


def test_the_message_marks_a_cliff_with_a_countdown_and_the_rollback_says_reissue(
    world: World,
) -> None:
    w = world
    rotation = cut_over(w)
    context = MessageContext(admins=(ADMIN,), now=w.clock.now() + timedelta(minutes=5))
    _, blocks = rotation_message(rotation, context=context)
    shown = str([b.to_dict() for b in blocks])
    assert "the old value stops working at mint; no overlap" in shown
    assert "*10m left*" in shown and "Overlap until" not in shown
    assert "Roll back (issue another)" in shown
    late = MessageContext(admins=(ADMIN,), now=w.clock.now() + WINDOW)
    assert "window has *ended*" in str([b.to_dict() for b in rotation_message(
        rotation, context=late)[1]])
    modal = str(rollback_modal(rotation, None, []).to_dict())
    assert "issues another replacement" in modal and "cannot come back" in modal
