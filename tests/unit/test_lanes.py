"""Lanes with distribution targets: the new credential reaches each lane's targets only on its
turn, the secret itself only at the switch, and rollback, cancel and failures put the previous
one back. Real FileStore, LocalIssuer and dotenv targets, built from the catalog as in
production (bot/runtime/backends.CatalogBackends); storage in memory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fakes import FakeDatabase

from adapters.env_file import EnvFileTarget
from bot.catalog import parse_catalog
from bot.domain.clock import FixedClock
from bot.domain.errors import OutOfOrder
from bot.domain.lifecycle import Phase, StepState
from bot.domain.receipts import ReceiptKind
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.runtime.backends import CatalogBackends
from bot.services.distribution import written_from_json
from bot.services.rotations import RotationService
from bot.services.timers import TimerWork

SECRET = "model-api-key"
PATH = "ai/model-api-key"
ADMIN, DEV, STAGING, PROD = "U0SECOPS", "U0DEV", "U0STAGE", "U0PROD"
ORDER = [("ingest-dev", DEV), ("ingest-staging", STAGING), ("inference-api", PROD)]

CATALOG = f"""\
version: 1
defaults:
  channel: C0ROTATE
  admins: [{ADMIN}]
  lanes: [dev, staging, prod]
stores:
  files: {{kind: file, path: store}}
secrets:
  {SECRET}:
    issuer: {{kind: local}}
    store: {{name: files, path: {PATH}}}
    targets:
      dev: [{{kind: env-file, file: lanes/dev.env, key: MODEL_API_KEY}}]
      staging:
        - {{kind: env-file, file: lanes/staging.env, key: MODEL_API_KEY}}
        - {{kind: env-file, file: lanes/jobs.env, key: MODEL_API_KEY}}
      prod: [{{kind: env-file, file: {{prod}}/prod.env, key: MODEL_API_KEY}}]
    consumers:
      ingest-dev: {{owner: {DEV}, lane: dev, reload: hot}}
      ingest-staging: {{owner: {STAGING}, lane: staging, reload: hot}}
      inference-api: {{owner: {PROD}, lane: prod, reload: restart}}
