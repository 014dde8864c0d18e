"""Slack's rate limits as the stand-in enforces them: each method's tier from the vendored
table (data/slack_rate_limits.json), one token bucket per method per workspace (per channel
for chat.postMessage), driven by the stand-in's clock so tests need not sleep."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from bot.domain.token_bucket import Bucket, Rate, take


@dataclass(frozen=True)
class Tier:
    """A named tier: its rate, and whether it counts per workspace or per channel."""

    name: str
    rate: Rate
    per_channel: bool = False


@dataclass(frozen=True)
class RateLimitTable:
    """Each Web API method's tier; methods not listed get ``default``."""

    tiers: Mapping[str, Tier]
    by_method: Mapping[str, str]
    default: str

    def tier_of(self, method: str) -> Tier:
        return self.tiers[self.by_method.get(method, self.default)]


@cache
def load_rate_limits() -> RateLimitTable:
    """The vendored tier table (see data/SOURCES.md for where it comes from)."""
    path = resources.files("bot.sandbox.slack_standin").joinpath("data", "slack_rate_limits.json")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    tiers = {
        name: Tier(name, Rate(float(t["per_minute"]), float(t["burst"])), t["per"] == "channel")
        for name, t in data["tiers"].items()
    }
    by_method = {m: tier for tier, methods in data["methods"].items() for m in methods}
    return RateLimitTable(tiers, by_method, data["default_tier"])


class RateLimiter:
    """Answers whether a call is allowed now (StandinState calls it under its lock and
    counts the 429s it answers)."""

    def __init__(
        self, table: RateLimitTable, clock: Callable[[], float], *, enabled: bool = True
    ) -> None:
        self.table = table
        self.clock = clock
        self.enabled = enabled
        self._buckets: dict[tuple[str, str], Bucket] = {}

    def retry_after(self, method: str, args: Mapping[str, Any]) -> int | None:
        """None: allowed (a token was taken). Else the whole seconds Slack's Retry-After
        would say (at least 1)."""
        if not self.enabled:
            return None
        tier = self.table.tier_of(method)
        key = (method, str(args.get("channel", "")) if tier.per_channel else "")
        bucket, wait = take(self._buckets.get(key), tier.rate, self.clock())
        self._buckets[key] = bucket
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))

    def reset(self) -> None:
        """Full buckets again (a test starting afresh on a shared stand-in)."""
        self._buckets.clear()
