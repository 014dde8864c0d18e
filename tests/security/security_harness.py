"""Shared set-up for the security suite: the bot as a process or in-process, and DB snapshots.

`served_bot` starts `rotabot serve` as a real process (as tests/e2e does) with the caller's
catalog and extra environment; `inprocess_bot` builds the same Starlette app in this process
with Bolt finishing every listener before it answers, so a property test can compare the
database after each request without waiting. Both speak to the bot only through signed HTTP.
"""

from __future__ import annotations

import secrets
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import httpx
from harness.serve import (
    ServeProcess,
    alert_headers,
    catalog_head,
    eventually,
    process_env,
    serve_env,
    workspace,
)
from starlette.testclient import TestClient

from bot.sandbox.slack_standin.server import StandinServer
from bot.sandbox.slack_standin.slack_side import SlackSide
from bot.sandbox.slack_standin.state import StandinState

T = TypeVar("T")

# User groups (harness.serve.USERS are the people): U0CAROL owns through S0DATA and
# administers through S0SECOPS.
GROUPS = {"S0DATA": ["U0CAROL"], "S0SECOPS": ["U0CAROL"]}


# One manual-issuer secret with a consumer in each lane, on a file store in the working
# directory: what the fuzzers drive the in-process app with.
FUZZ_CATALOG = catalog_head(observe=None, overlap=None, lanes=("dev", "prod")) + """\
stores:
  local: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: local, path: ai/model-api-key}
    consumers:
      inference-api: {owner: U0ALICE, lane: prod, reload: hot, rollback: pin previous}
      retriever: {owner: U0BOB, lane: dev, reload: hot, rollback: pin previous}
"""


def make_workspace(forbidden: tuple[str, ...] = ()) -> StandinState:
    return workspace("rotabot-security", forbid=forbidden,
                     groups={gid: (gid.lower(), members) for gid, members in GROUPS.items()})


@dataclass
class BotHandle:
    """The bot under test, reached only over HTTP (a process or an in-process ASGI app)."""

    url: str
    http: httpx.Client
    db_path: Path
    standin: StandinServer
    slack: SlackSide
    signing_secret: str
    alert_secret: str
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def state(self) -> StandinState:
        return self.standin.state

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def post_alert(self, payload: bytes, *, sign: bool = True) -> httpx.Response:
        headers = (
            alert_headers(self.alert_secret, payload)
            if sign
            else {"Content-Type": "application/json"}
        )
        return self.http.post(self.url + "/alerts", content=payload, headers=headers)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.db_path)

    def dump(self) -> str:
        with self.db() as conn:
            return "\n".join(conn.iterdump())

    def rows(self, table: str, columns: str = "*") -> list[tuple[Any, ...]]:
        with self.db() as conn:
            return conn.execute(f"select {columns} from {table} order by id").fetchall()

    def count(self, table: str) -> int:
        with self.db() as conn:
            return int(conn.execute(f"select count(*) from {table}").fetchone()[0])

    def wait_for(self, predicate: Callable[[], T | None], timeout: float = 15) -> T:
        return eventually(predicate, timeout, "the bot")


def _env(
    tmp_path: Path, catalog: Path, standin: StandinServer, extra: Mapping[str, str]
) -> tuple[dict[str, str], str, str]:
    signing_secret = secrets.token_hex(16)
    alert_secret = "alert-secret-" + secrets.token_hex(12)
    env = serve_env(token_tag="security", standin_url=standin.base_url,
                    database_url=f"sqlite:///{tmp_path / 'rotabot.db'}", catalog=catalog,
                    signing_secret=signing_secret, alert_secret=alert_secret, extra=extra)
    return env, signing_secret, alert_secret


@contextmanager
def served_bot(
    tmp_path: Path,
    catalog_text: str,
    *,
    env: Mapping[str, str] | None = None,
    forbidden: tuple[str, ...] = (),
) -> Iterator[BotHandle]:
    """`rotabot serve` as a process against a fresh stand-in, stderr captured to a file."""
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(catalog_text)
    standin = StandinServer(make_workspace(forbidden)).start()
    values, signing_secret, alert_secret = _env(tmp_path, catalog, standin, env or {})
    # The most a log can say.
    server = ServeProcess(process_env({**values, "ROTABOT_LOG_LEVEL": "DEBUG"}), tmp_path,
                          tmp_path / "rotabot.log")
    http = httpx.Client(timeout=30)
    try:
        server.start()
        slack = SlackSide(standin.state, server.url + "/slack/events", signing_secret)
        yield BotHandle(server.url, http, tmp_path / "rotabot.db", standin, slack,
                        signing_secret, alert_secret, log_path=server.log_path,
                        process=server.process, extras={"env": values})
    finally:
        server.stop()
        http.close()
        standin.stop()


@contextmanager
def inprocess_bot(
    tmp_path: Path, catalog_text: str, *, env: Mapping[str, str] | None = None
) -> Iterator[BotHandle]:
    """The real Starlette app (Bolt listeners, /alerts, /healthz, /metrics) in this process.

    Bolt runs with process_before_response, so when a request returns its listener has
    finished and the database shows its effect. No timers run.
    """
    from bot.runtime.bootstrap import build
    from bot.runtime.server import bolt_app, create_web_app
    from bot.runtime.settings import Settings

    catalog = tmp_path / "catalog.yml"
    catalog.write_text(catalog_text)
    # Slack's rate limits (tests/e2e/test_slack_budget.py is about them) run here on a clock
    # that moves a minute ahead before each request: the stand-in still enforces them and the
    # bot's budget still paces, but no request waits out the previous one's calls.
    skew = [0.0]
    workspace_state = make_workspace()
    workspace_state.limiter.clock = lambda: time.monotonic() + skew[0]
    standin = StandinServer(workspace_state).start()
    values, signing_secret, alert_secret = _env(tmp_path, catalog, standin, env or {})
    settings = Settings.from_env(values)
    container = build(settings, slack_clock=lambda: time.time() + skew[0])
    # Slack messages are re-rendered at once instead of coalesced per second, so what a
    # request returns to is what the buttons show (the pacing is for Slack's rate limits).
    container.notifier.min_interval = 0.0
    bolt = bolt_app(container, process_before_response=True)
    container.alerts.min_update_interval = 0.0
    app = create_web_app(container, bolt)

    async def settled(scope: Any, receive: Any, send: Any) -> None:
        # A request returns once the Slack calls it queued (refreshes, receipts) were made,
        # so the next step sees the messages it left.
        skew[0] += 60.0
        container.slack_budget.poke()
        await app(scope, receive, send)
        if scope["type"] == "http":
            await anyio.to_thread.run_sync(container.notifier.flush)

    client = TestClient(settled, base_url="http://rotabot.test", raise_server_exceptions=False)
    slack = SlackSide(standin.state, "http://rotabot.test/slack/events", signing_secret,
                      http=client)
    handle = BotHandle("http://rotabot.test", client, tmp_path / "rotabot.db", standin, slack,
                       signing_secret, alert_secret,
                       extras={"app": app, "container": container, "env": values})
    try:
        yield handle
    finally:
        container.notifier.flush()
        container.alerts.flush()
        client.close()
        container.engine.dispose()
        standin.stop()