"""


@dataclass
class World:
    service: RotationService
    backends: CatalogBackends
    root: Path
    told: list[tuple[str, ReceiptKind, dict[str, str]]]

    def env(self, name: str) -> str | None:
        material = EnvFileTarget(self.root / "lanes" / name, "MODEL_API_KEY").read()
        return None if material is None else material.reveal()["MODEL_API_KEY"]

    def stored(self, version: str | None = None) -> str:
        store = self.backends.store_for(SECRET)
        return store.read(PATH, version).reveal()["api_key"]

    def step(self, rid: int, consumer: str, who: str, *steps: StepState) -> Rotation:
        rotation = self.service.get(rid)
        for target in steps:
            rotation = self.service.step(rid, consumer, target, actor=who).rotation
        return rotation

    def validate(self, rid: int, consumer: str, who: str) -> Rotation:
        return self.step(rid, consumer, who, StepState.DISTRIBUTED, StepState.VALIDATED)


def make_world(tmp_path: Path, *, prod_folder: str = "lanes") -> World:
    (tmp_path / "lanes").mkdir()
    catalog = parse_catalog(CATALOG.replace("{prod}", prod_folder), str(tmp_path / "c.yml"))
    backends = CatalogBackends(catalog, {}, base_dir=tmp_path)
    service = RotationService(catalog=catalog, uow_factory=FakeDatabase().uow,
                              backends=backends, clock=FixedClock())
    told: list[tuple[str, ReceiptKind, dict[str, str]]] = []
    service.on_receipts.append(
        lambda r, receipts: told.extend((r.ref, x.kind, x.detail) for x in receipts))
    w = World(service, backends, tmp_path, told)
    # The credential in use before the rotation, current in the store and at every target.
    store = backends.store_for(SECRET)
    old = backends.issuer_for(SECRET).mint(None).material
    assert old is not None
    store.promote(PATH, store.write_pending(PATH, old, expected_current=None))
    for targets in backends.targets_for(SECRET).values():
        for t in targets:
            if (tmp_path / "lanes").exists() and t.target.where.startswith(
                f"env-file {tmp_path / 'lanes'}"
            ):
                t.target.write(old)
    return w


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def test_only_the_first_lane_gets_the_new_credential_at_start(world: World) -> None:
    old = world.stored()

    r = world.service.start(SECRET, actor=ADMIN)

    assert r.phase is Phase.DISTRIBUTING and r.id is not None
    new = world.stored(r.new_version)
    assert new != old
    assert world.stored() == old  # a normal read of the secret: still the current one
    assert world.env("dev.env") == new
    assert (world.env("staging.env"), world.env("jobs.env"), world.env("prod.env")) == (
        old, old, old)
    # Only dev's owner is asked; the others wait for their lane to open.
    assert [(c.name, s) for c, s in r.pending_steps()] == [
        ("ingest-dev", StepState.DISTRIBUTED)]
    opened = [d for _, kind, d in world.told if kind is ReceiptKind.LANE_OPENED]
    assert [d["lane"] for d in opened] == ["dev"]
    (written,) = written_from_json(opened[0]["written"])
    assert written.target == "env-file lanes/dev.env MODEL_API_KEY"
    assert new not in str(world.told) and old not in str(world.told)


def test_a_lane_opens_when_the_one_before_is_validated(world: World) -> None:
    r = world.service.start(SECRET, actor=ADMIN)
    assert r.id is not None
    with pytest.raises(OutOfOrder, match="waits until every dev consumer is validated"):
        world.step(r.id, "ingest-staging", STAGING, StepState.DISTRIBUTED)
    new = world.stored(r.new_version)

    r = world.validate(r.id, "ingest-dev", DEV)

    assert r.lane_writes.keys() == {"dev", "staging"}
    assert world.env("staging.env") == new and world.env("jobs.env") == new
    assert world.env("prod.env") != new
    assert [(c.name, s) for c, s in r.pending_steps()] == [
        ("ingest-staging", StepState.DISTRIBUTED)]


def test_switch_then_rollback_puts_the_previous_credential_back_everywhere(
    world: World,
) -> None:
    old = world.stored()
    r = world.service.start(SECRET, actor=ADMIN)
    rid = r.id
    assert rid is not None
    new = world.stored(r.new_version)
    for name, who in ORDER:
        r = world.validate(rid, name, who)
    assert {world.env(f) for f in ("dev.env", "staging.env", "jobs.env", "prod.env")} == {new}
    assert world.stored() == old  # still, until the switch

    r = world.service.switch(rid, actor=ADMIN)
    assert r.phase is Phase.OBSERVING and world.stored() == new

    r = world.service.rollback(rid, actor=ADMIN, reason="prod 401s")

    assert r.phase is Phase.ROLLED_BACK
    assert world.stored() == old
    assert {world.env(f) for f in ("dev.env", "staging.env", "jobs.env", "prod.env")} == {old}
    (detail,) = [d for _, kind, d in world.told if kind is ReceiptKind.ROLLED_BACK]
    assert [w.target for w in written_from_json(detail["targets"])] == [
        "env-file lanes/dev.env MODEL_API_KEY", "env-file lanes/staging.env MODEL_API_KEY",
        "env-file lanes/jobs.env MODEL_API_KEY", "env-file lanes/prod.env MODEL_API_KEY"]


def test_cancel_before_anyone_distributed_writes_the_old_credential_back(world: World) -> None:
    old = world.stored()
    r = world.service.start(SECRET, actor=ADMIN)
    assert r.id is not None and world.env("dev.env") != old

    r = world.service.cancel(r.id, actor=ADMIN, reason="wrong window")

    assert r.phase is Phase.CANCELLED
    assert world.env("dev.env") == old


def test_a_target_that_cannot_be_written_keeps_the_lane_closed_until_resumed(
    tmp_path: Path,
) -> None:
    # prod's dotenv folder does not exist: its target cannot be written.
    w = make_world(tmp_path, prod_folder="missing")
    r = w.service.start(SECRET, actor=ADMIN)
    rid = r.id
    assert rid is not None
    new = w.stored(r.new_version)
    w.validate(rid, "ingest-dev", DEV)

    r = w.validate(rid, "ingest-staging", STAGING)

    assert r.phase is Phase.FAILED and r.failed_from is Phase.DISTRIBUTING
    assert r.failure_reason is not None
    assert "opening the prod lane failed" in r.failure_reason
    assert "env-file missing/prod.env MODEL_API_KEY" in r.failure_reason
    assert "TargetUnwritable" in r.failure_reason
    assert new not in r.failure_reason
    assert "prod" not in r.lane_writes
    assert r.consumer("inference-api").state is StepState.WAITING
    assert r.consumer("ingest-staging").state is StepState.VALIDATED  # nothing else changed

    (tmp_path / "missing").mkdir()
    r = w.service.resume(rid, actor=ADMIN)

    assert r.phase is Phase.DISTRIBUTING and "prod" in r.lane_writes
    assert EnvFileTarget(tmp_path / "missing" / "prod.env", "MODEL_API_KEY").read() is not None
    assert [(c.name, s) for c, s in r.pending_steps()] == [
        ("inference-api", StepState.DISTRIBUTED)]


def test_a_lane_half_written_gets_the_previous_credential_back(tmp_path: Path) -> None:
    w = make_world(tmp_path)
    old = w.stored()
    r = w.service.start(SECRET, actor=ADMIN)
    assert r.id is not None
    # staging's second target turns unwritable: a folder where its file should be.
    (tmp_path / "lanes" / "jobs.env").unlink()
    (tmp_path / "lanes" / "jobs.env").mkdir()

    r = w.validate(r.id, "ingest-dev", DEV)

    assert r.phase is Phase.FAILED and r.failure_reason is not None
    assert "env-file lanes/jobs.env MODEL_API_KEY" in r.failure_reason
    assert "env-file lanes/staging.env MODEL_API_KEY got the previous credential back" in (
        r.failure_reason)
    assert w.env("staging.env") == old


def test_the_timer_opens_a_lane_whose_turn_came_while_the_process_was_down(
    world: World,
) -> None:
    r = world.service.start(SECRET, actor=ADMIN)
    assert r.id is not None
    world.step(r.id, "ingest-dev", DEV, StepState.DISTRIBUTED)
    # The step committed, then the process stopped before writing staging's targets.
    world.service._mutate(r.id, lambda rot, uow: rot.mark_step(
        "ingest-dev", StepState.VALIDATED, actor=DEV, now=world.service.clock.now()))
    assert world.service.get(r.id).lane_to_open() == "staging"

    assert TimerWork(world.service).run_once() == 1

    after = world.service.get(r.id)
    assert after.lane_to_open() is None and "staging" in after.lane_writes
    assert world.env("staging.env") == world.stored(after.new_version)


def test_the_manual_issuer_is_told_to_write_where_vault_stages_the_new_credential(
    world: World,
) -> None:
    catalog = parse_catalog(CATALOG.replace(
        "files: {kind: file, path: store}",
        'files: {kind: vault-kv2, url: "http://127.0.0.1:8200", token_env: VAULT_TOKEN}',
    ).replace("issuer: {kind: local}", "issuer: {kind: manual}").replace("{prod}", "lanes"))
    service = RotationService(catalog=catalog, uow_factory=FakeDatabase().uow,
                              backends=world.backends, clock=FixedClock())
    rotation = Rotation.begin(
        secret=SECRET, lanes=["dev"], consumers=[ConsumerPlan("ingest-dev", "dev", DEV, "hot")],
        overlap=timedelta(days=1), observe=timedelta(hours=1), store_path=PATH, actor=ADMIN,
        now=FixedClock().now())

    context = service.message_context(rotation)

    # Not the secret's own path: every consumer reading it would get the new credential at once.
    assert context.write_to == f"secret/rotabot-pending/{PATH}"
    assert world.service.message_context(rotation).write_to is None  # the file store: in place
