"""Alert delivery de-duplication shared through the database, on SQLite and PostgreSQL.

SqlDeliveryLog (storage/deliveries.py) is checked directly, by two engines racing from threads
(two replicas on one database), and end to end: two `POST /alerts` apps built by the
composition root on one database, driven with signed HTTP, count a retried delivery once
whichever replica it reaches.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.backends import LocalBackends
from harness.concurrency import race
from sqlalchemy import Engine, func, select
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bot.domain.alert_intake import Deliveries, DeliveryInFlight, sign
from bot.domain.clock import FixedClock
from bot.runtime.bootstrap import Container, build
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.services.alerts import AlertService
from handlers.alerts_http import alerts_route
from storage.deliveries import DEFAULT_LEASE, DELIVERIES, SqlDeliveryLog
from storage.engine import make_engine
from storage.unit_of_work import sql_unit_of_work_factory

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)
LEASE = timedelta(minutes=1)
ALERT_SECRET = "test-alert-signing-key"

CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  incident_channel: C0INCIDENT
  admins: [U0SECOPS]
  lanes: [dev, prod]
stores:
  files: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      inference-api: {owner: U0ALICE, lane: prod, reload: hot}
      retriever: {owner: U0BOB, lane: dev, reload: restart}
"""


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def sql_log(engine: Engine, clock: FixedClock, **kwargs: Any) -> SqlDeliveryLog:
    return SqlDeliveryLog(engine, clock, TTL, lease=LEASE, **kwargs)


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(DELIVERIES)).scalar_one())


# --- SqlDeliveryLog ----------------------------------------------------------------------


def test_a_taken_delivery_is_reserved_once_by_every_replica(
    engine: Engine, clock: FixedClock
) -> None:
    here, there = sql_log(engine, clock), sql_log(engine, clock)
    assert here.reserve("d-1") is True
    here.done("d-1")
    assert here.reserve("d-1") is False
    assert there.reserve("d-1") is False  # another replica (or this one restarted)
    assert there.reserve("d-2") is True  # other ids are unaffected


def test_a_released_delivery_can_be_reserved_again(engine: Engine, clock: FixedClock) -> None:
    log = sql_log(engine, clock)
    assert log.reserve("d-1") is True
    log.release("d-1")  # its request failed: the sender's retry must be processed
    assert log.reserve("d-1") is True
    log.done("d-1")
    assert log.reserve("d-1") is False


def test_a_taken_delivery_expires_after_the_ttl(engine: Engine, clock: FixedClock) -> None:
    log = sql_log(engine, clock)
    assert log.reserve("d-1") is True
    log.done("d-1")
    clock.advance(TTL - timedelta(seconds=1))
    assert log.reserve("d-1") is False
    clock.advance(timedelta(seconds=1))
    assert log.reserve("d-1") is True  # expired: a new delivery with an old id


def test_an_unfinished_reservation_is_in_flight_until_its_lease_lapses(
    engine: Engine, clock: FixedClock
) -> None:
    """The replica holding it may still fail, or may have died: the retry is not answered as
    a duplicate, and once the lease lapsed it is processed."""
    crashed, alive = sql_log(engine, clock), sql_log(engine, clock)
    assert crashed.reserve("d-1") is True  # ... and never says done or release
    with pytest.raises(DeliveryInFlight):
        alive.reserve("d-1")
    clock.advance(LEASE - timedelta(seconds=1))
    with pytest.raises(DeliveryInFlight):
        alive.reserve("d-1")
    clock.advance(timedelta(seconds=1))
    assert alive.reserve("d-1") is True
    alive.done("d-1")
    clock.advance(LEASE)  # done: held for the whole ttl, not only the lease
    assert crashed.reserve("d-1") is False


def test_expired_ids_are_purged_as_deliveries_arrive(engine: Engine, clock: FixedClock) -> None:
    log = sql_log(engine, clock, purge_every=timedelta(minutes=1))
    for i in range(5):
        assert log.reserve(f"old-{i}")
        log.done(f"old-{i}")
    assert log.reserve("unfinished")  # a lapsed lease is purged too
    assert rows(engine) == 6
    clock.advance(TTL)
    assert log.reserve("new") is True
    assert rows(engine) == 1


