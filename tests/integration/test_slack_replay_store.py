"""Slack request signatures and user actions in the database, on SQLite and PostgreSQL.

SqlSlackRequests (storage/slack_requests.py) checked directly: replicas are engines of their
own on one database (and race from threads); expiry moves a fixed clock. Then migration 0005
on a database at 0004 that already holds data.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from harness.concurrency import race
from sqlalchemy import Column, Engine, MetaData, Table, func, insert, inspect, select

from bot.domain.clock import FixedClock
from bot.domain.errors import StoreUnavailable
from bot.domain.replay import ActionInFlight
from storage.deliveries import DELIVERIES
from storage.engine import make_engine
from storage.migrate import alembic_config, current_revision, head_revision, upgrade
from storage.slack_requests import SLACK_REQUESTS, SqlSlackRequests
from storage.sql_common import AUDIT, ROTATIONS

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)
LEASE = timedelta(minutes=1)
SIGNATURE = "v0=" + "a1" * 32  # the shape Slack's signatures have
CANARY = "pw-" + "9f" * 8


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def log_on(engine: Engine, clock: FixedClock, **kwargs: Any) -> SqlSlackRequests:
    return SqlSlackRequests(engine, clock, TTL, lease=LEASE, **kwargs)


def rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(SLACK_REQUESTS)).scalar_one())


# --- signatures --------------------------------------------------------------------------


def test_a_signature_is_taken_once_by_every_replica(engine: Engine, clock: FixedClock) -> None:
    here, there = log_on(engine, clock), log_on(engine, clock)
    assert here.first_time(SIGNATURE) is True
    assert here.first_time(SIGNATURE) is False  # the same request again: a replay
    assert there.first_time(SIGNATURE) is False  # on another replica, or after a restart
    assert there.first_time(SIGNATURE.replace("a1", "b2", 1)) is True  # another request


def test_a_signature_outlives_the_signature_window_then_is_purged(
    engine: Engine, clock: FixedClock
) -> None:
    log = log_on(engine, clock, purge_every=timedelta(minutes=1))
    for i in range(5):
        assert log.first_time(f"v0={i:064x}")
    assert log.first_time(SIGNATURE)
    clock.advance(TTL - timedelta(seconds=1))  # Bolt would still accept it: still a replay
    assert log.first_time(SIGNATURE) is False
    assert rows(engine) == 6
    clock.advance(timedelta(seconds=1))  # past the window either way: Bolt refuses it as stale,
    assert log.first_time(SIGNATURE) is True  # so an expired row is simply taken afresh
    clock.advance(timedelta(minutes=1))  # purges run at most once a minute, as requests arrive
    assert log.first_time("v0=" + "c3" * 32) is True
    assert rows(engine) == 2  # the five expired ones are gone


def test_replicas_racing_with_one_signature_take_it_exactly_once(
    two_replicas: tuple[Engine, Engine], clock: FixedClock
) -> None:
    logs = [log_on(e, clock, purge_every=timedelta(days=1)) for e in two_replicas for _ in range(4)]
    for i, log in enumerate(logs):  # each log purges once, here, not during the race
        assert log.first_time(f"v0=warm-up-{i}")
    for round_ in range(10):
        signature = f"v0={round_:064x}"
        outcomes = race([lambda log=log, s=signature: log.first_time(s) for log in logs])
        assert outcomes.count(True) == 1, outcomes
        assert outcomes.count(False) == len(logs) - 1, outcomes


# --- actions -----------------------------------------------------------------------------


def test_an_action_is_answered_everywhere_with_what_it_created(
    engine: Engine, clock: FixedClock
) -> None:
    here, there = log_on(engine, clock), log_on(engine, clock)
    assert here.begin("T0TRIGGER.1") is None  # new: go ahead
    here.finish("T0TRIGGER.1", "1")
    assert here.begin("T0TRIGGER.1") == "1"
    assert there.begin("T0TRIGGER.1") == "1"  # another replica, or this one restarted
    clock.advance(LEASE * 5)  # finished: kept for the ttl, not only the lease
    assert there.begin("T0TRIGGER.1") == "1"
    assert there.begin("V0VIEW") is None  # other actions are unaffected


def test_an_unfinished_action_is_in_flight_until_its_lease_lapses(
    engine: Engine, clock: FixedClock
) -> None:
    crashed, alive = log_on(engine, clock), log_on(engine, clock)
    assert crashed.begin("T1") is None  # ... and never finishes or releases
    with pytest.raises(ActionInFlight):
        alive.begin("T1")
    clock.advance(LEASE - timedelta(seconds=1))
    with pytest.raises(ActionInFlight):
        alive.begin("T1")
    clock.advance(timedelta(seconds=1))
    assert alive.begin("T1") is None  # its replica died: the repeat is processed
    alive.finish("T1", "4")
    assert crashed.begin("T1") == "4"


def test_a_released_action_is_processed_again(engine: Engine, clock: FixedClock) -> None:
    log = log_on(engine, clock)
    assert log.begin("T1") is None
    log.release("T1")  # it created nothing (refused, not ready): a repeat is processed afresh
    assert log.begin("T1") is None


def test_replicas_racing_with_one_action_process_it_exactly_once(
    two_replicas: tuple[Engine, Engine], clock: FixedClock
) -> None:
    logs = [log_on(e, clock, purge_every=timedelta(days=1)) for e in two_replicas for _ in range(4)]
    for round_ in range(10):
        action = f"T{round_}"
        outcomes = race([lambda log=log, a=action: log.begin(a) for log in logs])
        assert outcomes.count(None) == 1, outcomes
        assert outcomes.count("ActionInFlight") == len(logs) - 1, outcomes
        logs[0].finish(action, str(round_))
        assert race([lambda log=log, a=action: log.begin(a) for log in logs]) == [str(round_)] * 8


def test_signatures_and_action_ids_are_stored_only_as_hashes(
    engine: Engine, clock: FixedClock
) -> None:
    log = log_on(engine, clock)
    log.first_time(SIGNATURE)
    log.begin("13345224609.738474920.8088930838d88f008e0")
    with engine.connect() as conn:
        keys = set(conn.execute(select(SLACK_REQUESTS.c.request_key)).scalars())
    assert {k[:4] for k in keys} == {"sig:", "act:"}
    assert all(len(k) == 4 + 64 for k in keys)
    assert not any("a1a1" in k or "8088930838" in k for k in keys)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def unreachable_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:////nonexistent-rotabot-dir/sub/rotabot.db"
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # bound, never listening
        sock.bind(("127.0.0.1", 0))
        yield f"postgresql+psycopg://rotabot:{CANARY}@127.0.0.1:{sock.getsockname()[1]}/rotabot"


def test_a_database_that_is_down_is_store_unavailable_never_a_yes(
    unreachable_url: str, clock: FixedClock
) -> None:
    down = make_engine(unreachable_url)
    try:
        log = log_on(down, clock)
        for attempt in (lambda: log.first_time(SIGNATURE), lambda: log.begin("T1"),
                        lambda: log.finish("T1", "1"), lambda: log.release("T1")):
            with pytest.raises(StoreUnavailable) as caught:
                attempt()
            assert CANARY not in str(caught.value)
    finally:
        down.dispose()


# --- migration 0005 ----------------------------------------------------------------------


def test_a_database_at_0004_with_data_upgrades_cleanly(database_url: str) -> None:
    upgrade(database_url, "0004")
    assert current_revision(database_url) == "0004"
    eng = make_engine(database_url)
    try:
        assert "slack_requests" not in inspect(eng).get_table_names()
        # The rotations table as it was then (the head model adds later columns' defaults).
        at_0004 = Table("rotations", MetaData(), *(
            Column(c.name, c.type) for c in ROTATIONS.c
            if c.name not in ("gated_lanes", "lane_writes")))
        with eng.begin() as conn:
            conn.execute(insert(at_0004).values(
                id=1, secret="model-api-key", phase="distributing", lanes='["dev","prod"]',
                overlap_seconds=86400.0, observe_seconds=3.0, created_at=T0,
                started_by="U0ADMIN", store_path="ai/model-api-key", urgent=False,
                auto_revoke=False, revision=3))
            conn.execute(insert(AUDIT).values(
                at=T0, actor="U0ADMIN", action="phase", secret="model-api-key", rotation_id=1,
                before="ready-check", after="prepared", detail="{}"))
            conn.execute(insert(DELIVERIES).values(
                delivery_id="d-1", expires_at=T0 + TTL, done=True))
        eng.dispose()

        upgrade(database_url)
        assert current_revision(database_url) == head_revision()
        with eng.connect() as conn:
            assert conn.execute(select(ROTATIONS.c.id, ROTATIONS.c.phase,
                                       ROTATIONS.c.revision)).all() == [(1, "distributing", 3)]
            assert conn.execute(select(AUDIT.c.action, AUDIT.c.after)).all() == [
                ("phase", "prepared")]
            assert conn.execute(select(DELIVERIES.c.delivery_id)).scalars().all() == ["d-1"]
            assert conn.execute(select(func.count()).select_from(SLACK_REQUESTS)).scalar() == 0
        indexes = {i["name"] for i in inspect(eng).get_indexes("slack_requests")}
        assert "ix_slack_requests_expires_at" in indexes
        log = log_on(eng, FixedClock(T0))
        assert log.first_time(SIGNATURE) is True and log.first_time(SIGNATURE) is False

        # And back: 0005 removes only its own table.
        with eng.begin() as conn:
            command.downgrade(alembic_config(conn), "0004")
        assert "slack_requests" not in inspect(eng).get_table_names()
        with eng.connect() as conn:
            assert conn.execute(select(func.count()).select_from(ROTATIONS)).scalar() == 1
        upgrade(database_url)
        assert current_revision(database_url) == head_revision()
    finally:
        eng.dispose()
