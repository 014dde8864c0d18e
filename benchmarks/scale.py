"""Scenario 4: scale. A rotation with 1,000 consumers in three lanes through `rotabot serve`
(command to posted message, Block Kit limits, peak memory), and database queries per click
counted in process at 10, 100 and 1,000 consumers.

The first lane holds only a few of the consumers (``first_lane``; the rest are spread over
staging and prod): each first-lane prompt is one chat.postMessage into the rotation channel,
about one a second at Slack's rate, so a first lane of a third of 300 consumers made each
run wait 100 s for Slack alone. The rotation message still shows every consumer."""

from __future__ import annotations

import math
import statistics
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slack_bolt.request import BoltRequest
from sqlalchemy import event

from benchmarks.harness import (
    ADMIN,
    CHANNEL,
    RequestBuilder,
    SecretSpec,
    bot_env,
    catalog_yaml,
    consumer_name,
    make_workspace,
    owner_id,
    parent_message,
    step_buttons,
    wait_for,
    wait_quiet,
)
from bot.runtime.bootstrap import build
from bot.runtime.server import bolt_app
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin.server import StandinServer
from handlers.ids import Action

SECRET = "bench-scale"


@dataclass
class ProcessScale:
    database: str
    consumers: int
    first_lane: int = 0
    to_parent_s: float = math.nan
    to_first_prompts_s: float = math.nan
    first_lane_prompts: int = 0
    parent_blocks: int = 0
    violations: int = 0
    violation_examples: list[str] = field(default_factory=list)
    peak_rss_mib: float | None = None


@dataclass
class ClickCost:
    database: str
    consumers: int
    queries_per_click: list[int] = field(default_factory=list)
    ms_per_click: list[float] = field(default_factory=list)
    tracemalloc_peak_kib: float = math.nan


def run_process(
    database: str, database_url: str | None, consumers: int = 1000,
    first_lane: int | None = None,
) -> ProcessScale:
    spec = SecretSpec(SECRET, consumers, first_lane=first_lane)
    result = ProcessScale(database, consumers, spec.in_first_lane())
    with bot_env([spec], database_url) as env:
        assert env.bot is not None
        builder = RequestBuilder(env.state, env.signing_secret)
        builder.command(ADMIN, CHANNEL, f"start {SECRET}")
        req = builder.take()
        sent = time.time()
        builder.http.post(
            env.bot.events_url, content=req.body.encode(),
            headers={"Content-Type": req.content_type, **req.headers},
        )
        parent = wait_for(lambda: parent_message(env.state), 120, "the rotation message")
        posted = next(
            c for c in env.state.calls_to("chat.postMessage")
            if isinstance(c.response, dict) and c.response.get("ts") == parent.ts
        )
        result.to_parent_s = posted.time - sent
        wait_for(
            lambda: len(step_buttons(env.state, parent.ts)) >= result.first_lane, 300,
            "first prompts",
        )
        # Prompts carry the step buttons; the thread's receipts (the new credential is ready)
        # are not prompts.
        prompts = [
            c for c in env.state.calls_to("chat.postMessage")
            if c.args.get("thread_ts") == parent.ts and "rotabot.step" in str(c.args.get("blocks"))
        ]
        result.first_lane_prompts = len(prompts)
        result.to_first_prompts_s = max(c.time for c in prompts) - sent
        wait_quiet(env.state, quiet=1.0)
        final = env.state.find_message(CHANNEL, parent.ts)
        result.parent_blocks = len(final.blocks) if final is not None else 0
        violations = env.state.violations
        result.violations = len(violations)
        result.violation_examples = [f"{v.method}: {'; '.join(v.messages)}"[:200]
                                     for v in violations[:3]]
        result.peak_rss_mib = env.bot.peak_rss_mib()
    return result


