"""`rotabot front` (bot/runtime/slack_front.py) in process, in front of a recording upstream
served by uvicorn on loopback: what it acks itself, what it proxies, and what it does with
the upstream's answers (retry a 5xx, drop a 4xx, wait when its queue is full). The front with
the real `rotabot serve` behind it is tests/e2e/test_slack_front.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
import uvicorn
from harness.metric_text import metric_sum
from harness.serve import eventually, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from bot.runtime.slack_front import front_app, request_kind
from bot.sandbox.slack_standin.slack_side import slack_signature

SECRET = "front-test-signing-secret"
FORM = "application/x-www-form-urlencoded"


@dataclass
class Upstream:
    """A stand-in for serve's /slack/events: records each request, answers from `script`
    (then 200), and holds its answers while `hold` is clear."""

    url: str = ""
    seen: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)

    def app(self) -> Starlette:
        async def events(request: Request) -> Response:
            body = await request.body()
            self.seen.append((body, dict(request.headers)))
            while not self.hold.is_set():
                await _tick()
            status = self.script.pop(0) if self.script else 200
            if b"view_submission" in body:
                return JSONResponse({"response_action": "errors", "errors": {"what": "why?"}})
            return Response(status_code=status)

        return Starlette(routes=[Route("/slack/events", events, methods=["POST"])])


async def _tick() -> None:
    await asyncio.sleep(0.01)  # the held upstream polls its gate, it synchronises nothing


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    up.hold.set()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(up.app(), host="127.0.0.1", port=port,
                                           log_level="warning", log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    eventually(lambda: server.started, timeout=10, what="the upstream")
    up.url = f"http://127.0.0.1:{port}"
    try:
        yield up
    finally:
        up.hold.set()
        server.should_exit = True
        thread.join(10)


def signed(body: str, content_type: str = FORM, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    return {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(secret, ts, body)}


def command(text: str = "status R-1") -> str:
    return urlencode({"command": "/rotate", "text": text, "user_id": "U0ADMIN"})


def payload(kind: str) -> str:
    return urlencode({"payload": json.dumps({"type": kind, "user": {"id": "U0BOB"}})})


def metric(client: TestClient, sample: str, **labels: str) -> float:
    return metric_sum(client.get("/metrics").text, sample, **labels)


def test_request_kinds() -> None:
    assert request_kind(FORM, command().encode()) == "command"
    assert request_kind(FORM, payload("block_actions").encode()) == "block_actions"
    assert request_kind(FORM, payload("view_submission").encode()) == "view_submission"
    assert request_kind(FORM, b"ssl_check=1&token=x") == "ssl_check"
    assert request_kind("application/json", b'{"type": "url_verification"}') == (
        "url_verification")
    assert request_kind("application/json", b'{"type": "event_callback"}') == "event_callback"
    assert request_kind(FORM, b"payload=not-json") == "unknown"
    assert request_kind("application/json", b"[1, 2]") == "unknown"


def test_a_command_is_acked_at_once_and_handed_over_unchanged(upstream: Upstream) -> None:
    upstream.hold.clear()  # serve is slow: the ack must not wait for it
    body = command()
    headers = signed(body)
    with TestClient(front_app(SECRET, upstream.url)) as client:
        reply = client.post("/slack/events", content=body, headers=headers)
        assert (reply.status_code, reply.text) == (200, "")
        assert metric(client, "rotabot_front_acked_total") == 1
        upstream.hold.set()
        eventually(lambda: len(upstream.seen) == 1, timeout=10, what="the handover")
    sent, sent_headers = upstream.seen[0]
    assert sent == body.encode()
    for name, value in headers.items():  # Slack's headers, as the front received them
        assert sent_headers[name.lower()] == value


def test_a_modal_submission_waits_for_serve_s_answer(upstream: Upstream) -> None:
    body = payload("view_submission")
    with TestClient(front_app(SECRET, upstream.url)) as client:
        reply = client.post("/slack/events", content=body, headers=signed(body))
        assert reply.json() == {"response_action": "errors", "errors": {"what": "why?"}}
        assert metric(client, "rotabot_front_proxied_total") == 1
        assert metric(client, "rotabot_front_acked_total") == 0


def test_a_forged_request_is_refused_and_never_handed_over(upstream: Upstream) -> None:
    body = command("start model-api-key")
    with TestClient(front_app(SECRET, upstream.url)) as client:
        assert client.post("/slack/events", content=body,
                           headers=signed(body, secret="wrong")).status_code == 401
        stale = signed(body)
        stale["X-Slack-Request-Timestamp"] = str(int(time.time()) - 600)
        stale["X-Slack-Signature"] = slack_signature(SECRET, stale[
            "X-Slack-Request-Timestamp"], body)
        assert client.post("/slack/events", content=body, headers=stale).status_code == 401
        assert client.post("/slack/events", content=b"\xff",
                           headers=signed("x")).status_code == 400
    assert upstream.seen == []


def test_a_5xx_is_retried_and_a_4xx_dropped(upstream: Upstream) -> None:
    upstream.script = [503, 200, 401]
    with TestClient(front_app(SECRET, upstream.url)) as client:
        first = command("status R-1")
        client.post("/slack/events", content=first, headers=signed(first))
        eventually(lambda: len(upstream.seen) == 2, timeout=10, what="the retry")
        assert metric(client, "rotabot_front_retries_total") == 1
        second = command("status R-2")
        client.post("/slack/events", content=second, headers=signed(second))
        eventually(lambda: metric(client, "rotabot_front_dropped_total") == 1, timeout=10,
                   what="the refused request dropped")
    assert [body for body, _ in upstream.seen] == [first.encode()] * 2 + [second.encode()]


def test_with_its_queue_full_the_front_waits_for_serve_instead(upstream: Upstream) -> None:
    upstream.hold.clear()
    app = front_app(SECRET, upstream.url, senders=1, queue_size=1)
    with TestClient(app) as client:
        bodies = [command(f"status R-{i}") for i in range(3)]
        for body in bodies[:2]:  # one is being handed over, one waits in the queue
            assert client.post("/slack/events", content=body,
                               headers=signed(body)).status_code == 200
        eventually(lambda: len(upstream.seen) == 1, timeout=10, what="the first handover")
        done = threading.Event()

        def third() -> None:
            client.post("/slack/events", content=bodies[2], headers=signed(bodies[2]))
            done.set()

        threading.Thread(target=third, daemon=True).start()
        eventually(lambda: len(upstream.seen) == 2, timeout=10, what="the third, proxied")
        assert not done.is_set()  # its answer is serve's, and serve holds it
        upstream.hold.set()
        assert done.wait(10)
        eventually(lambda: len(upstream.seen) == 3, timeout=10, what="every request")
        assert metric(client, "rotabot_front_proxied_total", reason="queue_full") == 1
