"""Slack's Socket Mode on loopback: ``apps.connections.open`` and the WebSocket it hands out.

Written from Slack's Socket Mode documentation and slack_sdk's clients
(``slack_sdk/socket_mode/``), which is what Bolt's ``SocketModeHandler`` runs:

- ``apps.connections.open`` (a Web API method, so it is served at the stand-in's ``/api/``,
  where the app's WebClient ``base_url`` points) takes the *app-level* token ``xapp-…``; a bot
  or user token is ``not_allowed_token_type``, anything else ``invalid_auth``, none
  ``not_authed``. It answers ``{"ok": true, "url": "ws://…/link/?ticket=…"}``; a ticket opens
  one connection.
- On connect Slack sends ``{"type": "hello", …}``; then envelopes ``{"envelope_id", "type":
  "slash_commands" | "interactive" | "events_api", "payload", "accepts_response_payload"}``,
  each of which the app acks with ``{"envelope_id"}`` (plus ``payload`` where it may answer,
  e.g. a modal's ``response_action``). ``{"type": "disconnect", "reason": …}`` tells the app
  to open a new connection; Slack closes the old one after it has.

The payload of an envelope is the JSON the HTTP request body carries (a slash command's form
fields as an object): :class:`SocketModeSlackSide` builds every request exactly as the HTTP
:class:`~bot.sandbox.slack_standin.slack_side.SlackSide` does and turns the body into that
payload, so both transports carry the same shapes. Everything the app sends is checked and
recorded (``violations``); the app token itself is never recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl

from aiohttp import WSMsgType, web

from bot.sandbox.slack_standin.model import ApiResult
from bot.sandbox.slack_standin.slack_side import BotReply, SlackSide
from bot.sandbox.slack_standin.state import StandinState

T = TypeVar("T")

# Slack expects the ack within 3 s; a loaded test machine gets more before a reply is given up.
DEFAULT_ACK_TIMEOUT = 10.0
# How long Slack lets the app move to its new connection before closing the old one.
DISCONNECT_GRACE_SECONDS = 5.0
DISCONNECT_REASONS = frozenset({"refresh_requested", "warning", "link_disabled"})
ENVELOPE_TYPES = frozenset({"slash_commands", "interactive", "events_api"})
# Interactive payloads whose ack may carry an answer (Slack's accepts_response_payload).
_ANSWERABLE_INTERACTIONS = frozenset({"view_submission", "block_suggestion"})


def token_kind(token: str | None) -> str:
    """What kind of Slack token this is, by its prefix: what the log keeps instead of it."""
    if not token:
        return "none"
    for prefix, kind in (("xapp-", "app"), ("xoxb-", "bot"), ("xoxp-", "user")):
        if token.startswith(prefix):
            return kind
    return "unknown"


@dataclass
class ConnectionsOpen:
    """One ``apps.connections.open`` call (the token's kind only, never the token)."""

    seq: int
    token_kind: str
    http_method: str
    ok: bool
    error: str | None = None
    ticket: str | None = None


@dataclass
class SocketConnection:
    """One WebSocket the app opened with a ticket."""

    id: int
    ticket: str
    opened_at: float
    hello: dict[str, Any] | None = None
    disconnect_reason: str | None = None  # set once Slack asked the app to move on
    closed_at: float | None = None
    closed_by: str | None = None  # "app" or "slack"

    @property
    def live(self) -> bool:
        """Open, greeted, and not asked to go: where Slack delivers envelopes."""
        return self.hello is not None and self.closed_at is None and self.disconnect_reason is None


@dataclass
class Envelope:
    """One envelope Slack sent, and the app's ack once it came."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    connection: int
    sent_at: float
    acked_at: float | None = None
    ack_connection: int | None = None
    ack_payload: dict[str, Any] | None = None

    @property
    def acked(self) -> bool:
        return self.acked_at is not None

    def to_message(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
        }
        if self.type == "events_api":
            # First delivery: Slack counts retries from 0 and gives no reason yet.
            message.update(retry_attempt=0, retry_reason="")
        return message


@dataclass
class _Ticket:
    issued_at: float
    used: bool = False


class SocketModeError(Exception):
    """A test asked for something Slack could not do (no connection to deliver on)."""


class SocketModeStandin:
    """Slack's Socket Mode side: tickets, connections, envelopes and acks, with wait_for.

    The WebSocket endpoint runs on aiohttp (already a dependency; uvicorn would need a
    WebSocket library) in its own thread and loop, on a loopback port of its own, as Slack's
    ``wss-primary.slack.com`` is a host of its own. ``apps.connections.open`` is routed to
    :meth:`connections_open` by the stand-in's HTTP server (``create_standin_app``).
    """

    def __init__(
        self,
        *,
        app_id: str = "A0ROTABOT",
        app_tokens: Iterable[str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.app_id = app_id
        # None accepts any app-level token (xapp-…); a set pins the exact tokens.
        self._app_tokens = set(app_tokens) if app_tokens is not None else None
        self.host = host
        self.port = 0
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._opens: list[ConnectionsOpen] = []
        self._connections: list[SocketConnection] = []
        self._envelopes: dict[str, Envelope] = {}
        self._violations: list[str] = []
        self._tickets: dict[str, _Ticket] = {}
        self._sockets: dict[int, web.WebSocketResponse] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ what happened

    @property
    def opens(self) -> list[ConnectionsOpen]:
        with self._lock:
            return list(self._opens)

    @property
    def connections(self) -> list[SocketConnection]:
        with self._lock:
            return list(self._connections)

    @property
    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes.values())

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    def live_connection(self) -> SocketConnection | None:
        """The newest connection Slack would deliver on now, if any."""
        with self._lock:
            return next((c for c in reversed(self._connections) if c.live), None)

    def wait_for(self, predicate: Callable[[Self], T | None], timeout: float = 10) -> T:
        """Wait until predicate(self) is truthy and return it; tests use this, not sleeps."""
        with self._changed:
            result = self._changed.wait_for(lambda: predicate(self), timeout)
        if not result:
            raise TimeoutError("Socket Mode condition not met before the timeout")
        return result

    def _violation(self, text: str) -> None:
        with self._changed:
            self._violations.append(text)
            self._changed.notify_all()

    # ------------------------------------------------------------------ apps.connections.open

    def connections_open(self, token: str | None, *, http_method: str = "POST") -> ApiResult:
        """Answer ``apps.connections.open`` as Slack does, and record the call."""
        kind = token_kind(token)
        error: str | None = None
        if kind == "none":
            error = "not_authed"
        elif kind in ("bot", "user"):
            error = "not_allowed_token_type"
        elif kind != "app" or (self._app_tokens is not None and token not in self._app_tokens):
            error = "invalid_auth"
        elif self._loop is None:
            error = "fatal_error"
            self._violation("apps.connections.open before the Socket Mode stand-in started")
        with self._changed:
            record = ConnectionsOpen(len(self._opens) + 1, kind, http_method, error is None, error)
            if error is None:
                record.ticket = uuid.uuid4().hex
                self._tickets[record.ticket] = _Ticket(time.time())
            self._opens.append(record)
            self._changed.notify_all()
        if error is not None:
            return ApiResult(200, {"ok": False, "error": error})
        url = f"ws://{self.host}:{self.port}/link/?ticket={record.ticket}&app_id={self.app_id}"
        return ApiResult(200, {"ok": True, "url": url})

    # ------------------------------------------------------------------ the WebSocket

    async def _link(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        with self._changed:
            issued = self._tickets.get(ticket)
            problem = (
                "a WebSocket without a ticket from apps.connections.open" if issued is None
                else "a ticket from apps.connections.open used twice" if issued.used
                else None
            )
            if issued is not None:
                issued.used = True
        if problem is not None:
            self._violation(problem)
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True)  # answers the client's pings with pongs
        await ws.prepare(request)
        with self._changed:
            conn = SocketConnection(next(self._ids), ticket, time.time())
            self._connections.append(conn)
            self._sockets[conn.id] = ws
            live = sum(1 for c in self._connections if c.closed_at is None)
            hello = {
                "type": "hello",
                "num_connections": live,
                "debug_info": {
                    "host": f"applink-standin-{conn.id}",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": self.app_id},
            }
        await ws.send_str(json.dumps(hello))
        with self._changed:
            conn.hello = hello
            self._changed.notify_all()
        try:
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    self._on_app_message(conn, message.data)
                elif message.type == WSMsgType.BINARY:
                    self._violation(f"connection {conn.id}: a binary frame (Slack speaks JSON)")
        finally:
            with self._changed:
                if conn.closed_at is None:
                    conn.closed_at = time.time()
                    conn.closed_by = "app"
                self._sockets.pop(conn.id, None)
                self._changed.notify_all()
        return ws

    def _on_app_message(self, conn: SocketConnection, text: str) -> None:
        """The app's only message in Socket Mode: an ack ``{"envelope_id", "payload"?}``."""
        try:
            message = json.loads(text)
        except ValueError:
            self._violation(f"connection {conn.id}: a message that is not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("envelope_id"), str):
            self._violation(f"connection {conn.id}: a message without an envelope_id")
            return
        unexpected = set(message) - {"envelope_id", "payload"}
        if unexpected:
            self._violation(f"ack with unexpected fields: {sorted(unexpected)}")
        with self._changed:
            envelope = self._envelopes.get(message["envelope_id"])
            if envelope is None:
                problem: str | None = "ack for an envelope Slack never sent"
            elif envelope.acked:
                problem = f"envelope {envelope.envelope_id} acked twice"
            else:
                problem = None
                envelope.acked_at = time.time()
                envelope.ack_connection = conn.id
                payload = message.get("payload")
                if payload is not None and not isinstance(payload, dict):
                    problem = f"ack of {envelope.type}: payload is not an object"
                elif payload is not None and not envelope.accepts_response_payload:
                    # Slack drops it: whatever the app meant to say is never shown.
                    problem = f"ack of {envelope.type} carries a payload Slack does not accept"
                if isinstance(payload, dict):
                    envelope.ack_payload = payload
            self._changed.notify_all()
        if problem is not None:
            self._violation(problem)

    async def _send(self, connection: int, message: Mapping[str, Any]) -> None:
        ws = self._sockets.get(connection)
        if ws is None or ws.closed:
            raise SocketModeError(f"connection {connection} is closed")
        await ws.send_str(json.dumps(message))

    async def _close(self, connection: int) -> None:
        ws = self._sockets.get(connection)
        if ws is not None and not ws.closed:
            await ws.close()

    def _run(self, coro: Any, timeout: float = 10) -> Any:
        if self._loop is None:
            raise SocketModeError("the Socket Mode stand-in is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # ------------------------------------------------------------------ Slack's side

    def send(
        self,
        type: str,
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool = False,
        timeout: float = DEFAULT_ACK_TIMEOUT,
    ) -> Envelope:
        """Send one envelope on the live connection (waiting for one, as during a reconnect)."""
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"not a Socket Mode envelope type: {type}")
        try:
            conn = self.wait_for(lambda s: s.live_connection(), timeout)
        except TimeoutError:
            raise SocketModeError("the app has no Socket Mode connection") from None
        envelope = Envelope(
            envelope_id=str(uuid.uuid4()),
            type=type,
            payload=dict(payload),
            accepts_response_payload=accepts_response_payload,
            connection=conn.id,
            sent_at=time.time(),
        )
        with self._changed:
            self._envelopes[envelope.envelope_id] = envelope
            self._changed.notify_all()
        self._run(self._send(conn.id, envelope.to_message()))
        return envelope

    def wait_ack(self, envelope: Envelope, timeout: float = DEFAULT_ACK_TIMEOUT) -> bool:
        """Wait for the app's ack of `envelope`; False when none came in time."""
        try:
            self.wait_for(lambda s: envelope.acked, timeout)
        except TimeoutError:
            return False
        return True

    def disconnect(
        self,
        reason: str = "refresh_requested",
        *,
        close: bool = True,
        grace: float = DISCONNECT_GRACE_SECONDS,
        timeout: float = 15,
    ) -> tuple[SocketConnection, SocketConnection | None]:
        """Ask the app to move to a new connection, as Slack does before it closes one.

        With ``close``: wait for the app's new connection to be greeted, give the app `grace`
        seconds to drop the old one, then close it; returns (old, new). Without: just send.
        """
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"not a Socket Mode disconnect reason: {reason}")
        old = self.live_connection()
        if old is None:
            raise SocketModeError("no live connection to disconnect")
        with self._changed:
            old.disconnect_reason = reason
            self._changed.notify_all()
        message = {
            "type": "disconnect",
            "reason": reason,
            "debug_info": {"host": f"applink-standin-{old.id}"},
        }
        self._run(self._send(old.id, message))
        if not close:
            return old, None
        new = self.wait_for(lambda s: next(
            (c for c in s.connections if c.id > old.id and c.hello is not None), None), timeout)
        try:
            self.wait_for(lambda s: old.closed_at is not None, grace)
        except TimeoutError:
            with self._changed:
                old.closed_by = "slack"
                old.closed_at = time.time()
            self._run(self._close(old.id))
        return old, new

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 10) -> SocketModeStandin:
        # Bound here (port 0) so the URL is known before the loop starts: no race.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_get("/link/", self._link)
            runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                   shutdown_timeout=2)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.SockSite(runner, sock).start())
            self._loop = loop
            started.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="slack-socket-mode", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise RuntimeError("the Socket Mode stand-in did not start")
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        for conn in self.connections:
            if conn.closed_at is None:
                # One already gone has nothing left to close.
                with contextlib.suppress(SocketModeError, TimeoutError):
                    self._run(self._close(conn.id), timeout=5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    def __enter__(self) -> SocketModeStandin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class SocketModeSlackSide(SlackSide):
    """Slack's side over Socket Mode: the same requests as :class:`SlackSide`, delivered as
    envelopes on the app's WebSocket instead of signed HTTP posts.

    Each request is built by the HTTP code and its body decoded into the envelope's payload,
    so both transports carry the same JSON. The reply is the ack: status 200 with the ack's
    payload as ``json``, or 504 when no ack came in time (Slack tells the user the app did
    not respond).
    """

    def __init__(
        self,
        state: StandinState,
        socket_mode: SocketModeStandin,
        *,
        ack_timeout: float = DEFAULT_ACK_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        # No events URL and no signing: Socket Mode has neither.
        super().__init__(state, "socket-mode://", "", **kwargs)
        self.socket_mode = socket_mode
        self.ack_timeout = ack_timeout
        self.sent: list[Envelope] = []

    def post(
        self,
        kind: str,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> BotReply:
        if signature is not None:
            raise ValueError("Socket Mode envelopes are not signed; there is nothing to forge")
        envelope_type, payload = envelope_payload(body, content_type)
        accepts = envelope_type == "slash_commands" or (
            envelope_type == "interactive" and payload.get("type") in _ANSWERABLE_INTERACTIONS)
        envelope = self.socket_mode.send(envelope_type, payload,
                                         accepts_response_payload=accepts,
                                         timeout=self.ack_timeout)
        self.sent.append(envelope)
        if not self.socket_mode.wait_ack(envelope, self.ack_timeout):
            return BotReply(kind, 504, "", body, notes=[
                f"no ack for envelope {envelope.envelope_id} within {self.ack_timeout:.0f} s"])
        answer = envelope.ack_payload
        return BotReply(kind, 200, json.dumps(answer) if answer else "", body, answer)


def envelope_payload(body: str, content_type: str) -> tuple[str, dict[str, Any]]:
    """The envelope type and payload Slack sends over Socket Mode for an HTTP request body."""
    if content_type.startswith("application/json"):
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError("an Events API body is a JSON object")
        return "events_api", payload
    form = dict(parse_qsl(body, keep_blank_values=True))
    if "payload" in form:  # interactivity posts one form field holding the JSON
        interactive = json.loads(form["payload"])
        if not isinstance(interactive, dict):
            raise ValueError("an interactive payload is a JSON object")
        return "interactive", interactive
    return "slash_commands", form
