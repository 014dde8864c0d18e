"""Token buckets: how many calls a rate limit still allows now, and how long until the next.

Slack states its limits per minute with bursts (a tier's minute allowance may be spent at
once, then refills steadily). The stand-in enforces them with this arithmetic and the bot's
call budget (adapters/slack_budget.py, storage/slack_budget.py) keeps under them with it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rate:
    """``per_minute`` calls a minute on average, at most ``burst`` at once."""

    per_minute: float
    burst: float

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


@dataclass(frozen=True)
class Bucket:
    """Tokens left at ``stamp`` (seconds on the clock the bucket is driven by)."""

    tokens: float
    stamp: float


def take(bucket: Bucket | None, rate: Rate, now: float) -> tuple[Bucket, float]:
    """Take one token at ``now``: (the bucket after, 0.0) when allowed, else (the bucket
    refilled to now, seconds until a token is there). A new bucket starts full."""
    if bucket is None:
        tokens = rate.burst
    else:
        # A clock that stepped back (another replica's) refills nothing rather than draining.
        elapsed = max(0.0, now - bucket.stamp)
        tokens = min(rate.burst, bucket.tokens + elapsed * rate.per_second)
    stamp = max(now, bucket.stamp) if bucket is not None else now
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, stamp), 0.0
    return Bucket(tokens, stamp), (1.0 - tokens) / rate.per_second


def drain(bucket: Bucket | None, rate: Rate, now: float, seconds: float) -> Bucket:
    """Empty the bucket so that its next token comes in ``seconds`` (Slack answered 429
    with that Retry-After: our count and Slack's disagree, Slack's wins)."""
    stamp = max(now, bucket.stamp) if bucket is not None else now
    return Bucket(min(0.0, 1.0 - max(seconds, 0.0) * rate.per_second), stamp)
