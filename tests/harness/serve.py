"""`rotabot serve` as a real process against the Slack stand-in, and signed `POST /alerts`.

The e2e, reliability and security suites and the benchmarks all start the bot this way: a
workspace with the people and channels their catalogs name, the environment `serve` reads, the
process on a free loopback port with its output in a log file, a wait for ``/healthz``, and a
stop that never leaves a process behind.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx
from servers import free_port, stop_process

from bot.sandbox.slack_standin.state import StandinState

__all__ = [
    "ADMIN",
    "CHANNEL",
    "INCIDENT_CHANNEL",
    "USERS",
    "ServeProcess",
    "alert_headers",
    "alert_signature",
    "catalog_head",
    "eventually",
    "free_port",
    "process_env",
    "serve_command",
    "serve_env",
    "spawn",
    "spawn_serve",
    "stop_process",
    "wait_healthy",
    "workspace",
]

T = TypeVar("T")

ADMIN = "U0ADMIN"
CHANNEL = "C0ROTATE"
INCIDENT_CHANNEL = "C0INCIDENT"
USERS = {
    "U0ADMIN": "ada",  # the catalogs' admin
    "U0ALICE": "alice",
    "U0BOB": "bob",
    "U0CAROL": "carol",  # owns through the S0DATA user group
    "U0MALLORY": "mallory",  # nobody: owns nothing, administers nothing
}
DATA_GROUP: Mapping[str, tuple[str, Sequence[str]]] = {"S0DATA": ("data-eng", ["U0CAROL"])}


# --- the workspace and the catalog's defaults ----------------------------------------------


def workspace(
    team_name: str,
    *,
    groups: Mapping[str, tuple[str, Sequence[str]]] = DATA_GROUP,
    forbid: Iterable[str] = (),
) -> StandinState:
    """The stand-in workspace: USERS (U0ADMIN a workspace admin), the user `groups`
    (id -> handle, members), the rotation and incident channels with everyone in them, and the
    values Slack must never be sent (`forbid`: the stand-in records a violation if it is)."""
    state = StandinState(team_id="T0ROTABOT", team_name=team_name)
    for uid, name in USERS.items():
        state.add_user(uid, name, real_name=name.title(), is_admin=uid == ADMIN)
    for gid, (handle, members) in groups.items():
        state.add_usergroup(gid, handle, list(members))
    for channel, name in ((CHANNEL, "rotations"), (INCIDENT_CHANNEL, "incidents")):
        state.add_channel(channel, name, members=list(USERS))
    for value in forbid:
        state.forbid(value)
    return state


def catalog_head(
    *,
    observe: str | None = "3s",
    overlap: str | None = "24h",
    admins: Sequence[str] = (ADMIN,),
    lanes: Sequence[str] = ("dev", "staging", "prod"),
) -> str:
    """A catalog's ``version`` and ``defaults`` for the workspace above (its channels and
    admin); the caller appends ``stores:``, ``issuers:`` and ``secrets:``. Braces-free, so
    the whole catalog can still go through str.format."""
    lines = [
        "version: 1",
        "defaults:",
        f"  channel: {CHANNEL}",
        f"  incident_channel: {INCIDENT_CHANNEL}",
        f"  admins: [{', '.join(admins)}]",
        f"  lanes: [{', '.join(lanes)}]",
    ]
    if overlap is not None:
        lines.append(f"  overlap: {overlap}")
    if observe is not None:
        lines.append(f"  observe: {observe}")
    return "\n".join(lines) + "\n"


# --- the process ---------------------------------------------------------------------------


def serve_env(
    *,
    token_tag: str,
    standin_url: str,
    database_url: str,
    catalog: Path,
    signing_secret: str,
    alert_secret: str,
    extra: Mapping[str, str] | None = None,
    app_token: str | None = None,
) -> dict[str, str]:
    """The variables `rotabot serve` reads (only those; see process_env for a child's whole
    environment). The bot token is fresh each time, ``xoxb-<token_tag>-...``. `app_token`
    (``xapp-…``) switches the bot to Socket Mode against the stand-in at `standin_url`."""
    env = {
        "SLACK_BOT_TOKEN": f"xoxb-{token_tag}-" + secrets.token_hex(6),
        "SLACK_SIGNING_SECRET": signing_secret,
        "SLACK_API_URL": standin_url,
        "DATABASE_URL": database_url,
        "ROTABOT_CATALOG": str(catalog),
        "ROTABOT_ALERT_SECRET": alert_secret,
        **(extra or {}),
    }
    if app_token is not None:
        env["SLACK_APP_TOKEN"] = app_token
    return env


def process_env(values: Mapping[str, str]) -> dict[str, str]:
    """This process's environment with `values` on top, minus SLACK_APP_TOKEN: a developer's
    app token would switch `serve` to Socket Mode, away from the stand-in. Only `values` may
    set it (serve_env's `app_token`, for the stand-in's Socket Mode)."""
    env = {k: v for k, v in os.environ.items() if k != "SLACK_APP_TOKEN"}
    env.update(values)
    return env


def serve_command(port: int) -> list[str]:
    return [sys.executable, "-m", "bot.cli", "serve",
            "--host", "127.0.0.1", "--port", str(port)]


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log_path: Path
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr appended to `log_path` (appended: a restarted
    process keeps the earlier log)."""
    with log_path.open("ab") as log:
        return subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdout=log,
                                stderr=subprocess.STDOUT)


