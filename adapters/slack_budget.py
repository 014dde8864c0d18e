"""The workspace-wide Slack call budget: every Web API call the bot makes waits here for its
method's token, so the process (and, through the database, every replica) stays under Slack's
rate-limit tiers instead of collecting 429s.

- One token bucket per method (per channel for chat.postMessage), at Slack's published floor
  (``METHOD_RATES``; the stand-in's vendored table says the same, a test checks it).
- Waiting calls of one bucket go by importance, then arrival: owner prompts, receipts and new
  incident messages before counter refreshes of messages already posted.
- Calls that change one message (chat.update of one channel and ts) while one is still waiting
  merge into one call with the latest content; one message is never changed by two calls at
  once, so the last content sent is the last one asked for. Posts into one channel or thread
  go out one after the other, in turn order, so a thread reads in the order it was written.
- :meth:`SlackCallBudget.submit` queues a refresh without waiting for it (a listener's thread
  must not sit in the budget while Bolt has acks to send); :meth:`SlackCallBudget.call` waits.

A 429 Slack still answers (another app on the token, a limit lower than published) is retried
by slack_sdk's RateLimitErrorRetryHandler after Retry-After (adapters/slack_client.py), and
empties the bucket for that long so no other call of this method goes first.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol, TypeVar

from bot.domain.token_bucket import Bucket, Rate, drain, take

log = logging.getLogger("rotabot.slack")

T = TypeVar("T")

# Slack's published floors per tier (docs.slack.dev/apis/web-api/rate-limits), with a burst of
# one minute's allowance; chat.postMessage about one a second per channel, short bursts. The
# budget refills 10% slower than Slack: a call's latency varies, and a call that took its token
# on time but overtook a slower earlier one would otherwise reach Slack a token early.
MARGIN = 0.9


def _floor(per_minute: float, burst: float) -> Rate:
    return Rate(per_minute=per_minute * MARGIN, burst=burst)


TIER_1 = _floor(1, 1)
TIER_2 = _floor(20, 20)
TIER_3 = _floor(50, 50)
TIER_4 = _floor(100, 100)
POST_PER_CHANNEL = _floor(60, 10)

# The methods rotabot calls; any other gets Tier 2, the most common tier.
METHOD_RATES: Mapping[str, Rate] = {
    "chat.postMessage": POST_PER_CHANNEL,
    "chat.update": TIER_3,
    "chat.postEphemeral": TIER_4,
    "conversations.open": TIER_3,
    "conversations.info": TIER_3,
    "usergroups.users.list": TIER_2,
    "users.info": TIER_4,
    "views.open": TIER_4,
    "views.push": TIER_4,
    "views.update": TIER_4,
    "views.publish": TIER_4,
    "auth.test": TIER_4,  # Slack allows hundreds a minute; Tier 4 is plenty
}
DEFAULT_RATE = TIER_2
PER_CHANNEL = frozenset({"chat.postMessage"})


class Importance(IntEnum):
    """Which waiting call of a bucket goes first (lower first)."""

    INTERACTIVE = 0  # a person is looking: modals, ephemeral replies, lookups for a click
    POST = 1  # owner prompts, receipts, new incident messages
    EDIT = 2  # replacing a clicked prompt, retiring prompts, a review's update
    REFRESH = 3  # counters of a message already posted


_DEFAULT_IMPORTANCE: Mapping[str, Importance] = {
    "chat.postMessage": Importance.POST,
    "chat.update": Importance.EDIT,
}

# Set by a caller that knows better than the method (see :func:`importance`).
_importance: ContextVar[Importance | None] = ContextVar("slack_call_importance", default=None)


# True while a call that already has its turn runs: the Web API calls it makes go straight out.
_in_turn: ContextVar[bool] = ContextVar("slack_call_in_turn", default=False)


def in_turn() -> bool:
    """Whether the current code runs a call that has its turn (see SlackCallBudget)."""
    return _in_turn.get()


@contextlib.contextmanager
def importance(level: Importance) -> Iterator[None]:
    """Calls made inside rank as ``level`` in the budget."""
    token = _importance.set(level)
    try:
        yield
    finally:
        _importance.reset(token)


class TokenBuckets(Protocol):
    """Where the buckets live: this process (:class:`MemoryTokenBuckets`) or the database
    every replica shares (storage/slack_budget.py)."""

    def take(self, bucket: str, rate: Rate, now: float) -> float:
        """0.0: a token was taken; else seconds until one is there."""
        ...

    def drain(self, bucket: str, rate: Rate, now: float, seconds: float) -> None: ...


class MemoryTokenBuckets:
    """Token buckets of one process (one replica, tests)."""

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()

    def take(self, bucket: str, rate: Rate, now: float) -> float:
        with self._lock:
            self._buckets[bucket], wait = take(self._buckets.get(bucket), rate, now)
            return wait

    def drain(self, bucket: str, rate: Rate, now: float, seconds: float) -> None:
        with self._lock:
            self._buckets[bucket] = drain(self._buckets.get(bucket), rate, now, seconds)


def bucket_of(method: str, args: Mapping[str, Any]) -> tuple[str, Rate]:
    """The bucket a call counts against, and its rate."""
    rate = METHOD_RATES.get(method, DEFAULT_RATE)
    if method in PER_CHANNEL:
        return f"{method}:{args.get('channel', '')}", rate
    return method, rate


def message_key(method: str, args: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """The message a call replaces (chat.update of one channel and ts), else None."""
    if method == "chat.update" and args.get("channel") and args.get("ts"):
        return "update", str(args["channel"]), str(args["ts"])
    return None


def serial_key(method: str, args: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """Calls that must reach Slack one after the other, in turn order: changes of one
    message (the last one sent is what stays) and posts into one channel or thread (they
    read in order)."""
    if method == "chat.postMessage" and args.get("channel"):
        return "post", str(args["channel"]), str(args.get("thread_ts") or "")
    return message_key(method, args)


@dataclass
class _Waiting:
    bucket: str
    rate: Rate
    rank: tuple[int, int]  # (importance, arrival)
    job: Callable[[], Any]
    key: tuple[str, str, str] | None  # merge key: the message it replaces
    serial: tuple[str, str, str] | None
    started: bool = False
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    callers: int = 1


@dataclass
class BudgetStats:
    """What the budget did, for tests and /metrics."""

    sent: int = 0
    merged: int = 0  # calls that rode on another call of the same message
    waited: int = 0  # calls that found their bucket empty and waited for a token


class SlackCallBudget:
    """Hands out Slack call turns: one per token, by importance, one message merged per call.

    ``clock`` is wall-clock seconds, because replicas share the buckets' stamps; a test hands
    in its own and calls :meth:`poke` after moving it.
    """

    def __init__(
        self,
        buckets: TokenBuckets | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._buckets = buckets if buckets is not None else MemoryTokenBuckets()
        self._clock = clock
        self._cond = threading.Condition()
        self._queues: dict[str, list[_Waiting]] = {}
        self._merging: dict[tuple[str, str, str], _Waiting] = {}
        self._sending: set[tuple[str, str, str]] = set()
        self._arrival = itertools.count()
        self._unfinished = 0  # queued or running submit() jobs
        self.stats = BudgetStats()

    # ------------------------------------------------------------------ the two ways in

    def call(self, method: str, args: Mapping[str, Any], send: Callable[[], T]) -> T:
        """Wait for the turn of ``method`` with ``args`` (its bucket, its message), then
        ``send()`` and return its answer. Calls merged into one chat.update run the latest
        caller's ``send``, and every caller gets its answer."""
        entry = self._enqueue(method, args, send)
        return self._drive(entry)  # type: ignore[no-any-return]

    def submit(self, method: str, args: Mapping[str, Any], send: Callable[[], Any],
               *, level: Importance = Importance.REFRESH) -> None:
        """Queue a call nobody waits for (a refresh): it goes when its turn comes, merged with
        later ones of the same message. Failures are logged."""
        with importance(level):
            entry = self._enqueue(method, args, send)
        if entry.callers > 1:
            return  # merged into a call already waiting: its driver sends our content
        with self._cond:
            self._unfinished += 1
        threading.Thread(target=self._drive_detached, args=(entry,), daemon=True,
                         name="slack-budget").start()

    def note_rate_limited(self, method: str, args: Mapping[str, Any], retry_after: float) -> None:
        """Slack answered 429: slack_sdk retries that call after Retry-After, so no other call
        of this bucket goes before one more token's time after it, here or elsewhere."""
        bucket, rate = bucket_of(method, args)
        self._buckets.drain(bucket, rate, self._clock(), retry_after + 1.0 / rate.per_second)

    # ------------------------------------------------------------------ tests and shutdown

    def poke(self) -> None:
        """Wake every waiting call to look at the clock again (a test moved it)."""
        with self._cond:
            self._cond.notify_all()

    def waiting(self) -> int:
        """Calls (callers, merged ones included) waiting for their turn."""
        with self._cond:
            return sum(e.callers for q in self._queues.values() for e in q)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted refresh was sent; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._unfinished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # ------------------------------------------------------------------ inside

    def _enqueue(self, method: str, args: Mapping[str, Any], job: Callable[[], Any]) -> _Waiting:
        level = _importance.get()
        if level is None:
            level = _DEFAULT_IMPORTANCE.get(method, Importance.INTERACTIVE)
        bucket, rate = bucket_of(method, args)
        key = message_key(method, args)
        with self._cond:
            entry = self._merging.get(key) if key is not None else None
            if entry is not None:
                # The latest content wins: the waiting call now sends these arguments.
                entry.job = job
                entry.callers += 1
                self.stats.merged += 1
                if level < entry.rank[0]:
                    queue = self._queues[bucket]
                    queue.remove(entry)
                    entry.rank = (level, entry.rank[1])
                    bisect.insort(queue, entry, key=lambda e: e.rank)
                return entry
            entry = _Waiting(bucket, rate, (level, next(self._arrival)), job, key,
                             serial_key(method, args))
            bisect.insort(self._queues.setdefault(bucket, []), entry, key=lambda e: e.rank)
            if key is not None:
                self._merging[key] = entry
            return entry

    def _drive(self, entry: _Waiting) -> Any:
        with self._cond:
            if not self._wait_turn(entry):
                # Another caller of this merged entry sends it: wait for its answer.
                while not entry.done:
                    self._cond.wait()
                if entry.error is not None:
                    raise entry.error
                return entry.result
        token = _in_turn.set(True)
        try:
            entry.result = entry.job()
        except BaseException as exc:
            entry.error = exc
            raise
        finally:
            _in_turn.reset(token)
            self._finish(entry)
        return entry.result

    def _drive_detached(self, entry: _Waiting) -> None:
        try:
            self._drive(entry)
        except Exception as exc:  # nobody waits for a refresh: say it here
            log.warning("a queued Slack call failed: %s", type(exc).__name__)
        finally:
            with self._cond:
                self._unfinished -= 1
                self._cond.notify_all()

    def _wait_turn(self, entry: _Waiting) -> bool:
        """Under the lock: wait until ``entry`` is first of its bucket, its message is not
        being changed by another call, and a token is there. False: another caller of the
        same merged entry took the turn."""
        waited = False
        while True:
            if entry.started:
                return False
            queue = self._queues[entry.bucket]
            if queue[0] is entry and (entry.serial is None or entry.serial not in self._sending):
                wait = self._take(entry)
                if wait <= 0:
                    queue.pop(0)
                    entry.started = True
                    if entry.key is not None and self._merging.get(entry.key) is entry:
                        del self._merging[entry.key]
                    if entry.serial is not None:
                        self._sending.add(entry.serial)
                    self.stats.sent += 1
                    self.stats.waited += int(waited)
                    self._cond.notify_all()  # the next in line may try
                    return True
                waited = True
                self._cond.wait(wait)
            else:
                self._cond.wait()

    def _take(self, entry: _Waiting) -> float:
        try:
            return self._buckets.take(entry.bucket, entry.rate, self._clock())
        except Exception as exc:
            # The shared buckets are unreachable (the database blinked): let the call go;
            # Slack's 429 with Retry-After is the backstop, and the queue must not stall.
            log.warning("Slack call budget unavailable, calling without it: %s",
                        type(exc).__name__)
            return 0.0

    def _finish(self, entry: _Waiting) -> None:
        with self._cond:
            entry.done = True
            if entry.serial is not None:
                self._sending.discard(entry.serial)
            self._cond.notify_all()
