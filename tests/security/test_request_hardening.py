"""Request hardening, through the real `rotabot serve` process: size limits, malformed input,
what the log may hold, the alert secret's length, the database file's mode, the flood limit's
key and JSON depth.

Every test but the last speaks to the bot process over HTTP (raw sockets where the body must be
streamed and the answer caught while it is still being sent) and reads its log file and
database as an operator would; the bot logs at DEBUG (security_harness.served_bot), the most a
log can say. The last adds a failing route to the same Starlette app, in this process, because
no route of the bot fails on its own any more.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from harness.loopback import Loopback, QuietHandler
from harness.serve import eventually, free_port, process_env, serve_command
from security_harness import FUZZ_CATALOG, BotHandle, served_bot

MIB = 1024 * 1024
SLACK_LIMIT = MIB  # bot.runtime.server.SLACK_MAX_BODY_BYTES, as the README documents it
STREAMED = 50 * MIB


@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotHandle]:
    # umask 022, as on most hosts: a file created without an explicit mode comes out 0644.
    old = os.umask(0o022)
    try:
        with served_bot(tmp_path_factory.mktemp("hardening"), FUZZ_CATALOG) as handle:
            yield handle
    finally:
        os.umask(old)


# --- helpers -------------------------------------------------------------------------------


def log_size(bot: BotHandle) -> int:
    assert bot.log_path is not None
    return bot.log_path.stat().st_size


def log_since(bot: BotHandle, offset: int) -> str:
    assert bot.log_path is not None
    with bot.log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON: a plain-text line (a traceback) fails here."""
    lines = []
    for line in text.splitlines():
        if line.strip():
            try:
                lines.append(json.loads(line))
            except ValueError:
                pytest.fail(f"a log line that is not JSON: {line[:300]!r}")
    return lines


def peak_rss_kib(bot: BotHandle) -> int:
    assert bot.process is not None
    status = Path(f"/proc/{bot.process.pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith("VmHWM:"))


def connect(bot: BotHandle) -> socket.socket:
    host, port = bot.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 response with a Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, v in (h.split(":", 1) for h in header_lines if ":" in h)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def head(path: str, extra: str = "") -> bytes:
    stamp = int(time.time())
    return (f"POST {path} HTTP/1.1\r\nHost: rotabot.test\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\n"
            f"X-Slack-Request-Timestamp: {stamp}\r\nX-Slack-Signature: v0={'0' * 64}\r\n"
            f"{extra}\r\n").encode()


# --- A: size limits on /slack/events -------------------------------------------------------


def test_a_declared_oversize_slack_body_is_413_before_any_of_it_is_sent(bot: BotHandle) -> None:
    with connect(bot) as sock:
        sock.sendall(head("/slack/events", f"Content-Length: {STREAMED}\r\n"))
        # Not one byte of the body goes out: a server that waits for it never answers.
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body) == {"ok": False, "error": "body over 1024 KiB"}


def test_a_streamed_oversize_slack_body_is_413_without_being_read(bot: BotHandle) -> None:
    """50 MiB sent chunked (no Content-Length to refuse on): the 413 arrives while the body is
    still going out, the process's peak memory does not grow by the body, and the log does not
    either (Bolt used to log refused bodies whole)."""
    peak_before, log_before = peak_rss_kib(bot), log_size(bot)
    chunk = b"payload=" + b"A" * (64 * 1024 - 8)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with connect(bot) as sock:
        sock.sendall(head("/slack/events", "Transfer-Encoding: chunked\r\n"))
        answered = False
        while sent < STREAMED:
            # Stop sending once the server has answered.
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                answered = True
                break
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                answered = True  # the server closed after answering; the answer is queued
                break
            sent += len(chunk)
        if not answered:
            sock.sendall(b"0\r\n\r\n")
        status, _, body = read_response(sock, timeout=30)
    assert status == 413, body[:300]
    assert json.loads(body)["error"] == "body over 1024 KiB"
    # Kernel socket buffers hold a few MiB; the server stopped taking the body near 1 MiB.
    assert sent < STREAMED // 2, f"the server took {sent // MIB} MiB before answering"
    assert peak_rss_kib(bot) - peak_before < 16 * 1024
    grown = log_since(bot, log_before)
    assert len(grown) < 16 * 1024
    assert "AAAAAAAA" not in grown
    assert any(line.get("message") == "slack request refused (413): body over 1024 KiB"
               for line in json_lines(grown))


# --- A: malformed requests are 400 with JSON and one JSON log line -------------------------


@pytest.mark.parametrize(("body", "headers", "error"), [
    (b"payload=%7B%7D\xff\xfe", {}, "body is not UTF-8"),
    (b"command=%2Frotate", {"X-Slack-Request-Timestamp": "soon"},
     "X-Slack-Request-Timestamp must be unix seconds"),
    (b"command=%2Frotate", {"X-Slack-Request-Timestamp": "9" * 5000},
     "X-Slack-Request-Timestamp must be unix seconds"),
    (b"command=%2Frotate", {"X-Slack-Signature": b"v0=\xff\xfe"},
     "X-Slack-Signature must be ASCII"),
    (b'{"type": "event_callback", ', {"Content-Type": "application/json"},
     "body is not a Slack payload (JSON or form data)"),
], ids=["not-utf8", "timestamp-word", "timestamp-5000-digits", "signature-not-ascii",
        "broken-json"])
