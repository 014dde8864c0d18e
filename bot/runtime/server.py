"""`rotabot serve`: one ASGI process serving Slack, alerts, health and metrics."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from slack_bolt import App
from slack_bolt.request import BoltRequest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.runtime.bootstrap import Container, build

if TYPE_CHECKING:
    from bot.services.health_schedule import HealthSchedule
    from bot.services.timers import TimerWork
from bot.runtime.settings import Settings, SettingsError

log = logging.getLogger("rotabot.server")


def create_web_app(c: Container, bolt: App) -> Starlette:
    async def slack_events(request: Request) -> Response:
        body = (await request.body()).decode("utf-8")
        bolt_request = BoltRequest(
            body=body, query=request.url.query, headers=dict(request.headers)
        )
        # Bolt's sync dispatch returns once the listener has acked; the listener finishes in
        # Bolt's worker pool. Run it off the event loop so one slow ack cannot stall others.
        bolt_response = await run_in_threadpool(bolt.dispatch, bolt_request)
        headers = {k: v[0] for k, v in bolt_response.headers.items() if v}
        return Response(
            content=bolt_response.body, status_code=bolt_response.status, headers=headers
        )

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
        from bot.runtime.metrics import render_metrics

        return PlainTextResponse(
            await run_in_threadpool(render_metrics, c), media_type="text/plain; version=0.0.4"
        )

    from handlers.alerts_http import alerts_route

    routes = [
        Route("/slack/events", slack_events, methods=["POST"]),
        alerts_route(c),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    extra = c.extras.get("routes")
    if isinstance(extra, list):
        routes.extend(extra)
    return Starlette(routes=routes)


def timer_work(c: Container) -> TimerWork:
    """The timers of this process: leader-elected on PostgreSQL, reminders through Slack."""
    from bot.services.timers import TimerWork
    from storage.leader import leader_for
    from storage.repositories import SqlReminderLog

    leader = leader_for(c.settings.database_url)
    c.extras["leader"] = leader
    return TimerWork(
        c.service,
        is_leader=leader.is_leader,
        reminders=SqlReminderLog(c.engine),
        notices=c.notifier,
    )


def health_schedule(c: Container) -> HealthSchedule:
    """Scheduled health checks, failures into the alert pipeline (ROTABOT_HEALTH_INTERVAL)."""
    from adapters.health import HealthChecker
    from bot.services.health_schedule import HealthSchedule, interval_from_env
    from handlers.alerts_http import alert_service

    probe = c.health.probe if c.health is not None else None
    checker = probe if isinstance(probe, HealthChecker) else HealthChecker()
    schedule = HealthSchedule(alert_service(c), checker, interval_from_env())
    c.extras["health_schedule"] = schedule
    return schedule


def start_timers(c: Container) -> object:
    from bot.services.timers import start_scheduler

    work = timer_work(c)
    c.extras["timers"] = work
    work.extra.append(health_schedule(c).run_due)  # health checks while rotations run
    from handlers.schedule_actions import schedule_service

    work.extra.append(schedule_service(c).run_due)  # scheduled rotations, max_age reminders
    return start_scheduler(work)


def catch_up_in_background(c: Container, interval: float = 15.0) -> None:
    """At start and then every `interval` s: post the rotation messages and prompts that a
    dead process (this one before a restart, or another replica) committed but never posted.
    Claims skip whatever went out; a dead holder's claim is taken over after its lease."""
    import threading
    import time

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

    from bot.runtime.logs import configure_logging
    from handlers.app import build_bolt_app

    settings = settings or Settings.from_env()
    try:
        settings.check_for_serve()
    except SettingsError as exc:
        print(f"rotabot: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if not settings.database_url.startswith("sqlite"):  # SQLite is migrated by build()
        from bot.domain.errors import StoreUnavailable
        from storage.migrate import schema_problem

        try:
            problem = schema_problem(settings.database_url)
        except StoreUnavailable as exc:
            problem = str(exc)
        if problem is not None:
            print(f"rotabot: {problem}", file=sys.stderr)
            return 2
    c = build(settings)
    bolt = build_bolt_app(c)
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
