"""`rotabot serve`: one ASGI process serving Slack, alerts, health and metrics."""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.domain.errors import StoreUnavailable
from bot.domain.replicas import stale_reason
from bot.runtime.bootstrap import Container, build
from bot.runtime.logs import configure_logging
from bot.runtime.metrics import render
from bot.runtime.settings import Settings, SettingsError
from bot.runtime.slack_replay import ignore_replays
from bot.services.timers import TimerWork
from handlers.alerts_http import alerts_route
from handlers.app import build_bolt_app
from handlers.blocks import escape_mrkdwn, text_message
from handlers.evidence_http import evidence_route
from handlers.request_body import BodyTooLarge, read_limited
from storage.migrate import schema_problem

log = logging.getLogger("rotabot.server")


class _DropMessage(logging.Filter):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != self.text


@contextmanager
def _without_bolt_token_warning() -> Iterator[None]:
    """Bolt's App takes ``token or os.environ["SLACK_BOT_TOKEN"]`` and, given a ``client``
    too, warns that the token "will be unused" and takes the client's. We give only the client
    (our retry handlers and SLACK_API_URL; its token is that same SLACK_BOT_TOKEN, from the
    settings), but Bolt reads the environment anyway and no argument turns that off: the
    warning says nothing true, so it is dropped, only while the App is built."""
    bolt_log = logging.getLogger("slack_bolt")  # the logger build_bolt_app hands Bolt
    dropped = _DropMessage(warning_client_prioritized_and_token_skipped())
    bolt_log.addFilter(dropped)
    try:
        yield
    finally:
        bolt_log.removeFilter(dropped)


def bolt_app(
    c: Container, *, signing_secret: str | None = None, process_before_response: bool = False
) -> App:
    """The Bolt app of this container: its listeners get the services (``c.deps``) only.

    Bolt gets our Web API client (``c.slack``), not a token: it authorizes every request with
    the client's token, without an ``auth.test`` at start (SingleTeamAuthorization).

    Each verified request is taken once: a replay (the same signature, any replica, any time
    within the signature window) is answered 200 and ignored (bot/runtime/slack_replay.py)."""
    with _without_bolt_token_warning():
        app = build_bolt_app(
            c.deps,
            client=c.slack,
            signing_secret=signing_secret or c.settings.slack_signing_secret,
            process_before_response=process_before_response,
        )
    # A global middleware runs after Bolt's RequestVerification: only verified requests count.
    app.use(ignore_replays(c.slack_requests))
    return app


# Slack's payloads are a few KiB (a big modal's state tens of KiB); anything far larger is not
# Slack, and is refused before it is read whole or parsed.
SLACK_MAX_BODY_BYTES = 1024 * 1024


def _refuse(status: int, message: str, **headers: str) -> JSONResponse:
    log.warning("slack request refused (%s): %s", status, message)
    return JSONResponse({"ok": False, "error": message}, status_code=status,
                        headers=headers or None)


def _slack_problem(request: Request, body: bytes) -> str | None:
    """Why a request cannot be handed to Bolt at all: Bolt would raise on it (a 500) before
    or while verifying the signature. None when it can be verified."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "body is not UTF-8"
    for stamp in request.headers.getlist("x-slack-request-timestamp"):
        stamp = stamp.strip()
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return "X-Slack-Request-Timestamp must be unix seconds"
    for signature in request.headers.getlist("x-slack-signature"):
        if not signature.isascii():  # hmac.compare_digest raises on non-ASCII text
            return "X-Slack-Signature must be ASCII"
    return None


class JsonServerErrors:
    """ASGI middleware: an exception from a route becomes a JSON 500 with a ref, and one JSON
    log line naming its type, instead of Starlette's plain-text 500 and a traceback from the
    server. Nothing of the exception's text reaches the answer or the log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            ref = uuid.uuid4().hex[:8]
            log.error("%s %s failed (ref %s): %s", scope.get("method"),
                      str(scope.get("path"))[:200], ref, type(exc).__name__)
            if not started:
                response = JSONResponse(
                    {"ok": False, "error": f"internal error (ref {ref})"}, status_code=500)
                await response(scope, receive, send)


