"""The alert group commit's statements, on SQLite and PostgreSQL, at every batch size.

Each binds its list as one parameter (storage/list_params.py), so one statement serves every
batch size: these tests drive them with lists of very different lengths, awkward values and
repeats, and check what each answers and stores. The rotation repository's steps, reused while
the rotation's revision is unchanged, are checked against a second engine (another replica)
changing them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert

from bot.domain.alert import Alert
from bot.domain.alert_intake import KeyState
from bot.domain.errors import RotabotError
from bot.domain.lifecycle import StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from storage.deliveries import DELIVERIES, take_finished
from storage.engine import make_engine
from storage.unit_of_work import SqlUnitOfWork

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TTL = timedelta(minutes=10)
# Names a sender may write: quotes, commas, brackets, a pipe, non-ASCII.
AWKWARD = ['d-"quoted"', "d,comma", "d[1]", "d|pipe", "d-ünïcode", "d-'single'"]


@pytest.fixture
def uow(engine: Engine) -> Callable[[], SqlUnitOfWork]:
    return lambda: SqlUnitOfWork(engine)


def take(engine: Engine, keys: list[str], now: datetime = T0) -> dict[str, KeyState]:
    with engine.begin() as conn:
        return take_finished(conn, keys, now, TTL)


@pytest.mark.parametrize("size", [1, 7, 250])
def test_delivery_ids_are_taken_once_whatever_the_batch_size(engine: Engine, size: int) -> None:
    keys = [f"d-{size}-{i}" for i in range(size)]
    assert take(engine, keys) == dict.fromkeys(keys, KeyState.TAKEN)
    assert take(engine, keys) == dict.fromkeys(keys, KeyState.DUPLICATE)
    # After the ttl they are free again.
    assert take(engine, keys, T0 + TTL + timedelta(seconds=1)) == dict.fromkeys(
        keys, KeyState.TAKEN)


def test_a_batch_mixing_new_taken_expired_held_and_repeated_ids(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(DELIVERIES), [
            {"delivery_id": "finished", "expires_at": T0 + TTL, "done": True},
            {"delivery_id": "expired", "expires_at": T0 - timedelta(seconds=1), "done": True},
            {"delivery_id": "held", "expires_at": T0 + timedelta(minutes=1), "done": False},
        ])
    got = take(engine, ["new", "finished", "expired", "held", "new", *AWKWARD])
    assert got == {"new": KeyState.TAKEN, "finished": KeyState.DUPLICATE,
                   "expired": KeyState.TAKEN, "held": KeyState.IN_FLIGHT,
                   **dict.fromkeys(AWKWARD, KeyState.TAKEN)}
    assert take(engine, AWKWARD) == dict.fromkeys(AWKWARD, KeyState.DUPLICATE)


def alert(consumer: str, failure_class: str, seen: datetime) -> Alert:
    return Alert(consumer=consumer, secret="model-api-key", lane="prod",
                 failure_class=failure_class, reason="HTTP 401", first_seen=seen,
                 last_seen=seen, source="http")


def test_counts_are_added_to_each_alert_of_a_batch(uow: Callable[[], SqlUnitOfWork]) -> None:
    with uow() as u:
        ids = [u.alerts.add(alert(f"c{i}", "authentication", T0)).id for i in range(12)]
        u.commit()
    assert None not in ids
    later = T0 + timedelta(minutes=3)
    with uow() as u:
        one = u.alerts.add_counts({ids[0]: 4}, later)  # type: ignore[dict-item]
        assert (one[ids[0]].count, one[ids[0]].last_seen) == (5, later)  # type: ignore[index]
        many = u.alerts.add_counts({i: n for n, i in enumerate(ids, 1)}, T0)  # type: ignore[misc]
        u.commit()
    assert {i: a.count for i, a in many.items()} == {
        i: 1 + n + (4 if i == ids[0] else 0) for n, i in enumerate(ids, 1)}
    # An earlier sighting never moves last_seen back.
    assert many[ids[0]].last_seen == later  # type: ignore[index]
    assert many[ids[1]].last_seen == T0  # type: ignore[index]
    with uow() as u, pytest.raises(RotabotError, match="no alert A-999999"):
        u.alerts.add_counts({ids[0]: 1, 999999: 1}, T0)  # type: ignore[dict-item]


def test_the_latest_alert_of_each_pair_in_the_window(uow: Callable[[], SqlUnitOfWork]) -> None:
    with uow() as u:
        old = u.alerts.add(alert("inference-api", "authentication", T0 - timedelta(hours=2)))
        first = u.alerts.add(alert("inference-api", "authentication", T0))
        newer = u.alerts.add(alert("inference-api", "authentication", T0 + timedelta(minutes=1)))
        other = u.alerts.add(alert("inference-api", "rate-limit", T0))
        odd = [u.alerts.add(alert(name, "network", T0)) for name in AWKWARD]
        u.commit()
    assert old.id and first.id and newer.id and other.id
    with uow() as u:
        got = u.alerts.latest_for_many(
            [("inference-api", "authentication"), ("inference-api", "rate-limit"),
             ("retriever", "authentication"), *((name, "network") for name in AWKWARD),
             ("inference-api", "authentication")],
            since=T0 - timedelta(minutes=30))
        assert {k: a.id for k, a in got.items()} == {
            ("inference-api", "authentication"): newer.id,
            ("inference-api", "rate-limit"): other.id,
            **{(a.consumer, "network"): a.id for a in odd},
        }
        assert u.alerts.latest_for_many([("inference-api", "authentication")],
                                        since=T0 + timedelta(minutes=5)) == {}


def test_a_rotation_changed_by_another_replica_loads_with_its_new_steps(
    database_url: str, uow: Callable[[], SqlUnitOfWork]
) -> None:
    """The steps read at one revision are reused while the revision stays; a change made
    through another engine moves it, and the next load reads the new steps."""
    with uow() as u:
        r = u.rotations.add(Rotation.begin(
            secret="model-api-key", lanes=["prod"],
            consumers=[ConsumerPlan(name=n, lane="prod", owner="U0ALICE", reload="hot")
                       for n in ("inference-api", "batch-scorer")],
            overlap=timedelta(hours=24), observe=timedelta(minutes=30),
            store_path="ai/model-api-key", actor="U0SECOPS", now=T0))
        r.prepared(old_version="3", new_version="4", old_key_id="a", new_key_id="b",
                   actor="U0SECOPS", now=T0)
        u.commit()
    rid = r.id
    assert rid is not None

    def states() -> dict[str, StepState]:
        with uow() as u:
            return {n: c.state for n, c in u.rotations.get(rid).consumers.items()}

    assert set(states().values()) == {StepState.WAITING}
    assert set(states().values()) == {StepState.WAITING}  # read again at the same revision
    replica = make_engine(database_url)
    try:
        with SqlUnitOfWork(replica) as u:
            u.rotations.get(rid).mark_step("batch-scorer", StepState.DISTRIBUTED,
                                           actor="U0ALICE", now=T0)
            u.commit()
    finally:
        replica.dispose()
    assert states() == {"inference-api": StepState.WAITING,
                        "batch-scorer": StepState.DISTRIBUTED}
    with uow() as u:
        u.rotations.get(rid).mark_step("inference-api", StepState.DISTRIBUTED,
                                       actor="U0ALICE", now=T0)
        u.commit()
    assert set(states().values()) == {StepState.DISTRIBUTED}
