"""POST /evidence and what a report does, in one process: real database (SQLite and
PostgreSQL), real Slack stand-in, signed HTTP through Starlette's TestClient, a clock moved by
hand. The e2e tests (tests/e2e/test_evidence.py) drive the same through `rotabot serve`."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.backends import LocalBackends
from harness.loopback import Loopback, QuietHandler
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot.domain.alert_intake import sign
from bot.domain.clock import FixedClock
from bot.domain.evidence import EVIDENCE_ACTOR, EvidenceReport, new_credential
from bot.domain.lifecycle import Phase, StepState
from bot.domain.secret_material import SecretMaterial
from bot.runtime.bootstrap import Container, build
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.services.evidence import EvidenceRequired
from bot.services.health import HealthCheckFailed
from handlers.evidence_http import evidence_route
from storage.evidence import SqlEvidenceLog
from storage.migrate import upgrade

ALERT_SECRET = "test-evidence-signing-key"
SIGNING_SECRET = "0123456789abcdef0123456789abcdef"
CANARY = "sk-proj-" + "Zq8" * 12  # a key-shaped value a careless sender might put in a report

CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0SECOPS]
  lanes: [dev, staging, prod]
  require_evidence: [prod]
stores:
  files: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: restart, checks: [retrieval, ingestion]}
      nightly-ingest: {owner: U0BOB, lane: staging, reload: restart, heartbeat: 10m}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot}
"""
PATH = "ai/model-api-key"


class World:
    def __init__(self, c: Container, state: StandinState, clock: FixedClock) -> None:
        self.c, self.state, self.clock = c, state, clock
        self.http = TestClient(Starlette(routes=[evidence_route(c.deps, c.evidence)]))

    def send(self, payload: dict[str, Any] | bytes, *, delivery: str | None = None,
             ts: int | None = None, key: str = ALERT_SECRET) -> Any:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        stamp = int(self.clock.now().timestamp()) if ts is None else ts
        return self.http.post("/evidence", content=body, headers={
            "Content-Type": "application/json",
            "X-Rotabot-Timestamp": str(stamp),
            "X-Rotabot-Signature": sign(key, stamp, body),
            "X-Rotabot-Delivery": delivery or uuid.uuid4().hex,
        })

    def start(self) -> int:
        rotation = self.c.service.start("model-api-key", actor="U0SECOPS")
        assert rotation.id is not None and rotation.phase is Phase.DISTRIBUTING
        assert (rotation.old_version, rotation.new_version) == ("1", "2")
        return rotation.id

    def stored(self, rid: int) -> list[EvidenceReport]:
        return SqlEvidenceLog(self.c.engine).for_rotation(rid)

    def alerts(self) -> list[Any]:
        with self.c.service.uow_factory() as uow:
            return uow.alerts.recent(100)


def _settings(database_url: str, catalog: Path, slack_url: str) -> Settings:
    return Settings(catalog_path=str(catalog), database_url=database_url,
                    slack_api_url=slack_url, slack_bot_token="xoxb-test",
                    slack_signing_secret=SIGNING_SECRET, alert_secret=ALERT_SECRET)


def _workspace() -> StandinState:
    state = StandinState()
    for user in ("U0SECOPS", "U0ALICE", "U0BOB"):
        state.add_user(user, user.lower())
    state.add_channel("C0ROTATE", "rotations", members=["U0SECOPS"])
    state.add_channel("C0INCIDENT", "incidents", members=["U0SECOPS"])
    state.forbid(CANARY)
    return state


@contextmanager
def _world(database_url: str, tmp_path: Path, text: str = CATALOG) -> Iterator[World]:
    state = _workspace()
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(text)
    backends = LocalBackends(tmp_path / "s")
    # Version 1 is current; the rotation's issuer (LocalBackends: a local one) mints 2.
    backends.store.put(PATH, SecretMaterial({"api_key": "old-value"}))
    clock = FixedClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    with StandinServer(state) as server:
        upgrade(database_url)
        c = build(_settings(database_url, catalog, server.base_url), clock=clock,
                  migrate=False, backends=backends)
        w = World(c, state, clock)
        yield w
        c.alerts.flush()
        c.notifier.flush()
        assert state.violations == []  # every Slack call well-formed, no canary sent
        c.engine.dispose()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    """SQLite: the HTTP refusals do not depend on the database."""
    with _world(f"sqlite:///{tmp_path / 'rotabot.db'}", tmp_path) as w:
        yield w


@pytest.fixture
def any_db_world(database_url: str, tmp_path: Path) -> Iterator[World]:
    with _world(database_url, tmp_path) as w:
        yield w