def _endpoint_app(endpoint: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


class DirectRoutes:
    """ASGI: requests to ``paths`` go straight to their route's endpoint (still through
    JsonServerErrors); the rest to ``app``. These are the paths every Slack request and every
    alert takes: Starlette's router and exception middlewares around one endpoint cost about a
    tenth of the CPU of an alert report (benchmarks, section 3), for nothing these endpoints
    use (they raise no HTTPException and match no path parameters)."""

    def __init__(self, app: Starlette, paths: Iterable[str]) -> None:
        self.app = app
        wanted = set(paths)
        self.direct: dict[tuple[str, str], ASGIApp] = {
            (route.path, method): JsonServerErrors(_endpoint_app(route.endpoint))
            for route in app.routes
            if isinstance(route, Route) and route.path in wanted
            for method in route.methods or ()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            direct = self.direct.get((scope["path"], scope["method"]))
            if direct is not None:
                await direct(scope, receive, send)
                return
        await self.app(scope, receive, send)


# The paths DirectRoutes serves without Starlette's routing (when the app has them).
DIRECT_PATHS = ("/slack/events", "/alerts")


def web_app(
    bolt: App, routes: Sequence[BaseRoute] = (), *, max_body: int = SLACK_MAX_BODY_BYTES
) -> DirectRoutes:
    """Slack's ``POST /slack/events`` through Bolt's Starlette adapter, beside ``routes``.

    Before Bolt sees a request: a body over ``max_body`` is 413 before it is read whole (and
    the connection is closed, so the rest is not taken either); a body Bolt cannot decode or a
    timestamp it cannot read is 400. Refusals, and any exception, are one JSON log line with no
    value from the request; answers are JSON.
    """

    async def slack_events(request: Request) -> Response:
        try:
            body = await read_limited(request, max_body)
        except BodyTooLarge:
            return _refuse(413, f"body over {max_body // 1024} KiB", Connection="close")
        problem = _slack_problem(request, body)
        if problem is not None:
            return _refuse(400, problem)
        try:
            bolt_request = to_bolt_request(request, body)
        except Exception:  # Bolt parses the (unverified) body before it verifies it
            return _refuse(400, "body is not a Slack payload (JSON or form data)")
        # Bolt's sync dispatch returns once the listener has acked; the listener finishes in
        # Bolt's worker pool. Run it off the event loop so one slow ack cannot stall others
        # (the adapter's own handler would call it on the loop).
        bolt_response = await run_in_threadpool(bolt.dispatch, bolt_request)
        if bolt_response.status == 401:
            # Bolt's own line about it is withheld (handlers/app.py): say it here, without it.
            log.warning("slack request refused (401): signature or timestamp did not verify")
        return to_starlette_response(bolt_response)

    app = Starlette(
        routes=[Route("/slack/events", slack_events, methods=["POST"]), *routes],
        middleware=[Middleware(JsonServerErrors)],
    )
    return DirectRoutes(app, DIRECT_PATHS)


def create_web_app(c: Container, bolt: App) -> DirectRoutes:
    async def healthz(request: Request) -> Response:
        def check() -> dict[str, object]:
            with c.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            keeper = c.catalog_keeper
            newest = keeper.replicas.newest()
            stale = stale_reason(keeper.sha256, newest)
            # Still 200 when stale: the replica is up and must stay reachable for
            # `/rotate reload`; the status and the hashes say what is wrong.
            return {"status": "stale-catalog" if stale else "ok", "database": "ok",
                    "catalog": {"sha256": keeper.sha256, "replica": keeper.replica_id,
                                "newest": newest.catalog_sha256 if newest else keeper.sha256,
                                **({"problem": stale} if stale else {})}}

        try:
            return JSONResponse(await run_in_threadpool(check))
        except Exception as exc:
            return JSONResponse(
                {"status": "degraded", "database": type(exc).__name__}, status_code=503
            )

    async def metrics(request: Request) -> Response:
        body, content_type = await run_in_threadpool(render, c.metrics)
        return Response(body, headers={"Content-Type": content_type})

    return web_app(bolt, [
        alerts_route(c.deps),
        evidence_route(c.deps, c.evidence),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *c.extra_routes,
    ])


def start_scheduler(work: TimerWork, interval_seconds: float = 2.0) -> BackgroundScheduler:
    """Run ``work`` on an APScheduler interval job in a background thread.

    The first run is immediate, so work that came due while the bot was down runs at start.
    """
    scheduler = BackgroundScheduler(timezone="UTC")
    # misfire_grace_time=None: a run that was due while we were busy or down still runs;
    # coalesce: many missed runs collapse into one.
    scheduler.add_job(
        work.run_once,
        "interval",
        seconds=interval_seconds,
        id="rotabot-timers",
        next_run_time=datetime.now(UTC),
        misfire_grace_time=None,
        coalesce=True,
        max_instances=1,
    )
    scheduler.start()
    return scheduler


def start_timers(c: Container) -> BackgroundScheduler:
    """Run the container's timers (leader only on PostgreSQL) on a background scheduler."""
    return start_scheduler(c.timers)


def catch_up_in_background(c: Container, interval: float = 15.0) -> None:
    """At start and then every `interval` s: post the rotation messages, prompts and new
    alerts that a dead process (this one before a restart, or another replica) committed but
    never posted. Claims skip whatever went out; a dead holder's claim is taken over after its
    lease. Expired alert delivery keys are purged on the way (the group commit takes keys
    without purging)."""

    def run() -> None:
        first = True
        while True:
            try:
                c.notifier.catch_up(c.service.active(), refresh=first)
                first = False
            except Exception:
                log.exception("catching up unposted rotation messages failed")
            try:
                c.catalog_keeper.heartbeat()  # seen_at: which replicas still run
            except Exception as exc:
                log.warning("recording this replica as alive failed: %s", type(exc).__name__)
            try:
                c.alerts.catch_up()
                c.deliveries.purge_if_due()
            except Exception:
                log.exception("catching up unposted alerts failed")
            time.sleep(interval)

    threading.Thread(target=run, name="rotabot-catch-up", daemon=True).start()


def reload_on_sighup(c: Container) -> None:
    """SIGHUP reloads the catalog (in a thread: the handler must not wait on the database)
    and posts the outcome, or the problems that kept the old catalog, in the catalog's
    rotation channel."""

    def reload() -> None:
        try:
            outcome = c.catalog_keeper.reload()
            text = "\n".join((f"SIGHUP on {c.catalog_keeper.replica_id}: {outcome.summary}",
                              *(f"• {escape_mrkdwn(e)}" for e in outcome.errors)))
            c.notifier.post(c.service.catalog.defaults.channel, text_message(text))
        except Exception as exc:
            log.error("catalog reload on SIGHUP failed: %s", type(exc).__name__)

    signal.signal(signal.SIGHUP, lambda _signum, _frame: threading.Thread(
        target=reload, name="rotabot-reload", daemon=True).start())


def serve(host: str, port: int, settings: Settings | None = None) -> int:
    import uvicorn

    settings = settings or Settings.from_env()
    try:
        settings.check_for_serve()
    except SettingsError as exc:
        print(f"rotabot: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.library_log_level)
    if not settings.database_url.startswith("sqlite"):  # SQLite is migrated by build()
        try:
            problem = schema_problem(settings.database_url)
        except StoreUnavailable as exc:
            problem = str(exc)
        if problem is not None:
            print(f"rotabot: {problem}", file=sys.stderr)
            return 2
    # Bound before anything starts: uvicorn would only log the OSError's type and exit 3.
    # Socket Mode serves HTTP too: /alerts, /healthz and /metrics do not come over Slack.
    sock = listen_or_say(host, port)
    if sock is None:
        return 2
    c = build(settings)
    c.catalog_keeper.announce()  # the catalog this replica runs is now the newest loaded
    reload_on_sighup(c)
    bolt = bolt_app(c)
    start_timers(c)
    catch_up_in_background(c)
    if settings.slack_app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        log.info("connecting to Slack over Socket Mode")
        # connect() returns once connected; the client reconnects by itself in its threads.
        SocketModeHandler(bolt, settings.slack_app_token).connect()  # type: ignore[no-untyped-call]
    log.info("serving HTTP on http://%s:%s (/slack/events, /alerts, /healthz, /metrics)", host,
             sock.getsockname()[1])
    # log_config=None: uvicorn's lines go through the JSON handler, not its plain-text ones.
    config = uvicorn.Config(create_web_app(c, bolt), log_level="warning", log_config=None)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        # Requests still queued are committed (uvicorn waited for their answers already);
        # Slack posts not made yet are made by the next start's catch-up.
        c.intake.close()
        c.alerts.flush(timeout=5.0)
    return 0


def listen_or_say(host: str, port: int) -> socket.socket | None:
    """The listening socket, or None after one line on stderr saying why there is none."""
    try:
        return _listen(host, port)
    except OSError as exc:
        print(f"rotabot: cannot listen on {host}:{port} ({exc.strerror or exc}); pass "
              "--port P or set PORT to a free port", file=sys.stderr)
        return None


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (IPv6 when the host is an IPv6 address), as uvicorn
    binds one: SO_REUSEADDR so a restart does not wait out the old connections' TIME_WAIT."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                         socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