def test_malformed_slack_requests_are_400_with_a_json_answer_and_log_line(
    bot: BotHandle, body: bytes, headers: dict[str, str | bytes], error: str
) -> None:
    sent: dict[str, str | bytes] = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=" + "0" * 64,
        **headers,
    }
    before = log_size(bot)
    response = bot.http.post(bot.url + "/slack/events", content=body, headers=sent)
    assert response.status_code == 400, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": False, "error": error}
    lines = json_lines(log_since(bot, before))  # no traceback, no plain-text line
    assert any(line["logger"] == "rotabot.server"
               and line["message"] == f"slack request refused (400): {error}"
               for line in lines), lines


class Hook(QuietHandler):
    """A response_url: records every POST it gets."""

    posts: list[bytes] = []

    def do_POST(self) -> None:
        Hook.posts.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.reply(200, {"ok": True})


def test_an_unverifiable_request_never_reaches_the_bot_error_handler(bot: BotHandle) -> None:
    """Bolt used to raise on the timestamp inside verification, and the bot's error handler
    then answered the unverified body: an ephemeral POSTed to whatever response_url it named."""
    Hook.posts = []
    with Loopback(Hook) as hook:
        body = urlencode({"command": "/rotate", "text": "start model-api-key",
                          "user_id": "U0MALLORY", "channel_id": "C0ROTATE",
                          "response_url": hook.url + "/hook"})
        response = bot.http.post(bot.url + "/slack/events", content=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0=" + "0" * 64})
        # The bot answers after its error handler has posted (it runs before the ack).
        assert Hook.posts == []
        assert response.status_code == 400


# --- B: a refused request's body and response_url never reach the log ----------------------


def interactive_body(canary: str, url_canary: str) -> str:
    payload = {
        "type": "block_actions",
        "user": {"id": "U0MALLORY"},
        "response_url": f"https://hooks.slack.com/actions/T0ROTABOT/{url_canary}",
        "actions": [{"action_id": "step", "value": canary}],
    }
    return urlencode({"payload": json.dumps(payload)})


def refuse_canaries(bot: BotHandle) -> tuple[str, str, int]:
    """A forged and a stale (genuinely signed, 10 minutes old) request carrying canaries."""
    canary, url_canary = f"canary-{secrets.token_hex(8)}", f"hook{secrets.token_hex(8)}"
    body = interactive_body(canary, url_canary)
    before = log_size(bot)
    forged = bot.slack.post("block_actions", body, "application/x-www-form-urlencoded",
                            signature="v0=" + "1" * 64)
    stale = bot.slack.post("block_actions", body, "application/x-www-form-urlencoded",
                           timestamp=int(time.time()) - 600)
    events = bot.slack.post("event", json.dumps({"type": "event_callback", "token": canary,
                                                 "response_url": url_canary}),
                            "application/json", signature="v0=" + "2" * 64)
    assert (forged.status, stale.status, events.status) == (401, 401, 401)
    return canary, url_canary, before


def test_a_refused_slack_request_leaves_neither_body_nor_response_url_in_the_log(
    bot: BotHandle,
) -> None:
    canary, url_canary, before = refuse_canaries(bot)
    grown = log_since(bot, before)
    assert canary not in grown and url_canary not in grown
    assert "hooks.slack.com" not in grown
    refusals = [line for line in json_lines(grown) if line["message"] ==
                "slack request refused (401): signature or timestamp did not verify"]
    assert len(refusals) == 3  # the log was written, without the request in it


def test_with_library_logs_at_debug_bolt_still_withholds_the_request(tmp_path: Path) -> None:
    """An operator who turns library logs up gets Bolt's line, cut before the request."""
    with served_bot(tmp_path, FUZZ_CATALOG,
                    env={"ROTABOT_LIBRARY_LOG_LEVEL": "DEBUG"}) as debug_bot:
        canary, url_canary, before = refuse_canaries(debug_bot)
        grown = log_since(debug_bot, before)
    assert canary not in grown and url_canary not in grown
    assert "hooks.slack.com" not in grown
    bolt_lines = [line["message"] for line in json_lines(grown)
                  if line["logger"].startswith("slack_bolt")]
    # Bolt did log (the library level took effect), and only the fixed text.
    assert bolt_lines.count("Invalid request signature detected (details withheld)") == 3


# --- C: the alert secret's minimum length --------------------------------------------------


def test_serve_refuses_a_short_alert_secret_in_one_line(tmp_path: Path) -> None:
    short = "short-" + secrets.token_hex(6)  # 18 characters
    (tmp_path / "catalog.yml").write_text(FUZZ_CATALOG)
    env = process_env({
        "SLACK_BOT_TOKEN": "xoxb-hardening-" + secrets.token_hex(6),
        "SLACK_SIGNING_SECRET": secrets.token_hex(16),
        "SLACK_API_URL": "http://127.0.0.1:9/api/",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'rotabot.db'}",
        "ROTABOT_CATALOG": str(tmp_path / "catalog.yml"),
        "ROTABOT_ALERT_SECRET": short,
    })
    # A bot that accepted the secret would serve until the timeout: that fails the test too.
    done = subprocess.run(serve_command(free_port()), env=env, cwd=tmp_path,
                          capture_output=True, timeout=30, check=False)
    assert done.returncode == 2
    lines = done.stderr.decode().strip().splitlines()
    assert lines == ["rotabot: ROTABOT_ALERT_SECRET is too short: use at least 32 characters "
                     "(e.g. the output of `openssl rand -hex 32`), or unset it to turn alert "
                     "intake off"]
    assert short not in done.stderr.decode() + done.stdout.decode()
    assert not (tmp_path / "rotabot.db").exists()  # refused before anything was opened


