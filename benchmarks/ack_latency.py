"""Scenario 1: ack latency of `/rotate status` and of a step click on a rotation with many
consumers, against `rotabot serve` and, in the same run, a bare Bolt app that only acks.

Only ``first_lane`` of the consumers are in the first lane (default 12): each of their prompts
is a chat.postMessage into one channel, about one a second at Slack's rate, so a first lane
of a third of 200 consumers made every run wait a minute for its prompts and a minute more
for the posts its first clicks cause. `/rotate status` still renders every consumer. After
each row the bot's Slack traffic is waited out (``drain_s``) and set beside the least time
Slack's tiers allow for it (``floor_s``, harness.slack_floor_s)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.harness import (
    ADMIN,
    CHANNEL,
    NICE,
    BotEnv,
    Prepared,
    RequestBuilder,
    SecretSpec,
    bot_env,
    command_now,
    owner_id,
    parent_message,
    run_load,
    slack_floor_s,
    start_bare,
    step_buttons,
    summary,
    wait_for,
    wait_quiet,
)
from handlers.ids import Action

SECRET = "bench-ack"
WARMUP = 20


@dataclass
class AckRun:
    payload: str  # "status" or "click"
    concurrency: int
    bare: dict[str, float]
    bot: dict[str, float]
    bot_statuses: dict[str, int]
    bare_statuses: dict[str, int]
    bot_wall_s: float
    drain_s: float  # from the first request until the bot's last Slack call (listener work)
    floor_s: float = 0.0  # the least time Slack's tiers allow for those calls

    @property
    def ratio_p99(self) -> float:
        return self.bot["p99"] / self.bare["p99"] if self.bare["p99"] else math.nan


@dataclass
class AckResult:
    database: str
    consumers: int
    requests: int
    first_lane: int = 0
    front: bool = False  # both sides behind `rotabot front`, their servers under nice
    runs: list[AckRun] = field(default_factory=list)
    issue3: dict[str, float] | None = None
    violations: int = 0


def _start_rotation(env: BotEnv, dev: int) -> str:
    command_now(env, ADMIN, f"start {SECRET}")
    parent = wait_for(lambda: parent_message(env.state), 60, "the rotation message")
    wait_for(lambda: len(step_buttons(env.state, parent.ts)) >= dev, 120, "the dev prompts")
    wait_quiet(env.state, quiet=0.5)
    return str(parent.ts)


def _status_requests(env: BotEnv, n: int) -> list[Prepared]:
    builder = RequestBuilder(env.state, env.signing_secret)
    for _ in range(n):
        builder.command(ADMIN, CHANNEL, "status R-1")
    return list(builder.captured)


def _click_requests(env: BotEnv, parent_ts: str, n: int) -> list[Prepared]:
    """``n`` presses (the first ``WARMUP`` unmeasured) cycling over the prompts: the warmup
    over the first half of them, the measured ones over the other half, so that first
    presses (state changes, each posting into the thread at Slack's pace) are measured too."""
    builder = RequestBuilder(env.state, env.signing_secret)
    prompts = sorted(step_buttons(env.state, parent_ts).items())
    half = len(prompts) // 2
    for i in range(n):
        if i < WARMUP and half:
            (consumer, _step), message = prompts[i % half]
        else:
            (consumer, _step), message = prompts[half + (i - WARMUP) % (len(prompts) - half)]
        owner = owner_id(int(consumer.rsplit("-", 1)[1]))
        builder.click(owner, channel=CHANNEL, message_ts=message.ts, action_id=Action.STEP.value)
    return list(builder.captured)


def run(
    database: str,
    database_url: str | None,
    *,
    consumers: int = 200,
    requests: int = 1000,
    concurrencies: tuple[int, ...] = (1, 16),
    issue3_commands: int = 0,
    first_lane: int = 12,
    front: bool = False,
) -> AckResult:
    spec = SecretSpec(SECRET, consumers, first_lane=first_lane)
    result = AckResult(database, consumers, requests, spec.in_first_lane(), front=front)
    with bot_env([spec], database_url, owners=consumers, front=front) as env:
        assert env.bot is not None
        parent_ts = _start_rotation(env, result.first_lane)
        bare = start_bare(env.workdir, env.signing_secret, env.standin.base_url, front=front)
        try:
            # Every click request is built before any is sent: the bot replaces a prompt's
            # button once its step is done, and the builder clicks what is rendered.
            clicks = {
                c: _click_requests(env, parent_ts, requests + WARMUP) for c in concurrencies
            }
            for payload in ("status", "click"):
                for conc in concurrencies:
                    reqs = (
                        _status_requests(env, requests + WARMUP)
                        if payload == "status"
                        else clicks[conc]
                    )
                    reqs = [r.resign(env.signing_secret) for r in reqs]
                    bare_res = run_load(bare.events_url, reqs, conc, env.workdir, WARMUP)
                    # Each side measured on a machine its other side left quiet: with fronts,
                    # what one front acked is handed over before the other is measured.
                    bare.settle()
                    started, since = time.monotonic(), time.time()
                    bot_res = run_load(env.bot.events_url, reqs, conc, env.workdir, WARMUP)
                    env.bot.settle()
                    last_call = wait_quiet(env.state, quiet=1.0)
                    result.runs.append(
                        AckRun(
                            payload=payload,
                            concurrency=conc,
                            bare=summary(bare_res.latencies_ms),
                            bot=summary(bot_res.latencies_ms),
                            bot_statuses=bot_res.statuses,
                            bare_statuses=bare_res.statuses,
                            bot_wall_s=bot_res.wall_s,
                            drain_s=max(last_call - started, bot_res.wall_s),
                            floor_s=slack_floor_s(env.state.calls, since),
                        )
                    )
            if issue3_commands:
                reqs = _status_requests(env, issue3_commands)
                res = run_load(env.bot.events_url, reqs, 1, env.workdir, 0)
                result.issue3 = summary(res.latencies_ms)
                wait_quiet(env.state, quiet=1.0)
        finally:
            bare.stop()
        result.violations = len(env.state.violations)
    return result


def as_dict(r: AckResult) -> dict[str, Any]:
    return {
        "database": r.database,
        "consumers": r.consumers,
        "requests": r.requests,
        "first_lane": r.first_lane,
        "front": r.front,
        "nice": " ".join(NICE) if r.front else None,
        "violations": r.violations,
        "issue3": r.issue3,
        "runs": [
            {
                "payload": x.payload,
                "concurrency": x.concurrency,
                "bare": x.bare,
                "bot": x.bot,
                "ratio_p99": x.ratio_p99,
                "bot_statuses": x.bot_statuses,
                "bare_statuses": x.bare_statuses,
                "bot_wall_s": x.bot_wall_s,
                "drain_s": x.drain_s,
                "floor_s": x.floor_s,
            }
            for x in r.runs
        ],
    }