def run_clicks(
    database: str, database_url: str | None, consumers: int, clicks: int = 5
) -> ClickCost:
    """Queries per click through the real Bolt listener, in process, counted on the engine.
    The notifier's coalescing is off (every click updates the rotation message at once), so
    each click carries its full cost. Only the clicked consumers are in the first lane (their
    prompts are posted at Slack's pace); the rotation still has ``consumers``."""
    result = ClickCost(database, consumers)
    workdir = Path(tempfile.mkdtemp(prefix="rotabot-bench-clicks-"))
    (workdir / "secrets").mkdir()
    catalog = workdir / "catalog.yml"
    catalog.write_text(catalog_yaml(workdir / "secrets", [
        SecretSpec(SECRET, consumers, first_lane=clicks + 1)]))
    standin = StandinServer(make_workspace(consumers)).start()
    url = database_url or f"sqlite:///{workdir / 'rotabot.db'}"
    try:
        settings = Settings.from_env(
            {
                "ROTABOT_CATALOG": str(catalog),
                "DATABASE_URL": url,
                "SLACK_API_URL": standin.base_url,
                "SLACK_BOT_TOKEN": "xoxb-bench-clicks",
                "SLACK_SIGNING_SECRET": "bench-signing-secret",
            }
        )
        if not url.startswith("sqlite"):
            from storage.migrate import upgrade

            upgrade(url)
        c = build(settings)
        c.notifier.min_interval = 0.0
        bolt = bolt_app(c)
        c.service.start(SECRET, actor=ADMIN)
        parent = wait_for(lambda: parent_message(standin.state), 60, "the rotation message")
        wait_for(lambda: len(step_buttons(standin.state, parent.ts)) >= clicks + 1, 300,
                 "first prompts")
        prompts = step_buttons(standin.state, parent.ts)
        queries = 0

        def count(*_: Any) -> None:
            nonlocal queries
            queries += 1

        event.listen(c.engine, "before_cursor_execute", count)
        builder = RequestBuilder(standin.state, "bench-signing-secret")
        for k in range(clicks + 1):
            i = k  # the first-lane consumers: 0, 1, 2, ...
            message = prompts[(consumer_name(i), "distributed")]
            builder.click(owner_id(i), channel=CHANNEL, message_ts=message.ts,
                          action_id=Action.STEP.value)
            req = builder.take()
            done_before = _updates_of(standin, message.ts)
            traced = k == clicks
            if traced:
                tracemalloc.start()
            queries, start = 0, time.perf_counter()
            response = bolt.dispatch(
                BoltRequest(body=req.body, headers={"content-type": req.content_type,
                            **{h.lower(): v for h, v in req.headers.items()}})
            )
            assert response.status == 200, response.body
            def applied(ts: str = message.ts, n: int = done_before) -> bool:
                return _updates_of(standin, ts) > n

            wait_for(applied, 60, "the click's prompt update", poll=0.002)
            elapsed = (time.perf_counter() - start) * 1000
            # The click's queued Slack work (the next prompt with its claim, refreshes) runs
            # off the listener: count its queries too, whenever the budget gives its turn.
            c.notifier.flush()
            if traced:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                result.tracemalloc_peak_kib = peak / 1024
            elif k > 0:  # the first click warms caches (auth.test, owner lookups)
                result.queries_per_click.append(queries)
                result.ms_per_click.append(elapsed)
        event.remove(c.engine, "before_cursor_execute", count)
        c.engine.dispose()
    finally:
        standin.stop()
    return result


def _updates_of(standin: StandinServer, ts: str) -> int:
    return sum(1 for c in standin.state.calls_to("chat.update") if c.args.get("ts") == ts)


def click_summary(r: ClickCost) -> dict[str, Any]:
    return {
        "database": r.database,
        "consumers": r.consumers,
        "queries_per_click": r.queries_per_click,
        "median_queries": statistics.median(r.queries_per_click) if r.queries_per_click else None,
        "median_ms": statistics.median(r.ms_per_click) if r.ms_per_click else None,
        "tracemalloc_peak_kib": r.tracemalloc_peak_kib,
    }
