"""The Slack call budget's buckets in the database (storage/slack_budget.py): two replicas
share one budget per method, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from adapters.slack_budget import METHOD_RATES, SlackCallBudget
from storage.slack_budget import SqlTokenBuckets

T0 = 1_800_000_000.0


def test_two_replicas_share_one_bucket_per_method(two_replicas: tuple[Engine, Engine]) -> None:
    a, b = (SqlTokenBuckets(e) for e in two_replicas)
    rate = METHOD_RATES["chat.update"]  # a burst of 50
    assert [a.take("chat.update", rate, T0) for _ in range(30)] == [0.0] * 30
    assert [b.take("chat.update", rate, T0) for _ in range(20)] == [0.0] * 20
    # The workspace's minute is spent, whichever replica asks.
    assert a.take("chat.update", rate, T0) == pytest.approx(1 / rate.per_second)
    assert b.take("chat.update", rate, T0) == pytest.approx(1 / rate.per_second)
    assert b.take("chat.update", rate, T0 + 1 / rate.per_second + 1e-6) == 0.0
    # Other buckets are untouched.
    assert a.take("chat.postMessage:C0ROTATE", METHOD_RATES["chat.postMessage"], T0) == 0.0


def test_racing_replicas_never_hand_out_more_than_the_burst(
    two_replicas: tuple[Engine, Engine],
) -> None:
    rate = METHOD_RATES["conversations.open"]  # Tier 3: 50 at once
    taken: list[int] = []
    lock = threading.Lock()

    def replica(engine: Engine) -> None:
        buckets = SqlTokenBuckets(engine)
        got = sum(1 for _ in range(40) if buckets.take("conversations.open", rate, T0) == 0.0)
        with lock:
            taken.append(got)

    workers = [threading.Thread(target=replica, args=(e,)) for e in two_replicas]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    # A take that lost every race says "wait" rather than overspend: never more than 50.
    assert sum(taken) <= 50
    assert SqlTokenBuckets(two_replicas[0]).take("conversations.open", rate, T0) > 0


def test_a_429_on_one_replica_holds_the_other_back(two_replicas: tuple[Engine, Engine]) -> None:
    clock = lambda: T0  # noqa: E731
    a = SlackCallBudget(SqlTokenBuckets(two_replicas[0]), clock=clock)
    b_buckets = SqlTokenBuckets(two_replicas[1])
    a.note_rate_limited("chat.postMessage", {"channel": "C0INCIDENT"}, retry_after=5)
    rate = METHOD_RATES["chat.postMessage"]
    wait = b_buckets.take("chat.postMessage:C0INCIDENT", rate, T0)
    assert wait == pytest.approx(5 + 1 / rate.per_second)
