"""Group commit of `POST /alerts` (bot/services/alert_batches.py), on SQLite and PostgreSQL.

Concurrent signed reports go through the real route and the composition root's Container,
in one event loop (httpx's ASGI transport), so they arrive together and share batches. The
writer is held (the service's intake lock) while requests queue, which makes "shared one
transaction" and "answered only after the commit" observable without timing anything.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness.backends import LocalBackends
from starlette.applications import Starlette

from bot.domain.alert_intake import sign
from bot.domain.clock import FixedClock
from bot.domain.errors import StoreUnavailable
from bot.runtime.bootstrap import Container, build
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from handlers.alerts_http import alerts_route

ALERT_SECRET = "group-commit-signing-key-0123456789"
CONSUMERS = ("embedder", "retriever", "reranker", "inference-api")
CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0SECOPS]
  lanes: [dev, staging, prod]
stores:
  files: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      embedder: {owner: U0CAROL, lane: dev, reload: hot}
      retriever: {owner: U0BOB, lane: dev, reload: restart}
      reranker: {owner: U0CAROL, lane: staging, reload: staged}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot}
"""

Request = tuple[bytes, dict[str, str]]


class Replica:
    """One process's Container and its `POST /alerts` route, driven in one event loop."""

    def __init__(self, c: Container, clock: FixedClock) -> None:
        self.c, self.clock = c, clock
        self.app = Starlette(routes=[alerts_route(c.deps)])

    def request(self, consumer: str, delivery: str | None = None) -> Request:
        body = json.dumps({"consumer": consumer, "status_code": 401,
                           "source": f"{consumer}-sidecar"}).encode()
        stamp = int(self.clock.now().timestamp())
        return body, {
            "Content-Type": "application/json",
            "X-Rotabot-Timestamp": str(stamp),
            "X-Rotabot-Signature": sign(ALERT_SECRET, stamp, body),
            "X-Rotabot-Delivery": delivery or uuid.uuid4().hex,
        }

    async def send_all(self, requests: list[Request]) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bot") as client:
            return list(await asyncio.gather(*(
                client.post("/alerts", content=body, headers=headers)
                for body, headers in requests)))

    def counts(self) -> dict[str, int]:
        with self.c.service.uow_factory() as uow:
            out: dict[str, int] = {}
            for a in uow.alerts.recent(1000):
                out[a.consumer] = out.get(a.consumer, 0) + a.count
            return out


class Replicas:
    def __init__(self, new: Callable[[], Replica], state: StandinState) -> None:
        self.new, self.state = new, state

    def __call__(self) -> Replica:
        return self.new()


@pytest.fixture
def replicas(database_url: str, tmp_path: Path) -> Iterator[Replicas]:
    """Containers built as `rotabot serve` builds them, on one database, clock and Slack."""
    state = StandinState()
    for user in ("U0SECOPS", "U0ALICE", "U0BOB", "U0CAROL"):
        state.add_user(user, user.lower())
    state.add_channel("C0ROTATE", "rotations", members=["U0SECOPS"])
    state.add_channel("C0INCIDENT", "incidents", members=["U0SECOPS"])
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(CATALOG)
    clock = FixedClock(datetime(2026, 11, 25, 9, 0, tzinfo=UTC))
    built: list[Container] = []
    with StandinServer(state) as server:
        settings = Settings(
            catalog_path=str(catalog), database_url=database_url,
            slack_api_url=server.base_url, slack_bot_token="xoxb-test",
            slack_signing_secret="0123456789abcdef0123456789abcdef",
            alert_secret=ALERT_SECRET, alert_flood_limit=(1000.0, 1000.0),
        )

        def new() -> Replica:
            c = build(settings, clock=clock, migrate=True,
                      backends=LocalBackends(tmp_path / "s"))
            built.append(c)
            return Replica(c, clock)

        yield Replicas(new, state)
        for c in built:
            c.intake.close()
            c.alerts.flush()
            c.engine.dispose()
        assert state.violations == []


def incident_posts(state: StandinState) -> list[str]:
    return [str(call.args.get("text", "")) for call in state.calls_to("chat.postMessage")
            if call.args.get("channel") == "C0INCIDENT"]


Tasks = list["asyncio.Task[list[httpx.Response]]"]


async def while_held(replica: Replica, requests: list[Request],
                     check: Callable[[Tasks], None] | None = None) -> list[httpx.Response]:
    """Send ``requests`` concurrently while the writer cannot commit; once every unit is
    queued (or taken into the writer's first batch, which waits for the lock), run ``check``
    on the still-unanswered requests, then let the writer go."""
    lock = replica.c.alerts._intake_lock
    intake = replica.c.intake
    before = intake.submitted
    lock.acquire()
    try:
        tasks = [asyncio.create_task(replica.send_all([r])) for r in requests]
        for _ in range(100_000):
            if intake.submitted - before >= len(requests):
                break
            await asyncio.sleep(0)  # let the requests reach the route (no time passes)
        else:
            raise AssertionError("the requests never reached the group commit")
        if check is not None:
            check(tasks)
    finally:
        lock.release()
    return [r for rs in await asyncio.gather(*tasks) for r in rs]


