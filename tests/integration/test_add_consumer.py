"""Adding a consumer to a rotation in flight, on real SQLite and PostgreSQL: a reload that
adds catalog consumers names the command for each rotation of that secret; an admin adds one
as a new step in its lane (asked at once when its lane's turn has come, or waiting for it),
audited and told in the thread; refused with words when unknown, already in, another
secret's, after the switch, or once the rotation ended."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.serve import catalog_head
from test_freeze import notes
from test_timers import World, make_world

from bot.domain.errors import NotAuthorized, RotabotError
from bot.domain.lifecycle import Phase, StepState

CATALOG = catalog_head(observe="2h", admins=("U0SECOPS",), lanes=("dev", "prod")) + """\
stores:
  files: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: hot}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot}
  cache-password:
    issuer: {kind: manual}
    store: {name: files, path: infra/cache}
    consumers:
      cache-warmer: {owner: U0BOB, lane: dev, reload: hot}
"""
# The edit a team makes mid-rotation: a dev consumer and a prod consumer come in.
EDITED = CATALOG.replace(
    "      inference-api: {owner: U0ALICE, lane: prod, reload: hot}\n",
    "      inference-api: {owner: U0ALICE, lane: prod, reload: hot}\n"
    "      billing-sync: {owner: U0CAROL, lane: dev, reload: restart}\n"
    "      reporting: {owner: U0CAROL, lane: prod, reload: hot}\n",
)


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from make_world(database_url, tmp_path, CATALOG)


def test_a_reload_names_the_new_consumers_and_an_admin_adds_them_to_the_rotation(
    world: World, tmp_path: Path
) -> None:
    svc = world.c.service
    rotation = svc.start("model-api-key", actor="U0SECOPS")
    rid = rotation.id
    assert rid is not None
    for step in (StepState.DISTRIBUTED, StepState.VALIDATED):
        svc.step(rid, "retriever", step, actor="U0BOB")  # dev done: prod's turn
    with pytest.raises(RotabotError, match="the catalog has no consumer billing-sync"):
        svc.add_consumer(rid, "billing-sync", actor="U0SECOPS")

    (tmp_path / "catalog.yml").write_text(EDITED)
    outcome = world.c.catalog_keeper.reload(actor="U0SECOPS")
    assert outcome.applied
    assert (f"R-{rid} of model-api-key does not have billing-sync: "
            f"`/rotate add-consumer R-{rid} billing-sync` adds it.") in outcome.summary
    assert f"`/rotate add-consumer R-{rid} reporting`" in outcome.summary
    assert svc.get(rid).consumers.keys() == {"retriever", "inference-api"}  # kept

    with pytest.raises(NotAuthorized, match="only admins of model-api-key"):
        svc.add_consumer(rid, "billing-sync", actor="U0BOB")
    with pytest.raises(RotabotError, match="already in"):
        svc.add_consumer(rid, "retriever", actor="U0SECOPS")
    with pytest.raises(RotabotError, match="is a consumer of cache-password, not of"):
        svc.add_consumer(rid, "cache-warmer", actor="U0SECOPS")
    with pytest.raises(RotabotError, match="has no consumer nobody"):
        svc.add_consumer(rid, "nobody", actor="U0SECOPS")

    # dev's turn came already: billing-sync is asked at once, and prod waits for it.
    after = svc.add_consumer(rid, "billing-sync", actor="U0SECOPS")
    assert after.consumer("billing-sync").lane == "dev"
    assert [(c.name, s) for c, s in after.pending_steps()] == [
        ("billing-sync", StepState.DISTRIBUTED)]
    prod = svc.add_consumer(rid, "reporting", actor="U0SECOPS")
    assert ("reporting", StepState.DISTRIBUTED) not in [
        (c.name, s) for c, s in prod.pending_steps()]
    assert [(a, d["consumer"], d["lane"]) for a, _, d in notes(world, rid, "consumer.added")] == [
        ("U0SECOPS", "billing-sync", "dev"), ("U0SECOPS", "reporting", "prod")]
    world.flush()
    (told,) = world.thread_texts(rid, "added `billing-sync`")
    assert "<@U0CAROL>" in told and "its owner is asked below" in told
    assert world.thread_texts(rid, "waits for the prod lane's turn")
    prompts = [t for t in world.thread_texts(rid, "billing-sync") if t != told]
    assert prompts and all("<@U0CAROL>" in t for t in prompts)  # the owner's prompt

    # Nothing switches until the added consumers validated too; after it none can join.
    for name, owner in (("billing-sync", "U0CAROL"), ("inference-api", "U0ALICE"),
                        ("reporting", "U0CAROL")):
        with pytest.raises(RotabotError):
            svc.switch(rid, actor="U0SECOPS")
        svc.step(rid, name, StepState.DISTRIBUTED, actor=owner)
        svc.step(rid, name, StepState.VALIDATED, actor=owner)
    assert svc.switch(rid, actor="U0SECOPS").phase is Phase.OBSERVING
    (tmp_path / "catalog.yml").write_text(EDITED.replace(
        "      reporting:", "      audit-export: {owner: U0BOB, lane: prod, reload: hot}\n"
        "      reporting:"))
    assert "add-consumer" not in world.c.catalog_keeper.reload(actor="U0SECOPS").summary
    with pytest.raises(RotabotError, match="switched already"):
        svc.add_consumer(rid, "audit-export", actor="U0SECOPS")
    cancelled = svc.start("cache-password", actor="U0SECOPS")
    assert cancelled.id is not None
    svc.cancel(cancelled.id, actor="U0SECOPS")
    with pytest.raises(RotabotError, match="has ended"):
        svc.add_consumer(cancelled.id, "cache-warmer", actor="U0SECOPS")