def test_delivery_ids_are_stored_exactly_as_given(engine: Engine, clock: FixedClock) -> None:
    log = sql_log(engine, clock)
    odd = ["x" * 200, "'; DROP TABLE alert_deliveries; --", "a%_\\b", "Case", "case",
           "with inner  spaces", "~!@#$^&*()[]{}|<>?/`"]
    for delivery in odd:
        assert log.reserve(delivery) is True, delivery
        log.done(delivery)
    for delivery in odd:
        assert log.reserve(delivery) is False, delivery
    with engine.connect() as conn:
        stored = set(conn.execute(select(DELIVERIES.c.delivery_id)).scalars())
    assert stored == set(odd)


# --- replicas racing ---------------------------------------------------------------------


def reserve_all(logs: list[SqlDeliveryLog], delivery: str) -> list[object]:
    """Every log reserves ``delivery`` at the same moment; DeliveryInFlight reads "in-flight"."""
    outcomes = race([lambda log=log: log.reserve(delivery) for log in logs])
    return ["in-flight" if o == DeliveryInFlight.__name__ else o for o in outcomes]


def test_replicas_racing_for_one_delivery_grant_it_exactly_once(
    two_replicas: tuple[Engine, Engine], clock: FixedClock
) -> None:
    a, b = two_replicas
    # Four request threads per replica; each log purges once, before the race, not during it.
    logs = [sql_log(e, clock, purge_every=timedelta(days=1)) for e in (a, b) for _ in range(4)]
    for i, log in enumerate(logs):
        assert log.reserve(f"warm-up-{i}")
    for round_ in range(10):
        delivery = f"race-{round_}"
        outcomes = reserve_all(logs, delivery)
        assert outcomes.count(True) == 1, outcomes
        assert outcomes.count("in-flight") == len(logs) - 1, outcomes
        logs[0].done(delivery)
        assert reserve_all(logs, delivery) == [False] * len(logs)  # taken: a duplicate everywhere

    # Expired rows, not purged yet: taking one over is granted to exactly one replica too.
    clock.advance(TTL)
    for round_ in range(10):
        outcomes = reserve_all(logs, f"race-{round_}")
        assert outcomes.count(True) == 1, outcomes
        assert outcomes.count("in-flight") == len(logs) - 1, outcomes


# --- end to end: two replicas behind a load balancer, signed HTTP -------------------------




class Replica:
    """One `rotabot serve` process's Container and its `POST /alerts` route."""

    def __init__(self, c: Container, clock: FixedClock,
                 deliveries: Deliveries | None = None,
                 service: AlertService | None = None) -> None:
        self.c, self.clock = c, clock
        self.http = TestClient(Starlette(routes=[
            alerts_route(c.deps, deliveries=deliveries, service=service)]))

    def send(self, payload: dict[str, Any], delivery: str) -> Any:
        body = json.dumps(payload).encode()
        stamp = int(self.clock.now().timestamp())
        return self.http.post("/alerts", content=body, headers={
            "Content-Type": "application/json",
            "X-Rotabot-Timestamp": str(stamp),
            "X-Rotabot-Signature": sign(ALERT_SECRET, stamp, body),
            "X-Rotabot-Delivery": delivery,
        })

    def counted(self) -> int:
        """Reports counted in storage, by every replica (the alert rows' count)."""
        with self.c.service.uow_factory() as uow:
            return sum(a.count for a in uow.alerts.recent(1000))


@pytest.fixture
def replicas(
    database_url: str, tmp_path: Path, clock: FixedClock
) -> Iterator[Callable[[], Container]]:
    """Builds containers the way `rotabot serve` does, all on one database and one clock."""
    state = StandinState()
    for user in ("U0SECOPS", "U0ALICE", "U0BOB"):
        state.add_user(user, user.lower())
    state.add_channel("C0ROTATE", "rotations", members=["U0SECOPS"])
    state.add_channel("C0INCIDENT", "incidents", members=["U0SECOPS"])
    catalog = tmp_path / "catalog.yml"
    catalog.write_text(CATALOG)
    built: list[Container] = []
    with StandinServer(state) as server:
        settings = Settings(
            catalog_path=str(catalog),
            database_url=database_url,
            slack_api_url=server.base_url,
            slack_bot_token="xoxb-test",
            slack_signing_secret="0123456789abcdef0123456789abcdef",
            alert_secret=ALERT_SECRET,
        )

        def new() -> Container:
            c = build(settings, clock=clock, migrate=True,
                      backends=LocalBackends(tmp_path / "s"))
            built.append(c)
            return c

        yield new
        for c in built:
            c.alerts.flush()
            c.notifier.flush()
            c.engine.dispose()
        assert state.violations == []


