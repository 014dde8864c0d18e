"""Two `rotabot serve` replicas on one PostgreSQL, each with its own catalog file: after one is
reloaded with an edited catalog, the other refuses commands and says why (both hashes),
`/healthz` reports it, and SIGHUP on it, once its file is updated, makes it act again. An
invalid catalog is refused by `/rotate reload` with the loader's file:line problems."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from conftest import CATALOG
from harness.messages import is_rotation_message
from harness.serve import ServeProcess, process_env, serve_env, workspace

from adapters.file_store import FileStore
from bot.catalog import load_catalog_hashed
from bot.domain.replicas import short
from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.server import StandinServer
from bot.sandbox.slack_standin.slack_side import SlackSide
from bot.sandbox.slack_standin.state import Ephemeral
from handlers.ids import Action
from storage.migrate import upgrade

pytestmark = [pytest.mark.postgres]

EDITED = CATALOG + """\
  webhook-key:
    issuer: {{kind: manual}}
    store: {{name: local, path: hooks/webhook-key}}
    consumers:
      receiver: {{owner: U0BOB, lane: dev, reload: hot}}
"""


@dataclass
class Replica:
    server: ServeProcess
    slack: SlackSide
    catalog: Path

    def healthz(self) -> dict[str, object]:
        answer = httpx.get(self.server.url + "/healthz", timeout=5)
        assert answer.status_code == 200
        body: dict[str, object] = answer.json()
        return body


@pytest.fixture
def replicas(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Replica, Replica, StandinServer]]:
    store_dir = tmp_path / "secrets"
    FileStore(store_dir).put("ai/model-api-key", SecretMaterial({"api_key": "old"}))
    upgrade(postgres_url)  # `rotabot db upgrade`, before replicas start on PostgreSQL
    standin = StandinServer(workspace("rotabot-reload")).start()
    signing_secret = secrets.token_hex(16)
    started: list[Replica] = []
    try:
        for name in ("a", "b"):
            catalog = tmp_path / f"catalog-{name}.yml"
            catalog.write_text(CATALOG.format(store=store_dir))
            env = process_env(serve_env(
                token_tag=f"reload-{name}", standin_url=standin.base_url,
                database_url=postgres_url, catalog=catalog, signing_secret=signing_secret,
                alert_secret=secrets.token_hex(16)))
            workdir = tmp_path / name
            workdir.mkdir()
            server = ServeProcess(env, workdir, workdir / "rotabot.log", name=f"replica {name}")
            server.start()
            started.append(Replica(server, SlackSide(
                standin.state, server.url + "/slack/events", signing_secret), catalog))
        yield started[0], started[1], standin
    finally:
        for r in started:
            r.server.stop()
        standin.stop()


def said(standin: StandinServer, user: str, needle: str) -> Ephemeral:
    return standin.state.wait_for(lambda s: next(
        (e for e in reversed(s.ephemerals_for(user)) if needle in e.text), None), 10)


def test_a_replica_on_an_older_catalog_refuses_and_sighup_brings_it_back(
    replicas: tuple[Replica, Replica, StandinServer], tmp_path: Path
) -> None:
    a, b, standin = replicas
    store_dir = tmp_path / "secrets"
    _, old = load_catalog_hashed(a.catalog)
    a.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    said(standin, "U0ADMIN", "Started R-1")
    parent = standin.state.wait_for(lambda s: next(
        (m for m in s.channel_messages("C0ROTATE") if is_rotation_message(m, "R-1")), None), 10)

    # An invalid edit on A: refused with the loader's problem lines, A keeps its catalog.
    a.catalog.write_text(CATALOG.replace("reload: restart", "reload: restrat")
                         .format(store=store_dir))
    a.slack.command("U0ADMIN", "C0ROTATE", "reload")
    refused = said(standin, "U0ADMIN", "was not reloaded")
    assert f"{a.catalog}:" in refused.text and "restrat" in refused.text
    assert a.healthz()["status"] == "ok"

    # A valid edit on A, reloaded by an admin; B still has the old file.
    a.catalog.write_text(EDITED.format(store=store_dir))
    _, new = load_catalog_hashed(a.catalog)
    a.slack.command("U0ADMIN", "C0ROTATE", "reload")
    said(standin, "U0ADMIN", f"Catalog {short(new)} is in use (was {short(old)})")

    b.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    refusal = said(standin, "U0ADMIN", "this replica runs catalog")
    assert f"this replica runs catalog {short(old)}, the others run {short(new)}" in refusal.text
    assert "reload it" in refusal.text
    # A click on B is refused the same way (and changes nothing).
    clicks_before = len(standin.state.ephemerals_for("U0ADMIN"))
    b.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent.ts,
                  action_id=Action.CHECK_STORE.value)
    standin.state.wait_for(lambda s: len(s.ephemerals_for("U0ADMIN")) > clicks_before, 10)
    assert "this replica runs catalog" in standin.state.ephemerals_for("U0ADMIN")[-1].text
    health = b.healthz()
    assert health["status"] == "stale-catalog"
    assert health["catalog"] == {**health["catalog"], "sha256": old, "newest": new}  # type: ignore[dict-item]
    assert a.healthz()["status"] == "ok"

    # Its file updated, SIGHUP: B reloads, says so in the channel, and acts again.
    b.catalog.write_text(EDITED.format(store=store_dir))
    assert b.server.process is not None
    b.server.process.send_signal(signal.SIGHUP)
    standin.state.wait_for(lambda s: next(
        (m for m in s.channel_messages("C0ROTATE")
         if "SIGHUP" in m.text and f"Catalog {short(new)} is in use" in m.text), None), 10)
    assert b.healthz()["status"] == "ok"
    b.slack.command("U0ADMIN", "C0ROTATE", "start webhook-key")  # a secret only the edit has
    said(standin, "U0ADMIN", "Started R-2")
    assert standin.state.violations == []
