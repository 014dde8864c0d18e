"""`rotabot front`: answers Slack at once and hands each verified request to `rotabot serve`.

Why a second process: in `rotabot serve` the acks share one interpreter (one GIL) with the
listener work they acknowledged (load a rotation, evaluate the gate, render, post). Under a
burst of clicks that work is runnable in many threads, and each new ack waits its turn for
the interpreter: at 16 concurrent clients acks took ten to twenty times as long as a bare
Bolt app's. The front does nothing but the ack, in a process of its own, so the bot's work
cannot delay it (give the front CPU priority: run `serve` under `nice`).

For each `POST /slack/events` the front:
- refuses what `serve` would refuse before Bolt (a body over 1 MiB, a body or header Bolt
  cannot read) and verifies the signature and timestamp (slack_sdk's SignatureVerifier, what
  Bolt uses): a forged, stale or unsigned request is 401 and never forwarded;
- answers 200 with an empty body at once when the request's ack carries nothing (slash
  commands, button presses, closed modals, shortcuts, events), and queues it for `serve`;
- proxies the request and waits for `serve`'s answer when the answer is the payload: a modal
  submission (validation errors come back in the ack), an options request, Slack's URL
  check, or anything it does not recognise.

Queued requests are posted to `serve` unchanged, signature and all: `serve` verifies them
again and takes each signature once (bot/runtime/slack_replay.py), so a request posted twice
after a lost answer is done once. A request `serve` cannot take yet (down, restarting, a 5xx)
is retried with backoff until its signature is about to expire; one it refuses (401, 404, 4xx)
is logged and dropped. When the queue is full the front stops acking early: it proxies and
waits, so a backlog slows acks down rather than losing clicks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import parse_qs

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from slack_sdk.signature import SignatureVerifier
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.domain.replay import SIGNATURE_TOLERANCE_SECONDS
from bot.runtime.logs import configure_logging
from bot.runtime.server import (
    SLACK_MAX_BODY_BYTES,
    JsonServerErrors,
    _refuse,
    _slack_problem,
    listen_or_say,
)
from bot.runtime.settings import Settings
from handlers.request_body import BodyTooLarge, read_limited

log = logging.getLogger("rotabot.front")

# Requests whose ack is an empty 200 in every rotabot listener: acked here, done by `serve`.
# Everything else (view_submission, block_suggestion, url_verification, ssl_check, unknown
# kinds) is proxied, because its answer is what `serve` says.
ACK_EARLY = frozenset({"command", "block_actions", "view_closed", "shortcut",
                       "message_action", "event_callback"})
# Slack's headers `serve` needs to verify and read a request (the rest are the front's).
FORWARDED_HEADERS = ("content-type", "x-slack-signature", "x-slack-request-timestamp",
                     "x-slack-retry-num", "x-slack-retry-reason")
QUEUE_SIZE = 2_000
SENDERS = 8
# Retries stop a little before the signature expires: later, `serve` refuses it as stale.
RETRY_FOR_SECONDS = SIGNATURE_TOLERANCE_SECONDS - 30
FIRST_BACKOFF, MAX_BACKOFF = 0.2, 5.0


def request_kind(content_type: str, body: bytes) -> str:
    """What Slack sent: "command", an interactive payload's type, an Events API body's type,
    "ssl_check", or "unknown". The body has been verified before this is asked."""
    text = body.decode("utf-8", "replace")
    try:
        if content_type.startswith("application/json"):
            parsed = json.loads(text)
            return str(parsed.get("type") or "unknown") if isinstance(parsed, dict) else "unknown"
        form = parse_qs(text, keep_blank_values=True)
        if "command" in form:
            return "command"
        if "ssl_check" in form:
            return "ssl_check"
        if "payload" in form:
            payload = json.loads(form["payload"][0])
            return str(payload.get("type") or "unknown") if isinstance(payload, dict) else (
                "unknown")
    except ValueError:
        return "unknown"
    return "unknown"


@dataclass(frozen=True)
class Queued:
    body: bytes
    headers: Mapping[str, str]
    kind: str
    timestamp: int  # the request's X-Slack-Request-Timestamp


class FrontMetrics:
    """The front's own /metrics (a registry of its own: it shares no process with `serve`)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.acked = Counter("rotabot_front_acked_total",
                             "Slack requests acked by the front and queued for serve",
                             ["kind"], registry=self.registry)
        self.proxied = Counter("rotabot_front_proxied_total",
                               "Slack requests proxied to serve, the answer waited for",
                               ["reason"], registry=self.registry)
        self.forwarded = Counter("rotabot_front_forwarded_total",
                                 "Queued requests serve answered (any status)", ["status"],
                                 registry=self.registry)
        self.retries = Counter("rotabot_front_retries_total",
                               "Posts to serve retried (serve down or 5xx)",
                               registry=self.registry)
        self.dropped = Counter("rotabot_front_dropped_total",
                               "Queued requests given up on (refused by serve, or expired)",
                               ["reason"], registry=self.registry)
        self.waiting = Gauge("rotabot_front_waiting", "Requests queued for serve",
                             registry=self.registry)


