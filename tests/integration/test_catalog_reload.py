"""Catalog reload on SQLite and PostgreSQL: two replicas on one database, each with its own
catalog file; the one left on an older catalog refuses to act until it is reloaded, an invalid
file changes nothing, and a rotation in flight keeps the consumers it started with."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from harness.serve import ADMIN, catalog_head

from bot.catalog import Catalog, load_catalog_hashed
from bot.domain.clock import FixedClock
from bot.domain.errors import NotAuthorized
from bot.domain.replicas import CatalogStale, short
from bot.runtime.backends import CatalogBackends
from bot.services.catalog_reload import CatalogKeeper
from bot.services.ports import BackendRegistry
from bot.services.rotations import RotationService
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.replicas import SqlReplicaCatalogs
from storage.unit_of_work import sql_unit_of_work_factory

CATALOG = catalog_head(lanes=("dev", "prod")) + """\
stores:
  local: {{kind: file, path: {store}}}
secrets:
  model-api-key:
    issuer: {{kind: manual}}
    store: {{name: local, path: ai/model-api-key}}
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: hot}}
      inference-api: {{owner: U0ALICE, lane: prod, reload: hot}}
"""
# The edit: inference-api moves out, a batch job and a second secret come in.
EDITED = CATALOG.replace(
    "      inference-api: {{owner: U0ALICE, lane: prod, reload: hot}}\n",
    "      batch: {{owner: U0CAROL, lane: prod, reload: restart}}\n",
) + """\
  webhook-key:
    issuer: {{kind: manual}}
    store: {{name: local, path: hooks/webhook-key}}
    consumers:
      receiver: {{owner: U0BOB, lane: dev, reload: hot}}
"""
BROKEN = CATALOG.replace("reload: hot}}\n      inference", "reload: hott}}\n      inference")


@dataclass
class Replica:
    file: Path
    service: RotationService
    keeper: CatalogKeeper
    clock: FixedClock  # shared by both replicas

    def write(self, text: str, store: Path) -> None:
        self.file.write_text(text.format(store=store))


def replica(name: str, tmp_path: Path, database_url: str, clock: FixedClock) -> Replica:
    file = tmp_path / f"{name}.yml"
    file.write_text(CATALOG.format(store=tmp_path / "secrets"))
    catalog, sha = load_catalog_hashed(file)
    engine = make_engine(database_url)

    def backends_for(c: Catalog) -> BackendRegistry:
        return CatalogBackends(c, os.environ)

    service = RotationService(catalog=catalog, uow_factory=sql_unit_of_work_factory(engine),
                              backends=backends_for(catalog), clock=clock)
    keeper = CatalogKeeper(rotations=service, replicas=SqlReplicaCatalogs(engine),
                           replica_id=name, sha256=sha, file=str(file),
                           read=lambda: load_catalog_hashed(file),
                           backends_for=backends_for, clock=clock)
    keeper.announce()
    return Replica(file, service, keeper, clock)


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> tuple[Replica, Replica]:
    upgrade(database_url)
    clock = FixedClock()
    a = replica("replica-a", tmp_path, database_url, clock)
    b = replica("replica-b", tmp_path, database_url, clock)
    return a, b


def test_the_replica_left_on_the_old_catalog_refuses_until_reloaded(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    store = tmp_path / "secrets"
    assert a.keeper.stale() is None and b.keeper.stale() is None
    old = a.keeper.sha256
    rid = a.service.start("model-api-key", actor=ADMIN).id
    assert rid is not None

    a.write(EDITED, store)
    a.clock.advance(timedelta(seconds=1))
    outcome = a.keeper.reload(actor=ADMIN)
    assert outcome.applied and outcome.added == ("webhook-key",) and outcome.sha256 != old
    assert "webhook-key" in a.service.catalog.secrets
    with a.service.uow_factory() as uow:  # who changed the catalog, in the audit log
        (event,) = [e for e in uow.audit.export() if e.action == "catalog.reload"]
    assert (event.actor, event.before, event.after) == (ADMIN, short(old), short(outcome.sha256))
    assert event.detail["added"] == "webhook-key" and event.detail["replica"] == "replica-a"
    # The rotation in flight keeps the consumers it started with.
    assert set(a.service.get(rid).consumers) == {"retriever", "inference-api"}

    # B still runs the old catalog: it says so, with both hashes, and acts on nothing.
    reason = b.keeper.stale()
    assert reason is not None
    assert f"this replica runs catalog {short(old)}, the others run {short(outcome.sha256)}" \
        in reason
    with pytest.raises(CatalogStale, match="reload it"):
        b.keeper.guard()

    # A broken file on B changes nothing there and says where the problem is.
    b.write(BROKEN, store)
    refused = b.keeper.reload(actor=ADMIN)
    assert not refused.applied and b.keeper.sha256 == old
    assert any(e.startswith(f"{b.file}:") and "reload" in e for e in refused.errors), \
        refused.errors
    assert "webhook-key" not in b.service.catalog.secrets

    b.write(EDITED, store)
    fixed = b.keeper.reload(actor=ADMIN)
    assert fixed.applied and fixed.still_stale is None and b.keeper.sha256 == outcome.sha256
    b.keeper.guard()  # acts again
    assert a.keeper.stale() is None


def test_reloading_an_unchanged_old_file_does_not_make_the_others_stale(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, b = replicas
    a.write(EDITED, tmp_path / "secrets")
    a.clock.advance(timedelta(seconds=1))
    a.keeper.reload(actor=ADMIN)
    b.clock.advance(timedelta(seconds=1))
    again = b.keeper.reload(actor=ADMIN)  # B's file was not updated
    assert again.applied and again.sha256 == again.previous
    assert again.still_stale is not None and "Still refusing to act" in again.summary
    assert a.keeper.stale() is None and b.keeper.stale() is not None


def test_a_secret_with_a_rotation_in_flight_cannot_be_removed(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, _ = replicas
    rid = a.service.start("model-api-key", actor=ADMIN).id
    a.write(EDITED.replace("  model-api-key:", "  other-key:"), tmp_path / "secrets")
    refused = a.keeper.reload(actor=ADMIN)
    assert not refused.applied
    assert refused.errors == (
        f"{a.file}: secrets.model-api-key: R-{rid} is rotating it: finish or cancel R-{rid} "
        "before removing the secret from the catalog",)
    assert "model-api-key" in a.service.catalog.secrets


def test_only_catalog_admins_reload(replicas: tuple[Replica, Replica]) -> None:
    a, _ = replicas
    with pytest.raises(NotAuthorized, match="only the catalog's admins"):
        a.keeper.reload(actor="U0MALLORY")


def test_a_request_in_flight_keeps_the_catalog_it_started_with(
    replicas: tuple[Replica, Replica], tmp_path: Path
) -> None:
    a, _ = replicas
    a.write(EDITED, tmp_path / "secrets")
    with a.service.pinned():
        before = a.service.catalog
        a.keeper.reload(actor=ADMIN)
        # Swapped for the next request, not under this one.
        assert a.service.catalog is before and "webhook-key" not in a.service.catalog.secrets
        assert a.service.backends is not None
    assert "webhook-key" in a.service.catalog.secrets