# --- storage and the steps, on SQLite and PostgreSQL ---------------------------------------


def test_reports_move_steps_and_are_kept_on_each_database(any_db_world: World) -> None:
    w = any_db_world
    rid = w.start()
    # retriever names two checks: the new version alone marks it distributed, one passing
    # workflow is not enough for validated, the second is.
    r1 = w.send({"consumer": "retriever", "version": "v2", "workflow": "retrieval"})
    assert r1.status_code == 200, r1.text
    assert r1.json()["steps"] == ["distributed"] and r1.json()["matched"] == "new"
    # The message shows each named check: one passed, one not reported yet.
    assert w.c.health.evidence(w.c.service.get(rid)).checks == {
        "retriever": ("retrieval: passed at 09:00", "ingestion: not reported")}
    w.c.notifier.flush()
    parent = w.state.find_message("C0ROTATE", w.c.service.get(rid).message_ts or "")
    assert parent is not None
    assert "checks: retrieval: passed at 09:00 · ingestion: not reported" in json.dumps(
        parent.blocks, ensure_ascii=False)
    r2 = w.send({"consumer": "retriever", "secret": "model-api-key", "version": "2",
                 "workflow": "ingestion", "ok": True})
    assert r2.json()["steps"] == ["validated"], r2.text
    rotation = w.c.service.get(rid)
    c = rotation.consumer("retriever")
    assert (c.state, c.updated_by) == (StepState.VALIDATED, EVIDENCE_ACTOR)
    assert c.note == "validated: retriever reported version 2 (ingestion passed) at 09:00"
    kept = w.stored(rid)
    assert [(r.consumer, r.version, r.workflow, r.lane, r.ok) for r in kept] == [
        ("retriever", "v2", "retrieval", "dev", True),
        ("retriever", "2", "ingestion", "dev", True),
    ]
    assert kept[0].at == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # tz-aware on both back ends
    assert SqlEvidenceLog(w.c.engine).last_received("model-api-key", "retriever") == w.clock.now()
    # The audit trail says the evidence moved the step, with what it reported.
    with w.c.service.uow_factory() as uow:
        steps = [(e.actor, e.after, e.reason) for e in uow.audit.for_rotation(rid)
                 if e.action == "step"]
    assert steps[-1] == (EVIDENCE_ACTOR, "validated", c.note)
    # The thread's prompt for that step says it rests on the report, and has no buttons.
    w.c.notifier.flush()
    said = [m for m in w.state.thread("C0ROTATE", rotation.message_ts or "")
            if "retriever reported version 2" in m.text]
    assert said and not any(b.get("type") == "actions" for b in said[-1].blocks)


def test_silent_consumer_alerts_once_across_replicas_and_restarts(
    any_db_world: World, database_url: str, tmp_path: Path
) -> None:
    w = any_db_world
    rid = w.start()
    for step in (StepState.DISTRIBUTED, StepState.VALIDATED):  # dev done by its owner
        w.c.service.step(rid, "retriever", step, actor="U0BOB")
    # staging's turn came at 09:00; nightly-ingest reports every 10m and then stops.
    w.clock.advance(timedelta(minutes=9))
    assert w.c.evidence.run_silence() == 0
    # A second replica on the same database, its own timer: both tick at 09:25.
    other = build(_settings(database_url, tmp_path / "catalog.yml", w.c.settings.slack_api_url),
                  clock=w.clock, migrate=False, backends=LocalBackends(tmp_path / "s"))
    try:
        w.clock.advance(timedelta(minutes=16))
        assert w.c.timers.run_once() + other.timers.run_once() >= 1
        other.alerts.flush()
        silent = [a for a in w.alerts() if a.failure_class == "silent"]
        assert len(silent) == 1
        assert silent[0].reason.startswith(
            f"nightly-ingest has not reported for 25m since R-{rid} reached staging")
        assert (silent[0].consumer, silent[0].lane, silent[0].rotation_id) == (
            "nightly-ingest", "staging", rid)
    finally:
        other.engine.dispose()
    # A restart: a new process on the same database, later still. Nothing new.
    restarted = build(_settings(database_url, tmp_path / "catalog.yml",
                                w.c.settings.slack_api_url),
                      clock=w.clock, migrate=False, backends=LocalBackends(tmp_path / "s"))
    try:
        w.clock.advance(timedelta(hours=1))
        restarted.timers.run_once()
        assert len([a for a in w.alerts() if a.failure_class == "silent"]) == 1
    finally:
        restarted.engine.dispose()