def test_a_delivery_retried_on_another_replica_is_counted_once(
    replicas: Callable[[], Container], clock: FixedClock
) -> None:
    a, b = Replica(replicas(), clock), Replica(replicas(), clock)
    report = {"consumer": "inference-api", "status_code": 401, "source": "sidecar"}

    first = a.send(report, "delivery-1")
    assert first.status_code == 200, first.text
    assert first.json()["ref"] == "A-1" and "duplicate" not in first.json()
    retried = b.send(report, "delivery-1")  # the load balancer picked the other replica
    assert retried.status_code == 200, retried.text
    assert retried.json() == {"ok": True, "duplicate": True}
    assert a.counted() == 1

    # A replica started afterwards (a restart, a scale-up) knows it too.
    c = Replica(replicas(), clock)
    assert c.send(report, "delivery-1").json() == {"ok": True, "duplicate": True}
    # A new delivery of the same failure is counted, on whichever replica.
    assert b.send(report, "delivery-2").json()["ref"] == "A-1"
    assert a.counted() == 2


def test_a_delivery_held_by_a_dead_replica_is_processed_after_its_lease(
    replicas: Callable[[], Container], clock: FixedClock
) -> None:
    a = Replica(replicas(), clock)
    # Another replica reserved the id and died before storing the alert.
    assert SqlDeliveryLog(a.c.engine, a.c.clock).reserve("delivery-1") is True
    report = {"consumer": "retriever", "error": "connection refused"}

    held = a.send(report, "delivery-1")
    assert held.status_code == 503, held.text
    assert held.headers["Retry-After"].isdigit()
    assert "retry" in held.json()["error"] and not held.json()["ok"]
    assert a.counted() == 0

    clock.advance(DEFAULT_LEASE)  # the route's own log uses the default lease
    resp = a.send(report, "delivery-1")
    assert resp.status_code == 200 and "duplicate" not in resp.json(), resp.text
    assert a.counted() == 1


def test_a_database_down_while_storing_is_a_503_the_sender_retries(
    replicas: Callable[[], Container], clock: FixedClock, caplog: pytest.LogCaptureFixture
) -> None:
    healthy = Replica(replicas(), clock)
    with socket.socket() as s:  # a port nothing listens on: PostgreSQL is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = make_engine(f"postgresql+psycopg://rotabot:pw-not-shown@127.0.0.1:{port}/rotabot")
    try:
        # The delivery id is taken in the batch's transaction: its database is the one down.
        rotations = dataclasses.replace(healthy.c.service,
                                        uow_factory=sql_unit_of_work_factory(down))
        broken = Replica(healthy.c, clock, service=AlertService(rotations=rotations))
        report = {"consumer": "inference-api", "status_code": 401}

        resp = broken.send(report, "delivery-1")
        assert resp.status_code == 503, resp.text
        assert resp.headers["Retry-After"].isdigit()
        error = resp.json()["error"]
        assert "database is unavailable" in error and "retry" in error
        assert "pw-not-shown" not in resp.text and "127.0.0.1" not in resp.text
        ref = error.split("(ref ")[1][:8]
        logged = [r.getMessage() for r in caplog.records if ref in r.getMessage()]
        assert logged and f"127.0.0.1:{port}" in logged[0]  # the operator learns where
        assert "pw-not-shown" not in caplog.text
        assert healthy.counted() == 0

        # The sender's retry reaches a replica whose database answers: processed, once.
        retried = healthy.send(report, "delivery-1")
        assert retried.status_code == 200 and "duplicate" not in retried.json(), retried.text
        assert healthy.send(report, "delivery-1").json() == {"ok": True, "duplicate": True}
        assert healthy.counted() == 1
    finally:
        down.dispose()


def test_a_refused_request_frees_its_delivery_id_on_every_replica(
    replicas: Callable[[], Container], clock: FixedClock
) -> None:
    a, b = Replica(replicas(), clock), Replica(replicas(), clock)
    assert a.send({"consumer": "inference-apo"}, "d-7").status_code == 404  # a typo
    resp = b.send({"consumer": "inference-api"}, "d-7")  # fixed, retried elsewhere
    assert resp.status_code == 200 and "duplicate" not in resp.json(), resp.text
    assert b.counted() == 1
