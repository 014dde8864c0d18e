"""Migration 0007 (lanes with distribution targets) with a rotation in flight: written by the
version before, whose vault-kv2 pending credential sits on the secret's own path as a plain
KV version labelled pending. After `rotabot db upgrade` this version finishes it: the switch
promotes that version in place, revocation destroys the old one, and nothing is staged."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta

import hvac
import pytest
from alembic import command
from sqlalchemy import Column, MetaData, Table, insert, inspect, select

from adapters.vault_store import VaultKV2Store
from bot.catalog import parse_catalog
from bot.domain.clock import FixedClock
from bot.domain.lifecycle import Phase, StepState
from bot.runtime.backends import CatalogBackends
from bot.services.rotations import RotationService
from storage.engine import make_engine
from storage.migrate import alembic_config, current_revision, head_revision, upgrade
from storage.sql_common import ROTATIONS, STEPS
from storage.unit_of_work import sql_unit_of_work_factory

pytestmark = [pytest.mark.openbao]

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
ADMIN, OWNER = "U0ADMIN", "U0BOB"

CATALOG = """\
version: 1
defaults: {{channel: C0ROTATE, admins: [U0ADMIN], lanes: [dev]}}
stores:
  bao: {{kind: vault-kv2, url: "{url}", token_env: VAULT_TOKEN}}
secrets:
  model-api-key:
    issuer: {{kind: manual}}
    store: {{name: bao, path: {path}}}
    # Added with the upgrade: the rotation in flight did not plan it, so nothing is written.
    targets:
      dev: [{{kind: vault-kv2, store: bao, path: {path}-dev}}]
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: hot}}
"""


def legacy_in_flight(bao: hvac.Client, path: str) -> None:
    """What the version before 0007 left in OpenBao mid-rotation: v1 current, v2 (the new
    credential) written on the path itself and labelled pending."""
    kv = bao.secrets.kv.v2
    kv.create_or_update_secret(path=path, secret={"api_key": "old-key"})
    kv.create_or_update_secret(path=path, secret={"api_key": "new-key"}, cas=1)
    kv.update_metadata(path=path, custom_metadata={
        "rotabot-current": "1", "rotabot-pending": "2"})


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_a_rotation_in_flight_at_0006_finishes_after_the_upgrade(
    database_url: str, openbao_server: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, token = openbao_server.url, openbao_server.token  # type: ignore[attr-defined]
    bao = hvac.Client(url=url, token=token)
    path = f"migrate/{uuid.uuid4().hex[:10]}/key"
    legacy_in_flight(bao, path)
    upgrade(database_url, "0006")
    engine = make_engine(database_url)
    # The rotations table as 0006 had it (the head model would add 0007's defaults).
    at_0006 = Table("rotations", MetaData(), *(
        Column(c.name, c.type) for c in ROTATIONS.c
        if c.name not in ("gated_lanes", "lane_writes")))
    with engine.begin() as conn:
        conn.execute(insert(at_0006).values(
            id=1, secret="model-api-key", phase="validating", lanes='["dev"]',
            overlap_seconds=86400.0, observe_seconds=60.0, created_at=T0, started_by=ADMIN,
            store_path=path, prepared_at=T0, overlap_until=T0 + timedelta(days=1),
            old_version="1", new_version="2", channel="C0ROTATE", urgent=False,
            auto_revoke=False, revision=4))
        conn.execute(insert(STEPS).values(
            rotation_id=1, name="retriever", lane="dev", owner=OWNER, reload="hot",
            state="validated", updated_at=T0, updated_by=OWNER))
    assert "gated_lanes" not in {c["name"] for c in inspect(engine).get_columns("rotations")}

    upgrade(database_url)

    assert current_revision(database_url) == head_revision()
    with engine.connect() as conn:
        assert conn.execute(select(ROTATIONS.c.gated_lanes, ROTATIONS.c.lane_writes)).all() == [
            ("[]", "{}")]
    monkeypatch.setenv("VAULT_TOKEN", token)
    catalog = parse_catalog(CATALOG.format(url=url, path=path))
    clock = FixedClock(T0 + timedelta(hours=1))
    service = RotationService(
        catalog=catalog, uow_factory=sql_unit_of_work_factory(engine),
        backends=CatalogBackends(catalog, os.environ), clock=clock)
    rotation = service.get(1)
    assert rotation.gated_lanes == () and rotation.lane_to_open() is None
    assert rotation.ready_to_switch()

    switched = service.switch(1, actor=ADMIN)

    # Promoted in place: version 2 is current, the one a normal read gets; nothing staged.
    assert switched.phase is Phase.OBSERVING and switched.new_version == "2"
    store = VaultKV2Store(bao)
    state = store.describe(path)
    assert (state.current, state.previous, state.pending) == ("2", "1", None)
    assert store.read(path).reveal() == {"api_key": "new-key"}
    assert bao.secrets.kv.v2.read_secret_version(
        path=path, raise_on_deleted_version=True)["data"]["data"] == {"api_key": "new-key"}
    assert store.describe(f"{path}-dev").versions == ()  # not part of its plan

    service.step(1, "retriever", StepState.SIGNED_OFF, actor=OWNER)
    clock.advance(timedelta(minutes=2))
    assert service.tick(1).phase is Phase.REVOCABLE
    done = service.revoke(1, actor=ADMIN)

    assert done.phase is Phase.REVOKED
    meta = bao.secrets.kv.v2.read_secret_metadata(path=path)["data"]
    assert meta["versions"]["1"]["destroyed"] is True
    assert meta["custom_metadata"] == {"rotabot-current": "2", "rotabot-revoked": "1"}

    # And back: 0007 removes only its two columns; the rotation stays.
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0006")
    columns = {c["name"] for c in inspect(engine).get_columns("rotations")}
    assert not {"gated_lanes", "lane_writes"} & columns
    engine.dispose()
