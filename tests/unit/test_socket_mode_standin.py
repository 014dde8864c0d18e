"""The stand-in's Socket Mode, driven by slack_sdk's own clients (the WebClient and the builtin
SocketModeClient that Bolt's SocketModeHandler runs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.sandbox.slack_standin.socket_mode import (
    SocketModeSlackSide,
    SocketModeStandin,
    envelope_payload,
)

APP_TOKEN = "xapp-1-A0ROTABOT-1-0123456789abcdef"


@pytest.fixture
def socket() -> Iterator[SocketModeStandin]:
    with SocketModeStandin() as sm:
        yield sm


@pytest.fixture
def state() -> StandinState:
    s = StandinState()
    s.add_user("U0ALICE", "alice", is_admin=True)
    s.add_channel("C0ROTATE", "rotations", members=["U0ALICE"])
    return s


@pytest.fixture
def server(state: StandinState, socket: SocketModeStandin) -> Iterator[StandinServer]:
    with StandinServer(state, socket_mode=socket) as srv:
        yield srv


@pytest.fixture
def web(server: StandinServer) -> WebClient:
    return WebClient(base_url=server.base_url, retry_handlers=[])


class App:
    """A Socket Mode app: records each request and acks it (with `answer` as the payload)."""

    def __init__(self, web: WebClient, *, ack: bool = True) -> None:
        self.requests: list[SocketModeRequest] = []
        self.answer: dict[str, Any] | None = None
        self.ack = ack
        self.client = SocketModeClient(app_token=APP_TOKEN, web_client=web)
        self.client.socket_mode_request_listeners.append(self.handle)

    def handle(self, client: BaseSocketModeClient, req: SocketModeRequest) -> None:
        self.requests.append(req)
        if self.ack:
            client.send_socket_mode_response(SocketModeResponse(req.envelope_id, self.answer))


@pytest.fixture
def app(web: WebClient, socket: SocketModeStandin) -> Iterator[App]:
    connected = App(web)
    connected.client.connect()
    socket.wait_for(lambda s: s.live_connection())
    try:
        yield connected
    finally:
        connected.client.close()


def open_error(web: WebClient, token: str) -> str:
    with pytest.raises(SlackApiError) as info:
        web.apps_connections_open(app_token=token)
    return str(info.value.response["error"])


def test_connections_open_takes_only_an_app_token(
    web: WebClient, socket: SocketModeStandin
) -> None:
    assert open_error(web, "") == "not_authed"
    assert open_error(web, "xoxb-bot-token") == "not_allowed_token_type"
    assert open_error(web, "xoxp-user-token") == "not_allowed_token_type"
    assert open_error(web, "not-a-slack-token") == "invalid_auth"
    url = web.apps_connections_open(app_token=APP_TOKEN)["url"]
    assert url.startswith(f"ws://127.0.0.1:{socket.port}/link/?ticket=")
    assert [(o.token_kind, o.error) for o in socket.opens] == [
        ("none", "not_authed"), ("bot", "not_allowed_token_type"),
        ("user", "not_allowed_token_type"), ("unknown", "invalid_auth"), ("app", None)]
    # The log keeps the token's kind, never the token.
    assert APP_TOKEN not in repr(socket.opens)


def test_pinned_app_tokens_refuse_another_app_token(state: StandinState) -> None:
    with (SocketModeStandin(app_tokens=[APP_TOKEN]) as sm,
          StandinServer(state, socket_mode=sm) as srv):
        web = WebClient(base_url=srv.base_url, retry_handlers=[])
        assert open_error(web, "xapp-1-A0OTHER-1-ffff") == "invalid_auth"
        assert web.apps_connections_open(app_token=APP_TOKEN)["ok"] is True


def test_a_ticket_opens_one_connection(web: WebClient, socket: SocketModeStandin) -> None:
    url = str(web.apps_connections_open(app_token=APP_TOKEN)["url"])

    async def connect_twice() -> tuple[dict[str, Any], int]:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            hello = json.loads(await ws.receive_str(timeout=5))
            with pytest.raises(aiohttp.WSServerHandshakeError) as second:
                await session.ws_connect(url)
            return hello, second.value.status

    hello, status = asyncio.run(connect_twice())
    assert hello["type"] == "hello" and hello["connection_info"] == {"app_id": "A0ROTABOT"}
    assert status == 401
    assert socket.violations == ["a ticket from apps.connections.open used twice"]


def test_envelopes_are_acked_with_their_id(app: App, socket: SocketModeStandin) -> None:
    envelope = socket.send("slash_commands", {"command": "/rotate", "text": "list"},
                           accepts_response_payload=True)
    assert socket.wait_ack(envelope)
    assert envelope.ack_connection == envelope.connection
    assert [r.envelope_id for r in app.requests] == [envelope.envelope_id]
    assert app.requests[0].payload == {"command": "/rotate", "text": "list"}
    assert socket.violations == []


def test_ack_bookkeeping_flags_what_slack_would_drop(app: App, socket: SocketModeStandin) -> None:
    app.answer = {"text": "lost"}
    envelope = socket.send("interactive", {"type": "block_actions"})
    assert socket.wait_ack(envelope)
    app.client.send_socket_mode_response({"envelope_id": envelope.envelope_id})
    app.client.send_socket_mode_response({"envelope_id": "never-sent"})
    socket.wait_for(lambda s: len(s.violations) == 3)
    assert socket.violations == [
        "ack of interactive carries a payload Slack does not accept",
        f"envelope {envelope.envelope_id} acked twice",
        "ack for an envelope Slack never sent",
    ]


def test_disconnect_moves_the_app_to_a_new_connection(
    app: App, socket: SocketModeStandin
) -> None:
    old, new = socket.disconnect("warning")
    assert new is not None and new.hello is not None and old.closed_at is not None
    assert [o.ok for o in socket.opens] == [True, True]
    envelope = socket.send("events_api", {"type": "event_callback", "event": {}})
    assert envelope.connection == new.id and socket.wait_ack(envelope)
    assert app.requests[-1].retry_attempt == 0


def test_slack_side_sends_the_http_bodies_as_payloads(
    app: App, state: StandinState, socket: SocketModeStandin
) -> None:
    slack = SocketModeSlackSide(state, socket)
    reply = slack.command("U0ALICE", "C0ROTATE", "status R-1")
    assert reply.status == 200 and reply.json is None
    # A slash command's payload is its form fields as an object, as the HTTP body carries them.
    assert app.requests[-1].type == "slash_commands"
    assert envelope_payload(reply.request, "application/x-www-form-urlencoded") == (
        "slash_commands", app.requests[-1].payload)
    assert app.requests[-1].payload["text"] == "status R-1"
    app.answer = {"response_action": "clear"}
    slack.post("view_submission", urlencode({"payload": json.dumps({"type": "view_submission"})}),
               "application/x-www-form-urlencoded")
    assert app.requests[-1].type == "interactive" and app.requests[-1].accepts_response_payload
    assert socket.envelopes[-1].ack_payload == {"response_action": "clear"}
    assert socket.violations == []


def test_no_ack_is_a_504_reply(web: WebClient, state: StandinState,
                               socket: SocketModeStandin) -> None:
    silent = App(web, ack=False)
    silent.client.connect()
    try:
        socket.wait_for(lambda s: s.live_connection())
        reply = SocketModeSlackSide(state, socket, ack_timeout=0.5).command(
            "U0ALICE", "C0ROTATE", "list")
        assert reply.status == 504 and "no ack" in reply.notes[0]
    finally:
        silent.client.close()
