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
from dataclasses import dataclass, field
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

    # How it was started, so a test can kill it and start it again on the same DB and port.
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    port: int = 0

    @property
    def state(self) -> StandinState:
        return self.standin.state

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs (its DB sessions and advisory locks just vanish)."""
        self.process.kill()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start `rotabot serve` again with the same database, catalog, port and Slack."""
        if self.process.poll() is None:
            self.kill9()
        assert self.cwd is not None
        self.process = spawn_serve(self.env, self.cwd, self.port, self.log_path)
        wait_healthy(self.process, self.url, self.log_path)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def make_workspace(forbid: tuple[str, ...] = ()) -> StandinState:
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
    for value in forbid:
        state.forbid(value)
    return state


def spawn_serve(
    env: dict[str, str], cwd: Path, port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:  # appended: a restarted process keeps the earlier log
        return subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port",
             str(port)], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("rotabot serve did not start:\n" + log_path.read_text())
        time.sleep(0.1)


@dataclass
class BotConfig:
    """What a test module may change about the bot it gets (override the `bot_config`
    fixture): its catalog text (default: CATALOG on a file store), extra environment (back-end
    credentials), and values the Slack stand-in must never see."""

    catalog: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    forbid: tuple[str, ...] = ()


@pytest.fixture
def bot_config() -> BotConfig:
    return BotConfig()


@pytest.fixture
def bot(tmp_path: Path, bot_config: BotConfig) -> Iterator[Bot]:
    store_dir = tmp_path / "secrets"
    store = FileStore(store_dir)
    store.put("ai/model-api-key", SecretMaterial({"api_key": CANARY_OLD}))
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(
        CATALOG.format(store=store_dir) if bot_config.catalog is None else bot_config.catalog
    )
    standin = StandinServer(make_workspace(bot_config.forbid)).start()
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
        **bot_config.env,
    }
    env.pop("SLACK_APP_TOKEN", None)
    log_path = tmp_path / "rotabot.log"
    process = spawn_serve(env, tmp_path, port, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log_path)
    except RuntimeError:
        standin.stop()
        raise
    slack = SlackSide(standin.state, url + "/slack/events", signing_secret)
    b = Bot(url, process, log_path, db_path, store, standin, slack, signing_secret,
            env=env, cwd=tmp_path, port=port)
    try:
        yield b
    finally:
        # b.process, not process: a test may have restarted the server.
        b.process.terminate()
        try:
            b.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            b.process.kill()
        standin.stop()
