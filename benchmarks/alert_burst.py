"""Scenario 3: an alert burst. Many signed failure reports for a few dozen consumers of a
secret under rotation, posted to `POST /alerts` by concurrent senders: accepted rate, intake
latency, Slack messages posted and updated, and every accepted report counted in storage."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from benchmarks.harness import (
    ADMIN,
    CHANNEL,
    INCIDENTS,
    BotEnv,
    Prepared,
    SecretSpec,
    bot_env,
    command_now,
    consumer_name,
    parent_message,
    run_load,
    summary,
    wait_for,
    wait_quiet,
)
from bot.domain.alert_intake import sign

SECRET = "bench-alerts"
# Every report here comes from one address signed with one key: one flood-limit bucket. The
# scenario measures intake, so it raises the per-sender limit (ROTABOT_ALERT_FLOOD_LIMIT) far
# above the burst; the default limit (20/s after 1,000) would refuse most of it with 429.
FLOOD_LIMIT = "100000/100000"
CEILING_REQUESTS = 2000


@dataclass
class BurstResult:
    database: str
    alerts: int
    consumers: int
    clients: int
    pending: str | None = None  # why the scenario could not run
    accepted: int = 0
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    rate_per_s: float = 0.0
    latency: dict[str, float] = field(default_factory=dict)
    posted: int = 0
    posted_per_consumer_max: int = 0
    updates: int = 0
    max_updates_per_message_in_1s: int = 0
    stored_alert_rows: int = 0
    stored_count_sum: int = 0
    violations: int = 0
    slack_429: int = 0  # Web API calls the stand-in answered 429 (rate limited)
    # The same clients and server answering requests refused at the signature (401: no
    # database, no Slack): what HTTP and the load generator alone manage on this machine.
    ceiling_per_s: float = 0.0


def _alert_requests(env: BotEnv, alerts: int, consumers: int) -> list[Prepared]:
    out: list[Prepared] = []
    for i in range(alerts):
        name = consumer_name(i % consumers)
        body = json.dumps(
            {
                "consumer": name,
                "secret": SECRET,
                "status_code": 401,
                "error": "invalid_api_key",
                "message": "provider rejected the key",
                "source": f"connector/{name}",
            }
        )
        ts = str(int(time.time()))
        out.append(
            Prepared(
                body,
                "application/json",
                {
                    "X-Rotabot-Timestamp": ts,
                    "X-Rotabot-Signature": sign(env.alert_secret, ts, body.encode()),
                    "X-Rotabot-Delivery": uuid.uuid4().hex,
                },
            )
        )
    return out


def _max_in_window(times: list[float], window: float = 1.0) -> int:
    times = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


def run(
    database: str,
    database_url: str | None,
    *,
    alerts: int = 10_000,
    consumers: int = 50,
    clients: int = 32,
) -> BurstResult:
    result = BurstResult(database, alerts, consumers, clients)
    with bot_env([SecretSpec(SECRET, consumers)], database_url,
                 settings={"ROTABOT_ALERT_FLOOD_LIMIT": FLOOD_LIMIT}) as env:
        assert env.bot is not None
        probe = httpx.post(env.bot.url + "/alerts", content=b"{}", timeout=10)
        if probe.status_code in (404, 405):
            result.pending = "POST /alerts is not served by `rotabot serve` yet"
            return result
        command_now(env, ADMIN, f"start {SECRET}")
        parent = wait_for(lambda: parent_message(env.state), 60, "the rotation message")
        wait_quiet(env.state, quiet=0.5)
        calls_before = len(env.state.calls)
        reqs = _alert_requests(env, alerts, consumers)
        res = run_load(env.bot.url + "/alerts", reqs, clients, env.workdir)
        wait_quiet(env.state, quiet=1.5)
        result.wall_s = res.wall_s
        result.latency = summary(res.latencies_ms)
        result.rejected = {s: n for s, n in res.statuses.items() if not s.startswith("2")}
        result.accepted = res.ok
        result.rate_per_s = res.ok / res.wall_s if res.wall_s else 0.0
        calls = env.state.calls[calls_before:]
        posts_by_consumer: dict[str, int] = defaultdict(int)
        updates_by_ts: dict[str, list[float]] = defaultdict(list)
        for call in calls:
            if call.method == "chat.postMessage":
                channel = call.args.get("channel")
                in_thread = call.args.get("thread_ts") == parent.ts
                if channel == INCIDENTS or (channel == CHANNEL and in_thread):
                    text_arg = str(call.args.get("text", ""))
                    who = next(
                        (consumer_name(i) for i in range(consumers)
                         if consumer_name(i) in text_arg),
                        "?",
                    )
                    posts_by_consumer[who] += 1
                    result.posted += 1
            elif call.method == "chat.update" and call.args.get("ts") != parent.ts:
                updates_by_ts[str(call.args.get("ts"))].append(call.time)
                result.updates += 1
        result.posted_per_consumer_max = max(posts_by_consumer.values(), default=0)
        result.max_updates_per_message_in_1s = max(
            (_max_in_window(t) for t in updates_by_ts.values()), default=0
        )
        engine = create_engine(env.database_url)
        try:
            with engine.connect() as conn:
                rows, total = conn.execute(
                    text("SELECT COUNT(*), COALESCE(SUM(count), 0) FROM alerts WHERE secret = :s"),
                    {"s": SECRET},
                ).one()
        finally:
            engine.dispose()
        result.stored_alert_rows, result.stored_count_sum = int(rows), int(total)
        result.violations = len(env.state.violations)
        result.slack_429 = sum(1 for c in calls if c.status == 429)
        forged = [Prepared(r.body, r.content_type,
                           {**r.headers, "X-Rotabot-Signature": "v1=" + "0" * 64})
                  for r in reqs[:CEILING_REQUESTS]]
        ceiling = run_load(env.bot.url + "/alerts", forged, clients, env.workdir)
        result.ceiling_per_s = len(forged) / ceiling.wall_s if ceiling.wall_s else 0.0
    return result


def as_dict(r: BurstResult) -> dict[str, Any]:
    return dict(r.__dict__)