# --- drift, require_evidence ----------------------------------------------------------------


def test_old_version_after_the_lane_moved_is_a_drift_alert(world: World) -> None:
    rid = world.start()
    # Before its lane moved, the old version is just what it runs: recorded, no alert.
    early = world.send({"consumer": "retriever", "version": "1"})
    assert early.json()["matched"] == "old" and early.json()["alert"] is None
    for step in (StepState.DISTRIBUTED, StepState.VALIDATED):
        world.c.service.step(rid, "retriever", step, actor="U0BOB")  # clicks, no evidence
    world.clock.advance(timedelta(minutes=3))
    resp = world.send({"consumer": "retriever", "version": "1"})
    assert resp.status_code == 200 and resp.json()["alert"] == "A-1", resp.text
    (alert,) = world.alerts()
    assert (alert.failure_class, alert.consumer, alert.lane, alert.rotation_id) == (
        "drift", "retriever", "dev", rid)
    new = new_credential(world.c.service.get(rid))  # "version 2 (key k-…)": a local issuer's
    assert alert.reason == ("retriever (dev) reports version 1, the old credential, after its "
                            f"lane (dev) moved to {new} (step: validated)")
    # Reported again: the same alert counts, as any other alert coalesces.
    world.send({"consumer": "retriever", "version": "1"})
    (again,) = world.alerts()
    assert again.count == 2
    world.c.alerts.flush()
    (incident,) = world.state.channel_messages("C0INCIDENT")
    assert "retriever (dev) still runs the old credential (drift)" in incident.text
    # An open alert keeps the gate closed.
    assert any("unresolved alert A-1" in u for u in world.c.service.gate(rid).unmet)


def test_require_evidence_refuses_the_click_and_names_it_in_the_gate(world: World) -> None:
    rid = world.start()
    for name in ("retriever", "nightly-ingest"):
        owner = "U0BOB"
        world.c.service.step(rid, name, StepState.DISTRIBUTED, actor=owner)
        world.c.service.step(rid, name, StepState.VALIDATED, actor=owner)
    with pytest.raises(EvidenceRequired) as refused:
        world.c.service.step(rid, "inference-api", StepState.DISTRIBUTED, actor="U0ALICE")
    new = new_credential(world.c.service.get(rid))
    assert str(refused.value).startswith(
        f"inference-api (prod) requires evidence: no report of {new} from inference-api yet")
    assert world.c.service.get(rid).consumer("inference-api").state is StepState.WAITING
    with world.c.service.uow_factory() as uow:
        assert [e.actor for e in uow.audit.for_rotation(rid) if e.action == "refused"] == [
            "U0ALICE"]
    gate = world.c.service.gate(rid)
    assert (f"inference-api (prod) requires evidence: no report of {new} from "
            "inference-api yet") in gate.unmet
    # A failing report on the new version: distributed (it has it), not validated, and the
    # gate now names the missing passing check.
    resp = world.send({"consumer": "inference-api", "version": "2", "ok": False})
    assert resp.json()["steps"] == ["distributed"]
    with pytest.raises(EvidenceRequired, match="no passing check on version 2 "):
        world.c.service.step(rid, "inference-api", StepState.VALIDATED, actor="U0ALICE")
    assert f"inference-api (prod) requires evidence: no passing check on {new} yet" in (
        world.c.service.gate(rid).unmet)
    world.send({"consumer": "inference-api", "version": "2"})
    rotation = world.c.service.get(rid)
    assert rotation.consumer("inference-api").state is StepState.VALIDATED
    assert rotation.ready_to_switch()
    assert not [u for u in world.c.service.gate(rid).unmet if "requires evidence" in u]


# --- the HTTP refusals ----------------------------------------------------------------------


def test_forged_stale_and_replayed_reports(world: World) -> None:
    rid = world.start()
    forged = world.send({"consumer": "retriever", "version": "2"}, key="not-the-key")
    assert forged.status_code == 401
    assert "does not match" in forged.json()["error"]
    stale = world.send({"consumer": "retriever", "version": "2"},
                       ts=int(world.clock.now().timestamp()) - 3600)
    assert stale.status_code == 401 and "X-Rotabot-Timestamp" in stale.json()["error"]
    assert world.stored(rid) == []
    first = world.send({"consumer": "retriever", "version": "2"}, delivery="d-1")
    replay = world.send({"consumer": "retriever", "version": "2"}, delivery="d-1")
    assert first.json()["steps"] == ["distributed"]
    assert replay.status_code == 200 and replay.json() == {"ok": True, "duplicate": True}
    assert len(world.stored(rid)) == 1


