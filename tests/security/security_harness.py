"""Shared set-up for the security suite: the bot as a process or in-process, and DB snapshots.

`served_bot` starts `rotabot serve` as a real process (as tests/e2e does) with the caller's
catalog and extra environment; `inprocess_bot` builds the same Starlette app in this process
with Bolt finishing every listener before it answers, so a property test can compare the
database after each request without waiting. Both speak to the bot only through signed HTTP.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from starlette.testclient import TestClient

from bot.slack_standin.server import StandinServer
from bot.slack_standin.slack_side import SlackSide
from bot.slack_standin.state import StandinState

T = TypeVar("T")

USERS = {
    "U0ADMIN": "ada",  # listed in admins
    "U0ALICE": "alice",
    "U0BOB": "bob",
    "U0CAROL": "carol",  # member of S0DATA (owners) and S0SECOPS (admins)
    "U0MALLORY": "mallory",  # nobody
}
GROUPS = {"S0DATA": ["U0CAROL"], "S0SECOPS": ["U0CAROL"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_workspace(forbidden: tuple[str, ...] = ()) -> StandinState:
    state = StandinState(team_id="T0ROTABOT", team_name="rotabot-security")
    for uid, name in USERS.items():
        state.add_user(uid, name, real_name=name.title(), is_admin=uid == "U0ADMIN")
    for gid, members in GROUPS.items():
        state.add_usergroup(gid, gid.lower(), members)
    for channel, name in [("C0ROTATE", "rotations"), ("C0INCIDENT", "incidents")]:
        state.add_channel(channel, name, members=list(USERS))
    for value in forbidden:
        state.forbid(value)
    return state


def alert_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Rotabot-Signature`` as documented in docs/openapi.yaml (v1=HMAC over ts.body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def signed_alert_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "Content-Type": "application/json",
        "X-Rotabot-Timestamp": ts,
        "X-Rotabot-Signature": alert_signature(secret, ts, body),
    }


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
            signed_alert_headers(self.alert_secret, payload)
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
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for the bot")
            time.sleep(0.05)


def _env(
    tmp_path: Path, catalog: Path, standin: StandinServer, extra: Mapping[str, str]
) -> tuple[dict[str, str], str, str]:
    signing_secret = secrets.token_hex(16)
    alert_secret = "alert-secret-" + secrets.token_hex(12)
    env = {
        "SLACK_BOT_TOKEN": "xoxb-security-" + secrets.token_hex(8),
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": standin.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'rotabot.db'}",
        "ROTABOT_CATALOG": str(catalog),
        "ROTABOT_ALERT_SECRET": alert_secret,
        **extra,
    }
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
    full_env = {k: v for k, v in os.environ.items() if k != "SLACK_APP_TOKEN"}
    full_env.update(values)
    full_env["ROTABOT_LOG_LEVEL"] = "DEBUG"  # the most a log can say
    port = free_port()
    log_path = tmp_path / "rotabot.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp_path, env=full_env, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    http = httpx.Client(timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            if http.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            standin.stop()
            raise RuntimeError("rotabot serve did not start:\n" + log_path.read_text())
        time.sleep(0.1)
    slack = SlackSide(standin.state, url + "/slack/events", signing_secret)
    handle = BotHandle(url, http, tmp_path / "rotabot.db", standin, slack, signing_secret,
                       alert_secret, log_path=log_path, process=process,
                       extras={"env": values})
    try:
        yield handle
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
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
    from bot.bootstrap import build
    from bot.server import create_web_app
    from bot.settings import Settings
    from handlers.app import build_bolt_app

    catalog = tmp_path / "catalog.yml"
    catalog.write_text(catalog_text)
    standin = StandinServer(make_workspace()).start()
    values, signing_secret, alert_secret = _env(tmp_path, catalog, standin, env or {})
    settings = Settings.from_env(values)
    container = build(settings)
    # Slack messages are re-rendered at once instead of coalesced per second, so what a
    # request returns to is what the buttons show (the pacing is for Slack's rate limits).
    container.notifier.min_interval = 0.0
    bolt = build_bolt_app(container, process_before_response=True)
    from handlers.alerts_http import alert_service

    alert_service(container).min_update_interval = 0.0
    app = create_web_app(container, bolt)
    client = TestClient(app, base_url="http://rotabot.test", raise_server_exceptions=False)
    slack = SlackSide(standin.state, "http://rotabot.test/slack/events", signing_secret,
                      http=client)
    handle = BotHandle("http://rotabot.test", client, tmp_path / "rotabot.db", standin, slack,
                       signing_secret, alert_secret,
                       extras={"app": app, "container": container, "env": values})
    try:
        yield handle
    finally:
        container.notifier.flush()
        alert_service(container).flush()
        client.close()
        container.engine.dispose()
        standin.stop()
