"""Scenario 1: ack latency of `/rotate status` and of a step click on a rotation with many
consumers, against `rotabot serve` and, in the same run, a bare Bolt app that only acks.

Only ``first_lane`` of the consumers are in the first lane (default 12): each of their prompts
is a chat.postMessage into one channel, about one a second at Slack's rate, so a first lane
of a third of 200 consumers made every run wait a minute for its prompts and a minute more
for the posts its first clicks cause. `/rotate status` still renders every consumer. After
each row the bot's Slack traffic is waited out (``drain_s``) and set beside the least time
Slack's tiers allow for it (``floor_s``, harness.slack_floor_s).

Each row is sent in ``ROUNDS`` rounds that alternate the two sides (bare then bot, bot then
bare, ...), each round after the other side has gone quiet: whatever drifts on a shared
machine during a row (other tenants, frequency, caches) reaches both sides alike, and the
p99 compared is over all the row's measured requests."""

from __future__ import annotations

import math
import time
from collections import Counter
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
    Server,
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
from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action

SECRET = "bench-ack"
# Unmeasured requests at the start of each round: the load generator's start (16 new
# connections and threads) slowed the first few dozen requests on both sides by up to 5x,
# enough to set a row's p99 on its own.
WARMUP = 100
ROUNDS = 4


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
    rounds: int = 1  # each row's requests in this many rounds, alternating the sides
    warmup: int = 0  # unmeasured requests at the start of each round
    runs: list[AckRun] = field(default_factory=list)
    issue3: dict[str, float] | None = None
    violations: int = 0


def _start_rotation(env: BotEnv, dev: int) -> str:
    command_now(env, ADMIN, f"start {SECRET}")
    parent = wait_for(lambda: parent_message(env.state), 60, "the rotation message")
    wait_for(lambda: len(step_buttons(env.state, parent.ts)) >= dev, 120, "the dev prompts")
    wait_quiet(env.state, quiet=0.5)
    return str(parent.ts)


Round = tuple[list[Prepared], list[Prepared]]  # (warmup, measured)


def _rounds(warmup: list[Prepared], measured: list[Prepared], rounds: int) -> list[Round]:
    """The measured requests cut into ``rounds`` slices in order, each after its own equal
    share of ``warmup``."""
    size, warm = math.ceil(len(measured) / rounds), len(warmup) // rounds
    return [(warmup[i * warm:(i + 1) * warm], measured[i * size:(i + 1) * size])
            for i in range(rounds)]


def _status_requests(env: BotEnv, n: int, rounds: int = 1, warmup: int = 0) -> list[Round]:
    builder = RequestBuilder(env.state, env.signing_secret)
    for _ in range(n + warmup * rounds):
        builder.command(ADMIN, CHANNEL, "status R-1")
    reqs = list(builder.captured)
    return _rounds(reqs[n:], reqs[:n], rounds)


def _click_requests(
    env: BotEnv, parent_ts: str, n: int, rounds: int, warmup: int
) -> list[Round]:
    """``n`` measured presses cycling over the second half of the prompts, and each round's
    unmeasured warmup over the first half, so that first presses (state changes, each
    posting into the thread at Slack's pace) are measured too."""
    builder = RequestBuilder(env.state, env.signing_secret)
    prompts = sorted(step_buttons(env.state, parent_ts).items())
    half = len(prompts) // 2
    warm, rest = prompts[:half] or prompts, prompts[half:]

    def press(prompt: tuple[tuple[str, str], Message]) -> Prepared:
        (consumer, _step), message = prompt
        owner = owner_id(int(consumer.rsplit("-", 1)[1]))
        builder.click(owner, channel=CHANNEL, message_ts=message.ts, action_id=Action.STEP.value)
        return builder.captured[-1]

    warmups = [press(warm[i % len(warm)]) for i in range(warmup * rounds)]
    measured = [press(rest[i % len(rest)]) for i in range(n)]
    return _rounds(warmups, measured, rounds)


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
    rounds: int = ROUNDS,
    warmup: int = WARMUP,
) -> AckResult:
    spec = SecretSpec(SECRET, consumers, first_lane=first_lane)
    result = AckResult(database, consumers, requests, spec.in_first_lane(), front=front,
                       rounds=rounds, warmup=warmup)
    with bot_env([spec], database_url, owners=consumers, front=front) as env:
        assert env.bot is not None
        parent_ts = _start_rotation(env, result.first_lane)
        bare = start_bare(env.workdir, env.signing_secret, env.standin.base_url, front=front)
        try:
            # Every click request is built before any is sent: the bot replaces a prompt's
            # button once its step is done, and the builder clicks what is rendered.
            clicks = {c: _click_requests(env, parent_ts, requests, rounds, warmup)
                      for c in concurrencies}
            for payload in ("status", "click"):
                for conc in concurrencies:
                    row = (_status_requests(env, requests, rounds, warmup)
                           if payload == "status" else clicks[conc])
                    result.runs.append(_measure_row(env, bare, payload, conc, row))
            if issue3_commands:
                ((_, reqs),) = _status_requests(env, issue3_commands)
                res = run_load(env.bot.events_url, reqs, 1, env.workdir, 0)
                result.issue3 = summary(res.latencies_ms)
                wait_quiet(env.state, quiet=1.0)
        finally:
            bare.stop()
        result.violations = len(env.state.violations)
    return result


def _measure_row(env: BotEnv, bare: Server, payload: str, conc: int, row: list[Round]) -> AckRun:
    """One row, its rounds alternating which side goes first (module doc). Each side is
    measured on a machine the other left quiet: with fronts, what one front acked is handed
    over (and, for the bot, its Slack traffic waited out) before the other is measured."""
    assert env.bot is not None
    lat: dict[str, list[float]] = {"bare": [], "bot": []}
    statuses: dict[str, Counter[str]] = {"bare": Counter(), "bot": Counter()}
    bot_wall = drain = floor = 0.0
    for i, (warm, measured) in enumerate(row):
        reqs = [r.resign(env.signing_secret) for r in warm + measured]
        for side in ("bare", "bot") if i % 2 == 0 else ("bot", "bare"):
            server = bare if side == "bare" else env.bot
            started, since = time.monotonic(), time.time()
            res = run_load(server.events_url, reqs, conc, env.workdir, len(warm))
            server.settle()
            lat[side] += res.latencies_ms
            statuses[side].update(res.statuses)
            if side == "bot":
                last_call = wait_quiet(env.state, quiet=1.0)
                bot_wall += res.wall_s
                drain += max(last_call - started, res.wall_s)
                floor += slack_floor_s(env.state.calls, since)
    return AckRun(payload=payload, concurrency=conc, bare=summary(lat["bare"]),
                  bot=summary(lat["bot"]), bot_statuses=dict(statuses["bot"]),
                  bare_statuses=dict(statuses["bare"]), bot_wall_s=bot_wall, drain_s=drain,
                  floor_s=floor)


def as_dict(r: AckResult) -> dict[str, Any]:
    return {
        "database": r.database,
        "consumers": r.consumers,
        "requests": r.requests,
        "first_lane": r.first_lane,
        "front": r.front,
        "rounds": r.rounds,
        "warmup": r.warmup,
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
