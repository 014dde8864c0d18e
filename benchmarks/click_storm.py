"""Scenario 2: click storm. Every consumer's three steps (Distributed, Validated, Sign off),
clicked by many concurrent clients, with a share of double clicks; then the audit table must
hold each step exactly once, and the rotation message must have been updated at most about
once per second.

Slack bounds how fast this can go, not the bot: each consumer's three steps cost about three
chat.postMessage calls into the rotation channel's thread (owner prompts and receipts; about
one a second per channel) and four chat.update calls (its prompt per step and the
rotation message, Tier 3: about 50 a minute per workspace). So the storm is sized to a few
consumers (``FULL`` in benchmarks/__main__.py), and each step's time until the bot's last
Slack call is set beside the least time Slack's tiers allow for those calls (``floor_s``)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text

from benchmarks.harness import (
    ADMIN,
    CHANNEL,
    BotEnv,
    Prepared,
    RequestBuilder,
    SecretSpec,
    bot_env,
    command_now,
    consumer_name,
    owner_id,
    parent_message,
    run_load,
    slack_floor_s,
    step_buttons,
    wait_for,
    wait_quiet,
)
from handlers.ids import Action

SECRET = "bench-storm"
STEPS = ("distributed", "validated", "signed-off")


@dataclass
class StormResult:
    database: str
    consumers: int
    clients: int
    clicks_sent: int = 0
    duplicates_sent: int = 0
    non_2xx: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # non-2xx answers by status
    wall_s: float = 0.0  # first click to the last step applied and shown (switch excluded)
    floor_s: float = 0.0  # the least time Slack's tiers allow for the same calls
    accept_s: float = 0.0  # the three rounds' clicks answered (load generator wall time)
    lost: int = 0
    doubled: int = 0
    parent_updates: int = 0
    update_span_s: float = 0.0
    updates_per_s: float = 0.0
    max_updates_in_1s: int = 0
    violations: int = 0
    slack_429: int = 0  # Web API calls the stand-in answered 429 (rate limited)
    stale_prompts: int = 0  # prompts still offering a step button once every step is done
    switch_refused: bool = False
    phases: dict[str, float] = field(default_factory=dict)


def _clicks(env: BotEnv, parent_ts: str, step: str, consumers: int, dup: float) -> list[Prepared]:
    prompts = step_buttons(env.state, parent_ts)
    builder = RequestBuilder(env.state, env.signing_secret)
    for i in range(consumers):
        message = prompts.get((consumer_name(i), step))
        if message is None:
            continue  # no prompt: an earlier step was lost, which the audit check reports
        builder.click(
            owner_id(i), channel=CHANNEL, message_ts=message.ts, action_id=Action.STEP.value
        )
    reqs = list(builder.captured)
    rng = random.Random(8)
    reqs += rng.sample(reqs, int(len(reqs) * dup))  # double clicks and replays
    rng.shuffle(reqs)
    return reqs


def _step_counts(database_url: str) -> dict[tuple[str, str], int]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT consumer, after, COUNT(*) FROM audit_events "
                    "WHERE action = 'step' GROUP BY consumer, after"
                )
            ).all()
    finally:
        engine.dispose()
    return {(str(c), str(a)): int(n) for c, a, n in rows}


def run(
    database: str,
    database_url: str | None,
    *,
    consumers: int = 200,
    clients: int = 32,
    duplicates: float = 0.1,
) -> StormResult:
    result = StormResult(database, consumers, clients)
    # One lane: every consumer's turn is open at once, the hardest case for contention.
    with bot_env([SecretSpec(SECRET, consumers, lanes=("dev",))], database_url) as env:
        assert env.bot is not None
        command_now(env, ADMIN, f"start {SECRET}")
        parent = wait_for(lambda: parent_message(env.state), 60, "the rotation message")
        wait_for(
            lambda: len(step_buttons(env.state, parent.ts)) >= consumers, 120, "first prompts"
        )
        wait_quiet(env.state, quiet=0.5)
        updates_before = {
            c.seq for c in env.state.calls_to("chat.update") if c.args.get("ts") == parent.ts
        }
        storm_start = time.monotonic()
        for step in STEPS:
            if step == "signed-off":
                # Owners are asked to sign off after the switch, which an admin does.
                paused = time.monotonic()
                command_now(env, ADMIN, "switch R-1")
                try:
                    wait_for(
                        lambda: sum(1 for k in step_buttons(env.state, parent.ts)
                                    if k[1] == "signed-off") >= consumers,
                        60, "sign-off prompts",
                    )
                except TimeoutError:
                    # Not every consumer validated (a lost step): the switch was refused.
                    # Click what there is; the audit check below counts what is missing.
                    result.switch_refused = True
                storm_start += time.monotonic() - paused
            reqs = [r.resign(env.signing_secret) for r in _clicks(
                env, parent.ts, step, consumers, duplicates
            )]
            began, since = time.monotonic(), time.time()
            res = run_load(env.bot.events_url, reqs, clients, env.workdir)
            result.clicks_sent += len(reqs)
            result.duplicates_sent += len(reqs) - consumers
            result.non_2xx += len(reqs) - res.ok
            for status, n in res.statuses.items():
                if not status.startswith("2"):
                    result.refused[status] = result.refused.get(status, 0) + n
            result.accept_s += res.wall_s
            wait_quiet(env.state, quiet=1.5)
            result.phases[step] = time.monotonic() - began - 1.5
            result.floor_s += slack_floor_s(env.state.calls, since)
        result.wall_s = time.monotonic() - storm_start - 1.5
        counts = _step_counts(env.database_url)
        for i in range(consumers):
            for step in STEPS:
                n = counts.get((consumer_name(i), step), 0)
                result.lost += n == 0
                result.doubled += max(n - 1, 0)
        updates = [
            c for c in env.state.calls_to("chat.update")
            if c.args.get("ts") == parent.ts and c.seq not in updates_before
        ]
        times = sorted(c.time for c in updates)
        result.parent_updates = len(times)
        if len(times) > 1:
            result.update_span_s = times[-1] - times[0]
            result.updates_per_s = (len(times) - 1) / result.update_span_s
        j = 0
        for i, t in enumerate(times):
            while times[j] < t - 1.0:
                j += 1
            result.max_updates_in_1s = max(result.max_updates_in_1s, i - j + 1)
        result.stale_prompts = len(step_buttons(env.state, parent.ts))
        result.violations = len(env.state.violations)
        result.slack_429 = sum(env.state.rate_limit_report()["rate_limited"].values())
    return result


def as_dict(r: StormResult) -> dict[str, Any]:
    return dict(r.__dict__)