def spawn_serve(
    env: Mapping[str, str], cwd: Path, port: int, log_path: Path
) -> subprocess.Popen[bytes]:
    return spawn(serve_command(port), env=env, cwd=cwd, log_path=log_path)


def wait_healthy(
    process: subprocess.Popen[bytes],
    url: str,
    log_path: Path,
    *,
    timeout: float = 30,
    what: str = "rotabot serve",
    probe_timeout: float = 1,
    ready: Callable[[], bool] | None = None,
) -> None:
    """Wait until ``GET url/healthz`` answers 200, or `ready()` is true when given (a bot on
    Socket Mode is up once it is connected). If the process dies or the time is up, it is
    killed and RuntimeError carries the end of its log."""
    deadline = time.monotonic() + timeout
    while True:
        if ready is not None:
            if ready():
                return
        else:
            try:
                if httpx.get(url + "/healthz", timeout=probe_timeout).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            try:
                log = log_path.read_text(errors="replace")[-4000:]
            except OSError as exc:
                log = f"(no log: {exc})"
            raise RuntimeError(f"{what} did not start:\n{log}")
        time.sleep(0.1)


@dataclass
class ServeProcess:
    """One `rotabot serve` on a loopback port that stays the same across restarts, so a test
    can kill it and start it again on the same environment (database, catalog, Slack) and
    log. `name` is what a failed start calls it; `ready`, when given, says it is up instead of
    ``/healthz`` (see wait_healthy)."""

    env: dict[str, str]
    cwd: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    name: str = "rotabot serve"
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    ready: Callable[[], bool] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 30, probe_timeout: float = 1) -> ServeProcess:
        """Start the process and wait until ``/healthz`` answers (see wait_healthy)."""
        self.starts += 1
        self.process = spawn_serve(self.env, self.cwd, self.port, self.log_path)
        wait_healthy(self.process, self.url, self.log_path, timeout=timeout, what=self.name,
                     probe_timeout=probe_timeout, ready=self.ready)
        return self

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs (its DB sessions and advisory locks just vanish),
        exactly like a node lost mid-work."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def eventually(
    check: Callable[[], T | None],
    timeout: float = 15,
    what: str = "",
    *,
    poll: float = 0.05,
    error: type[Exception] = AssertionError,
) -> T:
    """Poll `check` until it returns something truthy, and return that (no fixed sleeps in
    tests); raise `error` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f}s waiting for {what or check}")
        time.sleep(poll)


# --- POST /alerts ----------------------------------------------------------------------------


def alert_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Rotabot-Signature`` as docs/openapi.yaml and the README document it: ``v1=`` + hex
    HMAC-SHA256 over ``timestamp.body``. Computed here, not by the product's own signer, so a
    test checks the bot against the documented scheme."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def alert_headers(
    secret: str,
    body: bytes,
    *,
    timestamp: int | None = None,
    delivery: str | None = None,
    signature: str | None = None,
) -> dict[str, str]:
    """The headers a connector sends with `body`: JSON, the timestamp (now unless given), the
    signature (or the one given, to forge it) and, when given, the delivery id."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-Rotabot-Timestamp": stamp,
        "X-Rotabot-Signature": signature or alert_signature(secret, stamp, body),
    }
    if delivery is not None:
        headers["X-Rotabot-Delivery"] = delivery
    return headers
