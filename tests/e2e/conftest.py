"""End-to-end harness: `rotabot serve` as a real process, the Slack stand-in on loopback,
and Slack's side of the conversation (signed requests) from bot.slack_standin.slack_side."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from adapters.file_store import FileStore
from bot.secret_material import SecretMaterial
from bot.slack_standin.server import StandinServer
from bot.slack_standin.slack_side import SlackSide
from bot.slack_standin.state import StandinState

ROOT = Path(__file__).resolve().parents[2]

CATALOG = """
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0ADMIN]
  lanes: [dev, staging, prod]
  overlap: 24h
  observe: 3s
stores:
  local:
    kind: file
    path: {store}
secrets:
  model-api-key:
    description: Model provider key
    issuer: {{kind: manual}}
    store: {{name: local, path: ai/model-api-key}}
    consumers:
      retriever:
        owner: U0BOB
        lane: dev
        reload: hot
        rollback: Pin the previous version
      nightly-ingest:
        owner: S0DATA
        lane: staging
        reload: restart
        rollback: Restart with the previous version pinned
      inference-api:
        owner: U0ALICE
        lane: prod
        reload: hot
        rollback: Pin the previous store version
"""

CANARY_OLD = "canary-old-" + secrets.token_hex(8)
CANARY_NEW = "canary-new-" + secrets.token_hex(8)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Bot:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    db_path: Path
    store: FileStore
    standin: StandinServer
    slack: SlackSide
    signing_secret: str

    @property
    def state(self) -> StandinState:
        return self.standin.state

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def make_workspace() -> StandinState:
    state = StandinState(team_id="T0ROTABOT", team_name="rotabot-e2e")
    for uid, name in [("U0ADMIN", "ada"), ("U0ALICE", "alice"), ("U0BOB", "bob"),
                      ("U0CAROL", "carol"), ("U0MALLORY", "mallory")]:
        state.add_user(uid, name, real_name=name.title(), is_admin=uid == "U0ADMIN")
    state.add_usergroup("S0DATA", "data-eng", ["U0CAROL"])
    members = ["U0ADMIN", "U0ALICE", "U0BOB", "U0CAROL", "U0MALLORY"]
    state.add_channel("C0ROTATE", "rotations", members=members)
    state.add_channel("C0INCIDENT", "incidents", members=members)
    state.forbid(CANARY_OLD)
    state.forbid(CANARY_NEW)
    return state


@pytest.fixture
def bot(tmp_path: Path) -> Iterator[Bot]:
    store_dir = tmp_path / "secrets"
    store = FileStore(store_dir)
    store.put("ai/model-api-key", SecretMaterial({"api_key": CANARY_OLD}))
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(CATALOG.format(store=store_dir))
    standin = StandinServer(make_workspace()).start()
    signing_secret = secrets.token_hex(16)
    port = free_port()
    db_path = tmp_path / "rotabot.db"
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-e2e-" + secrets.token_hex(6),
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": standin.base_url,
        "DATABASE_URL": f"sqlite:///{db_path}",
        "ROTABOT_CATALOG": str(catalog),
        "ROTABOT_ALERT_SECRET": secrets.token_hex(16),
    }
    env.pop("SLACK_APP_TOKEN", None)
    log_path = tmp_path / "rotabot.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port",
             str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            standin.stop()
            raise RuntimeError("rotabot serve did not start:\n" + log_path.read_text())
        time.sleep(0.1)
    slack = SlackSide(standin.state, url + "/slack/events", signing_secret)
    b = Bot(url, process, log_path, db_path, store, standin, slack, signing_secret)
    try:
        yield b
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        standin.stop()