class Forwarder:
    """The queue of acked requests and the tasks that post them to `serve`."""

    def __init__(self, upstream: str, metrics: FrontMetrics, *, senders: int = SENDERS,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.events_url = upstream.rstrip("/") + "/slack/events"
        self.metrics = metrics
        self.queue: asyncio.Queue[Queued] = asyncio.Queue(maxsize=queue_size)
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=2.0))
        self.senders = senders
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._send_forever(), name=f"front-sender-{i}")
                       for i in range(self.senders)]

    async def stop(self, grace: float) -> None:
        """Post what is queued (for up to ``grace`` s), then stop."""
        try:
            await asyncio.wait_for(self.queue.join(), grace)
        except TimeoutError:
            log.error("stopped with %d Slack requests not yet handed to serve",
                      self.queue.qsize())
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    def offer(self, item: Queued) -> bool:
        """Queue ``item``; False when the queue is full (the caller proxies instead)."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            return False
        self.metrics.waiting.set(self.queue.qsize())
        return True

    async def proxy(self, body: bytes, headers: Mapping[str, str]) -> httpx.Response:
        return await self.client.post(self.events_url, content=body, headers=dict(headers))

    async def _send_forever(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self._deliver(item)
            except Exception as exc:  # a sender must outlive any one request
                log.error("handing a Slack request (%s) to serve failed: %s", item.kind,
                          type(exc).__name__)
                self.metrics.dropped.labels("error").inc()
            finally:
                self.queue.task_done()
                self.metrics.waiting.set(self.queue.qsize())

    async def _deliver(self, item: Queued) -> None:
        backoff = FIRST_BACKOFF
        while True:
            try:
                response = await self.proxy(item.body, item.headers)
            except httpx.TransportError as exc:
                problem = type(exc).__name__
            else:
                self.metrics.forwarded.labels(str(response.status_code)).inc()
                if response.status_code < 500:
                    if response.status_code >= 400:
                        # 401: serve's signing secret differs from the front's; 404: no
                        # listener acked in Bolt's 3 s. Posting again would not change it.
                        log.warning("serve refused a Slack request (%s): HTTP %s", item.kind,
                                    response.status_code)
                        self.metrics.dropped.labels(str(response.status_code)).inc()
                    return
                problem = f"HTTP {response.status_code}"
            if time.time() + backoff > item.timestamp + RETRY_FOR_SECONDS:
                log.error("gave up handing a Slack request (%s) to serve: %s, and its "
                          "signature is about to expire", item.kind, problem)
                self.metrics.dropped.labels("expired").inc()
                return
            log.warning("serve did not take a Slack request (%s): %s; retrying in %.1f s",
                        item.kind, problem, backoff)
            self.metrics.retries.inc()
            await asyncio.sleep(backoff)  # backoff between attempts, not synchronisation
            backoff = min(backoff * 2, MAX_BACKOFF)


def front_app(signing_secret: str, upstream: str, *, senders: int = SENDERS,
              queue_size: int = QUEUE_SIZE, grace: float = 10.0) -> Starlette:
    """The front's ASGI app: ``POST /slack/events``, ``GET /healthz``, ``GET /metrics``."""
    verifier = SignatureVerifier(signing_secret)
    metrics = FrontMetrics()
    forwarder = Forwarder(upstream, metrics, senders=senders, queue_size=queue_size)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        forwarder.start()
        try:
            yield
        finally:
            await forwarder.stop(grace)

    async def slack_events(request: Request) -> Response:
        try:
            body = await read_limited(request, SLACK_MAX_BODY_BYTES)
        except BodyTooLarge:
            return _refuse(413, f"body over {SLACK_MAX_BODY_BYTES // 1024} KiB",
                           Connection="close")
        problem = _slack_problem(request, body)
        if problem is not None:
            return _refuse(400, problem)
        stamp = request.headers.get("x-slack-request-timestamp", "")
        if not verifier.is_valid(body=body.decode("utf-8"), timestamp=stamp,
                                 signature=request.headers.get("x-slack-signature", "")):
            log.warning("slack request refused (401): signature or timestamp did not verify")
            return JSONResponse({"error": "invalid request"}, status_code=401)
        headers = {h: request.headers[h] for h in FORWARDED_HEADERS if h in request.headers}
        kind = request_kind(headers.get("content-type", ""), body)
        if kind in ACK_EARLY:
            if forwarder.offer(Queued(body, headers, kind, int(stamp))):
                metrics.acked.labels(kind).inc()
                return Response(status_code=200)
            reason = "queue full"
        else:
            reason = kind  # the answer is serve's to give
        metrics.proxied.labels("queue_full" if reason == "queue full" else "answer").inc()
        try:
            answer = await forwarder.proxy(body, headers)
        except httpx.TransportError as exc:
            log.error("serve did not answer a Slack request (%s): %s", reason,
                      type(exc).__name__)
            return JSONResponse({"ok": False, "error": "rotabot is not reachable"},
                                status_code=503)
        return Response(answer.content, status_code=answer.status_code,
                        media_type=answer.headers.get("content-type"))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "waiting": forwarder.queue.qsize(),
                             "upstream": forwarder.events_url})

    async def metrics_route(request: Request) -> Response:
        return Response(generate_latest(metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})

    return Starlette(
        routes=[Route("/slack/events", slack_events, methods=["POST"]),
                Route("/healthz", healthz, methods=["GET"]),
                Route("/metrics", metrics_route, methods=["GET"])],
        middleware=[Middleware(JsonServerErrors)],
        lifespan=lifespan,
    )


def serve_front(host: str, port: int, upstream: str, settings: Settings | None = None) -> int:
    import uvicorn

    settings = settings or Settings.from_env()
    if not settings.slack_signing_secret:
        print("rotabot: SLACK_SIGNING_SECRET is not set: the front verifies Slack's "
              "signatures with the same secret as serve", file=sys.stderr)
        return 2
    if not upstream.startswith(("http://", "https://")):
        print(f"rotabot: --upstream must be serve's base URL (http://host:port), not "
              f"{upstream!r}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.library_log_level)
    sock = listen_or_say(host, port)
    if sock is None:
        return 2
    log.info("acking Slack on http://%s:%s/slack/events for %s", host,
             sock.getsockname()[1], upstream)
    config = uvicorn.Config(front_app(settings.slack_signing_secret, upstream),
                            log_level="warning", log_config=None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
    return 0
