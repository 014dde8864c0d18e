"""HTTP face of the Slack stand-in: a Starlette app and a background uvicorn server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from bot.sandbox.slack_standin.model import ApiResult
from bot.sandbox.slack_standin.socket_mode import SocketModeStandin
from bot.sandbox.slack_standin.state import StandinState

LONG_POLL_MAX_SECONDS = 30.0
_POLL_INTERVAL = 0.05


async def _read_arguments(request: Request) -> tuple[dict[str, Any], bool, list[str]]:
    """Merge query, form and JSON arguments, as Slack does (the spec's verbs are unreliable)."""
    args: dict[str, Any] = dict(request.query_params)
    errors: list[str] = []
    as_json = False
    body = await request.body()
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body:
        if content_type == "application/json":
            as_json = True
            try:
                data = json.loads(body)
            except ValueError:
                errors.append("request body is not valid JSON")
            else:
                if isinstance(data, dict):
                    args.update(data)
                else:
                    errors.append("a JSON request body must be an object")
        elif content_type in ("application/x-www-form-urlencoded", ""):
            args.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        else:
            errors.append(f"unsupported Content-Type for the stand-in: {content_type}")
    return args, as_json, errors


def _token(request: Request, args: dict[str, Any]) -> str | None:
    # Always drop the token from the arguments so the call log never holds a credential.
    token_arg = args.pop("token", None)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return str(token_arg) if token_arg else None


def _respond(result: ApiResult) -> Response:
    if isinstance(result.body, str):
        return PlainTextResponse(result.body, result.status, headers=result.headers)
    return JSONResponse(result.body, result.status, headers=result.headers)


def create_standin_app(
    state: StandinState,
    *,
    routes: Sequence[BaseRoute] = (),
    socket_mode: SocketModeStandin | None = None,
) -> Starlette:
    """The stand-in as an ASGI app; `routes` lets the sandbox add its page on the same server.

    - `GET|POST /api/<method>`: the Web API (form, JSON or query arguments; Bearer token).
    - `POST /api/apps.connections.open`, with `socket_mode`: Socket Mode's app-token method.
    - `POST /response/<id>`: response_urls handed out by `state.new_response_url`.
    - `GET /standin/state?user=U…`: JSON snapshot for a page.
    - `GET /standin/changes?since=N&timeout=S`: long-poll for changes after seq N.
    - `GET /standin/rate_limits`: whether Slack's limits are enforced, 429s and calls by method.
    """

    async def api(request: Request) -> Response:
        method = request.path_params["method"]
        args, as_json, errors = await _read_arguments(request)
        token = _token(request, args)
        result = state.handle_api(
            method,
            args,
            token=token,
            http_method=request.method,
            as_json=as_json,
            parse_errors=errors,
        )
        return _respond(result)

    async def response_url(request: Request) -> Response:
        body = await request.body()
        payload: Any = None
        errors: list[str] = []
        try:
            payload = json.loads(body)
        except ValueError:
            errors.append("a response_url post must be a JSON body")
        result = state.handle_response_url(request.path_params["rid"], payload, errors)
        return _respond(result)

    async def snapshot(request: Request) -> Response:
        return JSONResponse(state.snapshot(request.query_params.get("user") or None))

    async def changes(request: Request) -> Response:
        try:
            since = int(request.query_params.get("since", "0"))
            timeout = min(float(request.query_params.get("timeout", "25")), LONG_POLL_MAX_SECONDS)
        except ValueError:
            return JSONResponse({"ok": False, "error": "since and timeout must be numbers"}, 400)
        deadline = time.monotonic() + timeout
        # Polling a counter keeps the event loop free of blocking waits on the state lock.
        while state.seq <= since and time.monotonic() < deadline:
            if await request.is_disconnected():
                break
            await asyncio.sleep(_POLL_INTERVAL)
        return JSONResponse({"seq": state.seq, "changes": state.changes_since(since)})

    async def rate_limits(request: Request) -> Response:
        return JSONResponse(state.rate_limit_report())

    socket_routes: list[BaseRoute] = []
    if socket_mode is not None:
        sm = socket_mode

        async def connections_open(request: Request) -> Response:
            # Ahead of /api/{method}: this method takes the app-level token, not the bot's.
            args, _, _ = await _read_arguments(request)
            token = _token(request, args)
            return _respond(sm.connections_open(token, http_method=request.method))

        socket_routes.append(
            Route("/api/apps.connections.open", connections_open, methods=["GET", "POST"]))

    return Starlette(
        routes=[
            *socket_routes,
            Route("/api/{method}", api, methods=["GET", "POST"]),
            Route("/response/{rid}", response_url, methods=["POST"]),
            Route("/standin/state", snapshot, methods=["GET"]),
            Route("/standin/changes", changes, methods=["GET"]),
            Route("/standin/rate_limits", rate_limits, methods=["GET"]),
            *routes,
        ]
    )


class StandinServer:
    """Serve the stand-in with uvicorn in a daemon thread on 127.0.0.1 and a free port."""

    def __init__(
        self,
        state: StandinState | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        routes: Sequence[BaseRoute] = (),
        socket_mode: SocketModeStandin | None = None,
    ) -> None:
        self.state = state if state is not None else StandinState()
        self.host = host
        self._requested_port = port
        self._routes = routes
        self.socket_mode = socket_mode  # started and stopped by its owner
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def thread_id(self) -> int | None:
        """The OS id of the thread serving it (its worker threads are started from it), for
        a benchmark that lowers its CPU priority; None before start."""
        return self._thread.native_id if self._thread is not None else None

    @property
    def base_url(self) -> str:
        """What SLACK_API_URL and WebClient(base_url=...) take."""
        return f"{self.root_url}api/"

    def start(self, timeout: float = 10.0) -> StandinServer:
        # Binding here (port 0) tells us the real port before uvicorn starts: no race.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._requested_port))
        self._socket = sock
        self.port = sock.getsockname()[1]
        self.state.public_url = self.root_url
        config = uvicorn.Config(
            create_standin_app(self.state, routes=self._routes, socket_mode=self.socket_mode),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="slack-standin", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Slack stand-in did not start on {self.root_url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> StandinServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