# --- C: the SQLite database is the bot's only ---------------------------------------------


def test_the_database_file_and_its_wal_are_0600(bot: BotHandle) -> None:
    # An alert makes the bot write (a WAL file exists from the first connection on).
    assert bot.post_alert(b'{"consumer": "inference-api", "status_code": 401}').status_code \
        == 200
    files = [bot.db_path] + [bot.db_path.with_name(bot.db_path.name + suffix)
                             for suffix in ("-wal", "-shm")]
    present = [p for p in files if p.exists()]
    assert bot.db_path in present and len(present) == 3
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in present} == {
        p.name: "0o600" for p in present}


# --- C: the flood limit is the sender's, not the body's ------------------------------------


def alertmanager_group(receiver: str, count: int) -> bytes:
    # Consumers the catalog does not know: the limit is charged before the catalog lookup, so
    # the requests cost the bot no writes (404s) until the limit answers 429.
    alerts = [{"status": "firing", "labels": {"consumer": f"ghost-{i}"}} for i in range(count)]
    return json.dumps({"version": "4", "groupKey": "{}", "status": "firing",
                       "receiver": receiver, "alerts": alerts}).encode()


def test_renaming_the_source_does_not_clear_a_429(tmp_path: Path) -> None:
    with served_bot(tmp_path, FUZZ_CATALOG) as flood_bot:
        def flood() -> int | None:
            status = flood_bot.post_alert(alertmanager_group("exporter", 500)).status_code
            assert status in (404, 429)
            return status if status == 429 else None

        # 1000 reports at once, then 20 a second: a few groups of 500 exhaust it.
        eventually(flood, 30, "a 429 from the flood limit")
        renamed = flood_bot.post_alert(alertmanager_group("renamed-" + secrets.token_hex(4), 500))
        assert renamed.status_code == 429, renamed.text[:300]
        assert int(renamed.headers["Retry-After"]) >= 1


# --- C: deep JSON --------------------------------------------------------------------------


def test_a_deeply_nested_alert_body_is_422_naming_the_depth(bot: BotHandle) -> None:
    before = log_size(bot)
    response = bot.post_alert(b"[" * 30_000 + b"]" * 30_000)
    assert response.status_code == 422, response.text[:300]
    assert response.json()["field"] == "body"
    assert "nests objects and arrays deeper than 32 levels" in response.json()["error"]
    json_lines(log_since(bot, before))


# --- A: an exception in a route is a JSON 500 and one JSON log line ------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", "/boom"), ("POST", "/alerts")])
def test_an_exception_in_a_route_is_a_json_500_naming_only_its_type(
    caplog: pytest.LogCaptureFixture, method: str, path: str
) -> None:
    """No route of the bot raises on its own any more (the old 500s are 400/413/422 above), so
    a route that does is added to the app `serve` builds; in this process, read through the
    JSON formatter the bot logs with. ``/alerts`` is one of the paths served without
    Starlette's router (bot/runtime/server.py, DirectRoutes): the same answer there."""
    from slack_bolt import App
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from bot.runtime.logs import JsonFormatter
    from bot.runtime.server import web_app

    canary = f"canary-{secrets.token_hex(8)}"

    async def boom(request: Request) -> Response:
        raise RuntimeError(f"a back end echoed {canary}")

    bolt = App(token="xoxb-hardening", signing_secret=secrets.token_hex(16),
               token_verification_enabled=False)
    client = TestClient(web_app(bolt, [Route(path, boom, methods=[method])]),
                        raise_server_exceptions=False)
    with caplog.at_level("INFO", logger="rotabot.server"):
        response = client.request(method, path)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith("internal error (ref ")
    assert canary not in response.text
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    ref = response.json()["error"].removeprefix("internal error (ref ").rstrip(")")
    assert [line["message"] for line in lines] == [
        f"{method} {path} failed (ref {ref}): RuntimeError"]
    assert canary not in json.dumps(lines)