def test_concurrent_reports_share_batches_and_each_is_counted_once(
    replicas: Replicas,
) -> None:
    replica = replicas()
    requests = [replica.request(CONSUMERS[i % 4]) for i in range(120)]

    def nothing_answered(tasks: Tasks) -> None:
        # Queued behind a writer that cannot commit: no request has its answer yet.
        assert not any(t.done() for t in tasks)
        assert replica.counts() == {}

    responses = asyncio.run(while_held(replica, requests, nothing_answered))
    assert [r.status_code for r in responses] == [200] * 120
    assert replica.counts() == {c: 30 for c in CONSUMERS}
    # 120 requests, two transactions at most: the writer's first batch and all the rest.
    assert replica.c.intake.batches <= 2 and replica.c.intake.units == 120
    # Each answer is its own report's: the counts it saw run 1..30 per consumer.
    seen: dict[str, list[int]] = {}
    for r in responses:
        (summary,) = r.json()["alerts"]
        seen.setdefault(summary["consumer"], []).append(summary["count"])
    assert all(sorted(v) == list(range(1, 31)) for v in seen.values())
    assert sum(1 for r in responses if r.json()["alerts"][0]["new"]) == 4
    replica.c.alerts.flush_follow_ups()
    assert len(incident_posts(replicas.state)) == 4


def test_replayed_ids_are_refused_within_and_across_batches(
    replicas: Replicas,
) -> None:
    replica = replicas()
    ids = [f"delivery-{i}" for i in range(10)]
    first = asyncio.run(while_held(replica, [replica.request("embedder", d) for d in ids]))
    assert all(r.status_code == 200 and "duplicate" not in r.json() for r in first)

    again = [replica.request("embedder", d) for d in ids]
    fresh = replica.request("retriever", "delivery-new")
    second = asyncio.run(while_held(replica, [*again, fresh, fresh]))
    assert [r.json() for r in second[:10]] == [{"ok": True, "duplicate": True}] * 10
    answers = [r.json() for r in second[10:]]
    # The same id twice in one batch: counted once, the other answered as a duplicate.
    assert sorted("duplicate" in a for a in answers) == [False, True]
    assert replica.counts() == {"embedder": 10, "retriever": 1}


def test_a_batch_that_fails_to_commit_acknowledges_nothing_and_its_retries_count_once(
    replicas: Replicas, monkeypatch: pytest.MonkeyPatch,
) -> None:
    replica = replicas()
    svc = replica.c.alerts
    real_factory = svc.rotations.uow_factory
    failures = [StoreUnavailable("database at 127.0.0.1:5432 is unreachable")]

    def dies_at_commit() -> Any:
        # The batch is formed and its statements run; its commit fails (the database
        # connection died with the process): the transaction is rolled back.
        uow = real_factory()
        if failures:
            def commit() -> None:
                raise failures.pop()

            uow.commit = commit  # type: ignore[method-assign]
        return uow

    monkeypatch.setattr(svc, "rotations",
                        dataclasses.replace(svc.rotations, uow_factory=dies_at_commit))
    requests = [replica.request(CONSUMERS[i % 4], f"d-{i}") for i in range(40)]
    failed = asyncio.run(while_held(replica, requests))
    statuses = [r.status_code for r in failed]
    # Every request of the failed batch was told to retry; none was acknowledged.
    assert statuses.count(503) >= 1 and set(statuses) <= {200, 503}
    assert all(r.headers["Retry-After"] for r in failed if r.status_code == 503)
    acknowledged = sum(1 for r in failed if r.status_code == 200)
    assert sum(replica.counts().values()) == acknowledged

    retried = asyncio.run(replica.send_all(requests))  # every sender retries its delivery
    assert all(r.status_code == 200 for r in retried)
    assert sum(1 for r in retried if r.json().get("duplicate")) == acknowledged
    assert replica.counts() == {c: 10 for c in CONSUMERS}


@pytest.mark.postgres
def test_replicas_count_each_delivery_once_and_open_one_alert_per_failure(
    replicas: Replicas,
) -> None:
    a, b = replicas(), replicas()
    requests = [a.request(CONSUMERS[i % 4], f"shared-{i}") for i in range(80)]
    out: dict[str, list[httpx.Response]] = {}

    def send(name: str, replica: Replica) -> None:
        out[name] = asyncio.run(replica.send_all(requests))

    # The same deliveries reach both replicas at once (a sender retrying on the other one).
    threads = [threading.Thread(target=send, args=(n, r)) for n, r in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    answers = list(zip(out["a"], out["b"], strict=True))
    for ra, rb in answers:
        assert {ra.status_code, rb.status_code} <= {200, 503}
        counted = [r for r in (ra, rb) if r.status_code == 200 and "duplicate" not in r.json()]
        assert len(counted) <= 1
    assert a.counts() == {c: 20 for c in CONSUMERS}
    with a.c.service.uow_factory() as uow:
        assert sorted(x.consumer for x in uow.alerts.recent(100)) == sorted(CONSUMERS)
    a.c.alerts.flush_follow_ups()
    b.c.alerts.flush_follow_ups()
    posts = incident_posts(replicas.state)
    assert len(posts) == 4, posts
