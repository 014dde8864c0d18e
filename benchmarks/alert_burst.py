"""Scenario 3: an alert burst. Many signed failure reports for a few dozen consumers of a
secret under rotation, posted to `POST /alerts` by concurrent senders: accepted rate, intake
latency, Slack messages posted and updated, and every accepted report counted in storage.

Intake (``rate_per_s``, latency) is the bot's own figure. The Slack side is bounded by Slack:
each consumer's alert is one message in the incident channel and one in the rotation thread
(chat.postMessage, about one a second per channel), and every message's counter refreshes are
chat.update calls (Tier 3, about 50 a minute per workspace, merged per message by the bot's
budget). So the burst goes to few consumers (``FULL`` in benchmarks/__main__.py), and with
``drain=True`` (one run per database) the bot's Slack traffic is waited out: the time from the
first report to the bot's last Slack call (``drain_s``) is set beside the least time Slack's
tiers allow for those calls (``floor_s``), and every message must then show its consumer's
stored count (``stale_messages`` counts those that do not). Without it the run ends after the
intake and the ceiling; its Slack counts (posts, updates, 429s) are those made by then."""

from __future__ import annotations

import json
import re
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
    slack_floor_s,
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
SEEN = re.compile(r"seen (\d+)x")


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
    # Only when the run waited for the bot's Slack traffic to end (``drain=True``):
    drain_s: float | None = None  # first report to the bot's last Slack call
    floor_s: float | None = None  # the least time Slack's tiers allow for the same calls
    messages: int | None = None  # alert messages posted (incident channel, rotation thread)
    stale_messages: int | None = None  # of those, showing another count than the stored one
    # The same clients and server answering requests refused at the signature (401: no
    # database, no Slack): what HTTP and the load generator alone manage on this machine.
    ceiling_per_s: float = 0.0
    # CPU time `rotabot serve` used during the intake, per accepted report (user + system).
    cpu_ms_per_report: float | None = None


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


def _shown_count(env: BotEnv, channel: str, ts: str) -> int | None:
    """The report count an alert message shows now ("seen 12x", handlers/blocks/alerts.py)."""
    message = env.state.find_message(channel, ts)
    found = SEEN.search(json.dumps(message.blocks)) if message is not None else None
    return int(found.group(1)) if found else None


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
    drain: bool = True,
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
        started, since = time.monotonic(), time.time()
        cpu_before = env.bot.cpu_seconds()
        res = run_load(env.bot.url + "/alerts", reqs, clients, env.workdir)
        cpu_after = env.bot.cpu_seconds()
        if cpu_before is not None and cpu_after is not None and res.ok:
            result.cpu_ms_per_report = (cpu_after - cpu_before) * 1000 / res.ok
        if drain:
            last_call = wait_quiet(env.state, quiet=1.5)
            result.drain_s = max(last_call - started, res.wall_s)
            result.floor_s = slack_floor_s(env.state.calls, since)
        result.wall_s = res.wall_s
        result.latency = summary(res.latencies_ms)
        result.rejected = {s: n for s, n in res.statuses.items() if not s.startswith("2")}
        result.accepted = res.ok
        result.rate_per_s = res.ok / res.wall_s if res.wall_s else 0.0
        calls = env.state.calls[calls_before:]
        posts_by_consumer: dict[str, int] = defaultdict(int)
        posted_messages: list[tuple[str, str, str]] = []  # (consumer, channel, ts)
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
                    if isinstance(call.response, dict) and call.response.get("ts"):
                        posted_messages.append((who, str(channel), str(call.response["ts"])))
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
                stored = {str(c): int(n) for c, n in conn.execute(
                    text("SELECT consumer, count FROM alerts WHERE secret = :s"),
                    {"s": SECRET},
                ).all()}
        finally:
            engine.dispose()
        result.stored_alert_rows, result.stored_count_sum = len(stored), sum(stored.values())
        if drain:
            result.messages = len(posted_messages)
            result.stale_messages = sum(
                1 for who, channel, ts in posted_messages
                if _shown_count(env, channel, ts) != stored.get(who))
        result.violations = len(env.state.violations)
        result.slack_429 = sum(env.state.rate_limit_report()["rate_limited"].values())
        forged = [Prepared(r.body, r.content_type,
                           {**r.headers, "X-Rotabot-Signature": "v1=" + "0" * 64})
                  for r in reqs[:CEILING_REQUESTS]]
        ceiling = run_load(env.bot.url + "/alerts", forged, clients, env.workdir)
        result.ceiling_per_s = len(forged) / ceiling.wall_s if ceiling.wall_s else 0.0
    return result


def as_dict(r: BurstResult) -> dict[str, Any]:
    return dict(r.__dict__)