def test_oversized_and_malformed_reports(world: World) -> None:
    rid = world.start()
    big = world.send(b'{"consumer": "retriever", "version": "2", "x": "' + b"a" * 9000 + b'"}')
    assert big.status_code == 413 and "one report per request" in big.json()["error"]
    none = world.send({"consumer": "retriever"})
    assert none.status_code == 422 and "version or key_id" in none.json()["error"]
    typo = world.send({"consumer": "retriever", "versoin": "2"})
    assert typo.status_code == 422 and typo.json()["field"] == "versoin"
    assert world.stored(rid) == []


@pytest.mark.parametrize("payload, field", [
    ({"consumer": "retriever", "version": CANARY}, "version"),
    ({"consumer": "retriever", "key_id": CANARY}, "key_id"),
    # An unsalted SHA-256 of the credential: guessable, so refused like the value.
    ({"consumer": "retriever", "version": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822c"
                                          "d15d6c15b0f00a08"}, "version"),
    ({"consumer": "retriever", "version": "2", "api_key": CANARY}, "body"),
])
def test_credential_shaped_reports_are_refused_without_a_trace(
    world: World, payload: dict[str, Any], field: str, caplog: pytest.LogCaptureFixture
) -> None:
    rid = world.start()
    with caplog.at_level(logging.DEBUG):
        resp = world.send(payload)
    assert resp.status_code == 422 and resp.json()["field"] == field, resp.text
    assert "never the value" in resp.text or "hash" in resp.text or "references" in resp.text
    secret_part = next(v for k, v in payload.items() if k not in ("consumer",) and v != "2")
    assert secret_part not in resp.text and secret_part not in caplog.text
    assert world.stored(rid) == []
    assert world.c.service.get(rid).consumer("retriever").state is StepState.WAITING


def test_unknown_consumer_or_secret_is_404_with_suggestions(world: World) -> None:
    rid = world.start()
    who = world.send({"consumer": "retreiver", "version": "2"})
    assert who.status_code == 404 and who.json()["suggestions"] == ["retriever"]
    what = world.send({"consumer": "retriever", "secret": "model-api-kee", "version": "2"})
    assert what.status_code == 404 and what.json()["field"] == "secret"
    assert world.stored(rid) == []


def test_a_report_with_no_rotation_running_is_kept_for_the_heartbeat(world: World) -> None:
    resp = world.send({"consumer": "nightly-ingest", "version": "1"})
    assert resp.status_code == 200 and resp.json()["rotation"] is None
    assert "no rotation of model-api-key is running" in resp.json()["note"]
    last = SqlEvidenceLog(world.c.engine).last_received("model-api-key", "nightly-ingest")
    assert last == world.clock.now()


def test_a_health_checks_version_is_evidence_and_the_old_one_refuses_validated(
    tmp_path: Path,
) -> None:
    served = {"version": "1"}

    class Consumer(QuietHandler):
        def do_GET(self) -> None:
            self.reply(200, {"status": "ok", "credential": {"version": served["version"]}})

    with Loopback(Consumer) as consumer:
        text = CATALOG.replace(
            "retriever: {owner: U0BOB, lane: dev, reload: restart, checks: [retrieval, ingestion]}",
            "retriever: {owner: U0BOB, lane: dev, reload: restart, health_check: "
            f"{{url: '{consumer.url}/healthz', version_field: credential.version}}}}")
        with _world(f"sqlite:///{tmp_path / 'rotabot.db'}", tmp_path, text) as w:
            rid = w.start()
            w.c.service.step(rid, "retriever", StepState.DISTRIBUTED, actor="U0BOB")
            # Still on the old version after its owner said distributed: refused, and drift.
            with pytest.raises(HealthCheckFailed, match="reports version 1, the old credential"):
                w.c.service.step(rid, "retriever", StepState.VALIDATED, actor="U0BOB")
            assert w.c.service.get(rid).consumer("retriever").state is StepState.DISTRIBUTED
            assert [(a.failure_class, a.consumer) for a in w.alerts()] == [("drift", "retriever")]
            served["version"] = "2"
            w.c.service.step(rid, "retriever", StepState.VALIDATED, actor="U0BOB")
            c = w.c.service.get(rid).consumer("retriever")
            assert (c.state, c.updated_by, c.note) == (
                StepState.VALIDATED, "U0BOB", "retriever reports version 2")
            assert [(r.version, r.source) for r in w.stored(rid)] == [
                ("1", "health check of retriever"), ("2", "health check of retriever")]
