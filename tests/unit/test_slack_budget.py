"""The Slack call budget (adapters/slack_budget.py): tokens per method, importance before
arrival, updates of one message merged with the latest content winning. Its clock is stepped
by the test, so nothing waits out a rate limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError

from adapters.slack_budget import (
    DEFAULT_RATE,
    METHOD_RATES,
    PER_CHANNEL,
    Importance,
    MemoryTokenBuckets,
    SlackCallBudget,
    importance,
)
from adapters.slack_client import slack_client
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.sandbox.slack_standin.rate_limits import load_rate_limits


def eventually(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until another thread got where the test needs it (a caller queued)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class StepClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Stands in for the Web API: records what was sent, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self._cond = threading.Condition()

    def send(self, what: str, content: Any = None) -> Callable[[], str]:
        def run() -> str:
            with self._cond:
                self.sent.append((what, content))
                self._cond.notify_all()
            return f"answer to {what} {content}"
        return run

    def wait_for(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.sent) >= count, timeout=10), self.sent


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def budget(clock: StepClock) -> SlackCallBudget:
    return SlackCallBudget(MemoryTokenBuckets(), clock=clock)


def spend_burst(budget: SlackCallBudget, method: str, args: dict[str, Any]) -> int:
    """Take every token the burst holds (calls that go through at once)."""
    rate = METHOD_RATES.get(method, DEFAULT_RATE)
    for _ in range(int(rate.burst)):
        budget.call(method, args, lambda: None)
    return int(rate.burst)


def one_token(budget: SlackCallBudget, clock: StepClock, method: str) -> None:
    clock.now += 1.0 / METHOD_RATES[method].per_second + 1e-6
    budget.poke()


@pytest.fixture
def threads() -> Iterator[list[threading.Thread]]:
    started: list[threading.Thread] = []
    yield started
    for t in started:
        t.join(timeout=10)
        assert not t.is_alive()


def test_the_bots_budget_stays_within_the_stand_ins_published_tiers() -> None:
    table = load_rate_limits()
    for method, rate in METHOD_RATES.items():
        tier = table.tier_of(method)
        assert rate.per_minute <= tier.rate.per_minute, method
        assert rate.burst <= tier.rate.burst, method
        assert (method in PER_CHANNEL) == tier.per_channel, method
    assert DEFAULT_RATE.per_minute <= table.tiers[table.default].rate.per_minute


def test_a_burst_of_refreshes_of_one_message_is_merged_into_one_call_with_the_latest_content(
    budget: SlackCallBudget, clock: StepClock, threads: list[threading.Thread]
) -> None:
    message = {"channel": "C0INCIDENT", "ts": "1.0"}
    spend_burst(budget, "chat.update", {"channel": "C0X", "ts": "9.9"})
    rec = Recorder()
    for count in range(1, 21):  # an alert seen 20 times while Slack's budget is spent
        budget.submit("chat.update", message, rec.send("A-1", f"seen {count}x"))
    # A person's own edit of that message, made meanwhile, rides on the same call.
    answer: list[str] = []
    t = threading.Thread(target=lambda: answer.append(
        budget.call("chat.update", message, rec.send("A-1", "seen 21x"))))
    t.start()
    threads.append(t)
    eventually(lambda: budget.waiting() == 21, 5, "the edit to queue")
    assert rec.sent == []
    one_token(budget, clock, "chat.update")
    rec.wait_for(1)
    assert budget.flush(5)
    t.join(5)
    assert rec.sent == [("A-1", "seen 21x")]
    assert answer == ["answer to A-1 seen 21x"]  # the waiting caller got the merged answer
    assert budget.stats.merged == 20


def test_waiting_calls_go_by_importance_then_arrival(
    budget: SlackCallBudget, clock: StepClock, threads: list[threading.Thread]
) -> None:
    spend_burst(budget, "chat.update", {"channel": "C0X", "ts": "9.9"})
    rec = Recorder()
    budget.submit("chat.update", {"channel": "C0INCIDENT", "ts": "1.0"},
                  rec.send("refresh A-1"))
    budget.submit("chat.update", {"channel": "C0INCIDENT", "ts": "2.0"},
                  rec.send("refresh A-2"))

    def clicked_prompt() -> None:  # a click replaces its prompt: more urgent than counters
        budget.call("chat.update", {"channel": "C0ROTATE", "ts": "3.0"},
                    rec.send("prompt outcome"))

    t = threading.Thread(target=clicked_prompt)
    t.start()
    threads.append(t)
    eventually(lambda: budget.waiting() == 3, 5, "the click to queue")
    for n in (1, 2, 3):
        one_token(budget, clock, "chat.update")
        rec.wait_for(n)
    assert [what for what, _ in rec.sent] == ["prompt outcome", "refresh A-1", "refresh A-2"]


def test_importance_can_be_raised_by_the_caller(
    budget: SlackCallBudget, clock: StepClock, threads: list[threading.Thread]
) -> None:
    post = {"channel": "C0ROTATE"}
    spend_burst(budget, "chat.postMessage", post)
    rec = Recorder()
    budget.submit("chat.postMessage", post, rec.send("receipt"), level=Importance.POST)

    def owner_dm() -> None:
        with importance(Importance.INTERACTIVE):
            budget.call("chat.postMessage", post, rec.send("interactive"))

    t = threading.Thread(target=owner_dm)
    t.start()
    threads.append(t)
    eventually(lambda: budget.waiting() == 2, 5, "the interactive post to queue")
    one_token(budget, clock, "chat.postMessage")
    rec.wait_for(1)
    one_token(budget, clock, "chat.postMessage")
    rec.wait_for(2)
    assert [what for what, _ in rec.sent] == ["interactive", "receipt"]


def test_posts_count_per_channel_and_other_methods_do_not_wait(budget: SlackCallBudget) -> None:
    spent = spend_burst(budget, "chat.postMessage", {"channel": "C0ROTATE"})
    assert spent == 10
    # Another channel, and other methods, have budgets of their own: these go at once.
    assert budget.call("chat.postMessage", {"channel": "C0INCIDENT"}, lambda: "ok") == "ok"
    assert budget.call("views.open", {}, lambda: "ok") == "ok"
    assert budget.stats.waited == 0


def test_a_failed_call_raises_to_every_merged_caller_and_frees_the_message(
    budget: SlackCallBudget, clock: StepClock
) -> None:
    message = {"channel": "C0INCIDENT", "ts": "1.0"}

    def refused() -> None:
        raise RuntimeError("message_not_found")

    with pytest.raises(RuntimeError):
        budget.call("chat.update", message, refused)
    assert budget.call("chat.update", message, lambda: "next") == "next"


def test_slack_429_empties_the_bucket_until_retry_after_and_the_retry(
    clock: StepClock,
) -> None:
    """Against the stand-in: a 429 (here injected) is retried by slack_sdk's handler, and the
    budget holds the method's next call back until Retry-After plus one token."""
    state = StandinState()
    state.add_channel("C0ROTATE", "rotations", members=[])
    buckets = MemoryTokenBuckets()
    budget = SlackCallBudget(buckets, clock=clock)
    with StandinServer(state) as server:
        client = slack_client("xoxb-test", server.base_url, budget=budget)
        ts = str(client.chat_postMessage(channel="C0ROTATE", text="R-1")["ts"])
        state.fail_next("chat.update", retry_after=0)  # Retry-After 0: the retry is at once
        client.chat_update(channel="C0ROTATE", ts=ts, text="R-1 v2")
        assert [c.status for c in state.calls_to("chat.update")] == [429, 200]
        rate = METHOD_RATES["chat.update"]
        assert buckets.take("chat.update", rate, clock()) == pytest.approx(1 / rate.per_second)
        clock.now += 1 / rate.per_second + 1e-6
        with pytest.raises(SlackApiError):  # Slack's refusal still reaches the caller
            client.chat_update(channel="C0ROTATE", ts="0.0", text="gone")
