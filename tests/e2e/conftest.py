"""End-to-end harness: `rotabot serve` as a real process, the Slack stand-in on loopback,
and Slack's side of the conversation (signed requests) from bot.sandbox.slack_standin.slack_side."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from harness.serve import ServeProcess, catalog_head, process_env, serve_env, workspace

from adapters.file_store import FileStore
from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.server import StandinServer
from bot.sandbox.slack_standin.slack_side import SlackSide
from bot.sandbox.slack_standin.socket_mode import SocketModeSlackSide, SocketModeStandin
from bot.sandbox.slack_standin.state import StandinState

CATALOG = catalog_head(observe="3s") + """\
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


@dataclass
class Bot:
    server: ServeProcess  # kept, so a test can kill it and start it again on the same DB and port
    db_path: Path
    store: FileStore
    standin: StandinServer
    slack: SlackSide
    signing_secret: str
    socket: SocketModeStandin | None = None  # with BotConfig(socket_mode=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def state(self) -> StandinState:
        return self.standin.state

    def kill9(self) -> None:
        self.server.kill9()

    def restart(self) -> None:
        """Start `rotabot serve` again with the same database, catalog, port and Slack."""
        self.server.kill9()
        self.server.start()

    def log_text(self) -> str:
        return self.server.log_text()


@dataclass
class BotConfig:
    """What a test module may change about the bot it gets (override the `bot_config`
    fixture): its catalog text (default: CATALOG on a file store), extra environment (back-end
    credentials), values the Slack stand-in must never see, and whether Slack talks to the bot
    over Socket Mode (an app token; `bot.slack` then sends envelopes) instead of HTTP."""

    catalog: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    forbid: tuple[str, ...] = ()
    socket_mode: bool = False


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
    # Pinned: the stand-in refuses any app token but the one `serve` is given.
    app_token = "xapp-1-A0ROTABOT-" + secrets.token_hex(8) if bot_config.socket_mode else None
    socket = None if app_token is None else SocketModeStandin(app_tokens=[app_token]).start()
    standin = StandinServer(workspace(
        "rotabot-e2e", forbid=(CANARY_OLD, CANARY_NEW, *bot_config.forbid)),
        socket_mode=socket).start()
    signing_secret = secrets.token_hex(16)
    db_path = tmp_path / "rotabot.db"
    env = process_env(serve_env(
        token_tag="e2e", standin_url=standin.base_url, database_url=f"sqlite:///{db_path}",
        catalog=catalog, signing_secret=signing_secret, alert_secret=secrets.token_hex(16),
        extra=bot_config.env,
        app_token=app_token))
    # Over Socket Mode the bot is up once it is connected (it serves no HTTP then).
    ready = None if socket is None else lambda: socket.live_connection() is not None
    server = ServeProcess(env, tmp_path, tmp_path / "rotabot.log", ready=ready)
    try:
        server.start()
        slack = (SlackSide(standin.state, server.url + "/slack/events", signing_secret)
                 if socket is None else SocketModeSlackSide(standin.state, socket))
        yield Bot(server, db_path, store, standin, slack, signing_secret, socket)
    finally:
        server.stop()  # the process running now: a test may have restarted it
        standin.stop()
        if socket is not None:
            socket.stop()
