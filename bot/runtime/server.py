"""`rotabot serve`: one ASGI process serving Slack, alerts, health and metrics."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from apscheduler.schedulers.background import BackgroundScheduler
from slack_bolt import App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from bot.domain.errors import StoreUnavailable
from bot.runtime.bootstrap import Container, build
from bot.runtime.logs import configure_logging
from bot.runtime.metrics import render
from bot.runtime.settings import Settings, SettingsError
from bot.services.timers import TimerWork
from handlers.alerts_http import alerts_route
from handlers.app import build_bolt_app
from storage.migrate import schema_problem

log = logging.getLogger("rotabot.server")


def bolt_app(
    c: Container, *, signing_secret: str | None = None, process_before_response: bool = False
) -> App:
    """The Bolt app of this container: its listeners get the services (``c.deps``) only."""
    return build_bolt_app(
        c.deps,
        client=c.slack,
        signing_secret=signing_secret or c.settings.slack_signing_secret,
        process_before_response=process_before_response,
    )


def web_app(bolt: App, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """Slack's ``POST /slack/events`` through Bolt's Starlette adapter, beside ``routes``."""

    async def slack_events(request: Request) -> Response:
        body = await request.body()
        # Bolt's sync dispatch returns once the listener has acked; the listener finishes in
        # Bolt's worker pool. Run it off the event loop so one slow ack cannot stall others
        # (the adapter's own handler would call it on the loop).
        bolt_response = await run_in_threadpool(bolt.dispatch, to_bolt_request(request, body))
        return to_starlette_response(bolt_response)

    return Starlette(routes=[Route("/slack/events", slack_events, methods=["POST"]), *routes])


def create_web_app(c: Container, bolt: App) -> Starlette:
    async def healthz(request: Request) -> Response:
        def check() -> dict[str, str]:
            with c.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return {"status": "ok", "database": "ok"}

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
    """At start and then every `interval` s: post the rotation messages and prompts that a
    dead process (this one before a restart, or another replica) committed but never posted.
    Claims skip whatever went out; a dead holder's claim is taken over after its lease."""

    def run() -> None:
        while True:
            try:
                c.notifier.catch_up(c.service.active())
            except Exception:
                log.exception("catching up unposted rotation messages failed")
            time.sleep(interval)

    threading.Thread(target=run, name="rotabot-catch-up", daemon=True).start()


def serve(host: str, port: int, settings: Settings | None = None) -> int:
    import uvicorn

    settings = settings or Settings.from_env()
    try:
        settings.check_for_serve()
    except SettingsError as exc:
        print(f"rotabot: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if not settings.database_url.startswith("sqlite"):  # SQLite is migrated by build()
        try:
            problem = schema_problem(settings.database_url)
        except StoreUnavailable as exc:
            problem = str(exc)
        if problem is not None:
            print(f"rotabot: {problem}", file=sys.stderr)
            return 2
    c = build(settings)
    bolt = bolt_app(c)
    start_timers(c)
    catch_up_in_background(c)
    if settings.slack_app_token:
        from slack_bolt.adapter.socket_mode import SocketModeHandler

        log.info("connecting to Slack over Socket Mode")
        SocketModeHandler(bolt, settings.slack_app_token).start()  # type: ignore[no-untyped-call]
        return 0
    log.info("serving Slack on http://%s:%s/slack/events", host, port)
    uvicorn.run(create_web_app(c, bolt), host=host, port=port, log_level="warning")
    return 0
