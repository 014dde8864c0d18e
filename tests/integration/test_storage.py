"""Storage against real databases: every test runs on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import socket
import threading
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, make_url, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from bot.domain.alert import Alert, AlertStatus
from bot.domain.audit import AuditEvent
from bot.domain.errors import AlreadyActive, ChangedMeanwhile, RotationNotFound, StoreUnavailable
from bot.domain.gate import GateResult
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from storage.audit import SqlAuditLog
from storage.engine import make_engine
from storage.migrate import current_revision, head_revision, upgrade
from storage.tables import metadata, table_names
from storage.unit_of_work import SqlUnitOfWork

# Not UTC on purpose: what goes in with an offset must come back as the same instant, in UTC.
T0 = datetime(2026, 11, 25, 11, 0, tzinfo=timezone(timedelta(hours=2)))

CONSUMERS = (
    ConsumerPlan(name="retriever", lane="dev", owner="U0BOB", reload="restart"),
    ConsumerPlan(name="nightly-ingest", lane="staging", owner="S0DATAENG", reload="restart"),
    ConsumerPlan(name="inference-api", lane="prod", owner="U0ALICE", reload="hot"),
    ConsumerPlan(name="batch-scorer", lane="prod", owner="U0CAROL", reload="staged"),
)
# One lane, so every owner may click at once (lanes otherwise validate in order).
SAME_LANE = tuple(dataclasses.replace(c, lane="prod") for c in CONSUMERS)


@pytest.fixture
def uow(engine: Engine) -> Callable[[], SqlUnitOfWork]:
    return lambda: SqlUnitOfWork(engine)


def new_rotation(
    secret: str = "model-api-key",
    consumers: tuple[ConsumerPlan, ...] = CONSUMERS,
    now: datetime = T0,
) -> Rotation:
    return Rotation.begin(
        secret=secret,
        lanes=["dev", "staging", "prod"],
        consumers=consumers,
        overlap=timedelta(hours=24),
        observe=timedelta(minutes=90, seconds=30),
        store_path=f"ai/{secret}",
        actor="U0SECOPS",
        now=now,
        urgent=True,
        auto_revoke=True,
    )


def stored(
    uow: Callable[[], SqlUnitOfWork],
    secret: str = "model-api-key",
    consumers: tuple[ConsumerPlan, ...] = CONSUMERS,
) -> int:
    """A committed rotation in `distributing`, every consumer waiting; returns its id."""
    with uow() as u:
        r = u.rotations.add(new_rotation(secret, consumers))
        r.prepared(
            old_version="3",
            new_version="4",
            old_key_id="key-a",
            new_key_id="key-b",
            actor="U0SECOPS",
            now=T0 + timedelta(minutes=1),
        )
        u.commit()
        assert r.id is not None
        return r.id


def rotation_fields(r: Rotation) -> dict[str, object]:
    out = {f.name: getattr(r, f.name) for f in dataclasses.fields(r) if f.name != "events"}
    out["consumers"] = {n: dataclasses.asdict(c) for n, c in r.consumers.items()}
    return out


def audit_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one())


def all_validated(r: Rotation) -> None:
    """Lane by lane, as the domain requires: distribute and validate every consumer."""
    for lane in r.lanes:
        for c in r.consumers_in_lane(lane):
            r.mark_step(c.name, StepState.DISTRIBUTED, actor=c.owner, now=T0 + timedelta(hours=1))
            r.mark_step(
                c.name,
                StepState.VALIDATED,
                actor=c.owner,
                now=T0 + timedelta(hours=2),
                note=f"{c.name} healthy on new key",
            )


# --- schema and migrations -------------------------------------------------------------


def test_migrations_apply_from_empty_and_upgrade_is_idempotent(database_url: str) -> None:
    assert current_revision(database_url) is None
    upgrade(database_url)
    head = head_revision()
    assert current_revision(database_url) == head
    upgrade(database_url)  # a second start, or `rotabot db upgrade` run twice
    assert current_revision(database_url) == head
    eng = make_engine(database_url)
    try:
        assert set(table_names()) <= set(inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_one_active_rotation_per_secret_is_enforced_by_the_database(engine: Engine) -> None:
    insert = text(
        "INSERT INTO rotations (secret, phase, lanes, overlap_seconds, observe_seconds,"
        " created_at, started_by, store_path, urgent, auto_revoke, revision)"
        " VALUES (:secret, :phase, '[]', 1, 1, :at, 'U1', 'p', false, false, 0)"
    )
    at = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for phase in ("revoked", "rolled-back", "cancelled", "revoked", "distributing"):
            conn.execute(insert, {"secret": "s", "phase": phase, "at": at})
        conn.execute(insert, {"secret": "other", "phase": "failed", "at": at})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert, {"secret": "s", "phase": "ready-check", "at": at})


# --- rotations -------------------------------------------------------------------------


def test_rotation_round_trips_every_field_with_utc_datetimes(
    uow: Callable[[], SqlUnitOfWork],
) -> None:
    with uow() as u:
        r = u.rotations.add(new_rotation())
        assert r.id is not None and r.ref == f"R-{r.id}"  # known before commit
        r.channel, r.message_ts = "C0ROTATE", "1732525200.000100"
        r.prepared(
            old_version="3",
            new_version="4",
            old_key_id="key-a",
            new_key_id="key-b",
            actor="U0SECOPS",
            now=T0 + timedelta(minutes=1),
        )
        all_validated(r)
        r.switch(actor="U0SECOPS", now=T0 + timedelta(hours=3))
        r.fail(reason="inference-api: 401 invalid_api_key", now=T0 + timedelta(hours=4))
        recorded = list(r.events)
        u.commit()
        assert r.events == [] and r.revision == 1
        expected = rotation_fields(r)

    with uow() as u:
        loaded = u.rotations.get(expected["id"])  # type: ignore[arg-type]
        assert rotation_fields(loaded) == expected
        assert loaded.phase is Phase.FAILED and loaded.failed_from is Phase.OBSERVING
        assert list(loaded.consumers) == [c.name for c in CONSUMERS]  # order kept
        for moment in (
            loaded.created_at,
            loaded.prepared_at,
            loaded.switched_at,
            loaded.observe_until,
            loaded.overlap_until,
            *(c.updated_at for c in loaded.consumers.values()),
        ):
            assert moment is not None and moment.utcoffset() == timedelta(0)
        assert loaded.created_at == T0 and loaded.observe_until == (
            T0 + timedelta(hours=3, minutes=90, seconds=30)
        )
        events = u.audit.for_rotation(loaded.id)  # type: ignore[arg-type]
        assert [(e.action, e.before, e.after, e.consumer) for e in events] == [
            (e.action, e.before, e.after, e.consumer) for e in recorded
        ]
        assert {e.rotation_id for e in events} == {loaded.id}  # filled in for early events
        assert events[0].action == "rotation.started" and events[0].at == T0
        assert events[0].detail == recorded[0].detail
        assert events[-1].reason == "inference-api: 401 invalid_api_key"


def test_unknown_rotation_is_not_found(uow: Callable[[], SqlUnitOfWork]) -> None:
    with uow() as u, pytest.raises(RotationNotFound, match="R-4242"):
        u.rotations.get(4242)


def test_queries_return_the_one_object_per_rotation(uow: Callable[[], SqlUnitOfWork]) -> None:
    first = stored(uow, "model-api-key")
    stored(uow, "cache-password")
    with uow() as u:
        r = u.rotations.get(first)
        r.cancel(actor="U0SECOPS", now=T0 + timedelta(hours=1), reason="vendor outage")
        u.commit()
    second = stored(uow, "model-api-key")  # allowed: the first one is terminal
    with uow() as u:
        got = u.rotations.get(second)
        assert u.rotations.active_for_secret("model-api-key") is got
        assert got in u.rotations.list_active()
        assert {r.secret for r in u.rotations.list_active()} == {"model-api-key", "cache-password"}
        assert [r.id for r in u.rotations.history("model-api-key")] == [second, first]
        assert [r.id for r in u.rotations.history("model-api-key", limit=1)] == [second]
        assert u.rotations.active_for_secret("no-such-secret") is None


def test_leaving_without_commit_writes_nothing(
    uow: Callable[[], SqlUnitOfWork], engine: Engine
) -> None:
    with uow() as u:
        r = u.rotations.add(new_rotation())
        u.audit.append(AuditEvent(at=T0, actor="cli", action="note", secret=r.secret))
    with uow() as u:
        assert u.rotations.history("model-api-key") == []
    assert audit_count(engine) == 0


def test_loading_and_committing_without_a_change_writes_nothing(
    uow: Callable[[], SqlUnitOfWork],
    engine: Engine,
) -> None:
    rid = stored(uow)
    before = audit_count(engine)
    with uow() as u:
        u.rotations.get(rid)
        u.commit()
    with uow() as u:
        r = u.rotations.get(rid)
        assert r.revision == 1
        r.record_refusal(actor="U0EVE", now=T0, action="revoke", why="not an admin")
        u.commit()  # an audit-only change is still a guarded write
        assert r.revision == 2
    assert audit_count(engine) == before + 1


def test_a_failure_after_the_update_leaves_neither_state_nor_audit(
    uow: Callable[[], SqlUnitOfWork],
    engine: Engine,
) -> None:
    rid = stored(uow)
    before = audit_count(engine)
    with uow() as u:
        r = u.rotations.get(rid)
        r.mark_step("retriever", StepState.DISTRIBUTED, actor="U0BOB", now=T0)
        r.channel = "C0OTHER"
        # Written after the rotation's UPDATE and its own events: this row violates the
        # foreign key, so the database fails the commit half-way through.
        u.audit.append(
            AuditEvent(at=T0, actor="U0BOB", action="note", secret=r.secret, rotation_id=987654)
        )
        with pytest.raises(IntegrityError):
            u.commit()
    with uow() as u:
        r = u.rotations.get(rid)
        assert r.revision == 1
        assert r.consumers["retriever"].state is StepState.WAITING and r.channel is None
    assert audit_count(engine) == before


def test_credential_labels_follow_the_phase(uow: Callable[[], SqlUnitOfWork]) -> None:
    def labels(u: SqlUnitOfWork, rid: int) -> dict[str, tuple[str | None, str]]:
        return {v.version: (v.key_id, v.label) for v in u.credential_versions(rid)}

    rid = stored(uow)
    other = stored(uow, "cache-password")
    with uow() as u:
        assert labels(u, rid) == {"4": ("key-b", "pending"), "3": ("key-a", "current")}
        assert {v.store_path for v in u.credential_versions(rid)} == {"ai/model-api-key"}
        r = u.rotations.get(rid)
        all_validated(r)
        r.switch(actor="U0SECOPS", now=T0 + timedelta(hours=3))
        u.rotations.get(other).rollback(actor="U0SECOPS", now=T0, reason="auth errors")
        u.commit()
    with uow() as u:
        assert labels(u, rid) == {"4": ("key-b", "current"), "3": ("key-a", "previous")}
        assert labels(u, other) == {"4": ("key-b", "revoked"), "3": ("key-a", "current")}
        r = u.rotations.get(rid)
        for c in r.consumers_in_order():
            r.mark_step(c.name, StepState.SIGNED_OFF, actor=c.owner, now=T0 + timedelta(hours=4))
        r.revoke(GateResult(unmet=()), actor="U0SECOPS", now=T0 + timedelta(hours=6))
        u.commit()
    with uow() as u:
        assert labels(u, rid) == {"4": ("key-b", "current"), "3": ("key-a", "revoked")}


# --- concurrency -----------------------------------------------------------------------


def test_two_writers_first_wins_second_changed_meanwhile_nothing_lost(
    uow: Callable[[], SqlUnitOfWork],
    engine: Engine,
) -> None:
    rid = stored(uow, consumers=SAME_LANE)
    before = audit_count(engine)
    with uow() as first, uow() as second:
        a = first.rotations.get(rid)
        b = second.rotations.get(rid)
        a.mark_step("retriever", StepState.DISTRIBUTED, actor="U0BOB", now=T0)
        b.mark_step("nightly-ingest", StepState.DISTRIBUTED, actor="U0DANA", now=T0)
        first.commit()
        with pytest.raises(ChangedMeanwhile, match=f"R-{rid} was changed by someone else"):
            second.commit()
    with uow() as u:
        r = u.rotations.get(rid)
        assert r.revision == 2
        assert r.consumers["retriever"].state is StepState.DISTRIBUTED
        assert r.consumers["nightly-ingest"].state is StepState.WAITING  # the loser wrote nothing
        assert [e.consumer for e in u.audit.for_rotation(rid) if e.action == "step"] == [
            "retriever"
        ]
        assert audit_count(engine) == before + 1
        # Reload and reapply: both steps are kept.
        r.mark_step("nightly-ingest", StepState.DISTRIBUTED, actor="U0DANA", now=T0)
        u.commit()
    with uow() as u:
        r = u.rotations.get(rid)
        assert r.revision == 3
        assert {n: c.state for n, c in r.consumers.items()} == {
            "retriever": StepState.DISTRIBUTED,
            "nightly-ingest": StepState.DISTRIBUTED,
            "inference-api": StepState.WAITING,
            "batch-scorer": StepState.WAITING,
        }
        assert [e.consumer for e in u.audit.for_rotation(rid) if e.action == "step"] == [
            "retriever",
            "nightly-ingest",
        ]


def test_concurrent_writers_in_threads_exactly_one_wins_each_round_none_lost(
    uow: Callable[[], SqlUnitOfWork],
) -> None:
    rid = stored(uow, consumers=SAME_LANE)
    names = [c.name for c in SAME_LANE]
    loaded = threading.Barrier(len(names))
    first_round: dict[str, str] = {}
    errors: list[BaseException] = []

    def owner_clicks(name: str) -> None:
        try:
            for attempt in range(50):
                with uow() as u:
                    r = u.rotations.get(rid)
                    if attempt == 0:
                        loaded.wait(timeout=60)  # everyone has read the same revision
                    r.mark_step(name, StepState.DISTRIBUTED, actor="U0X", now=T0)
                    try:
                        u.commit()
                    except ChangedMeanwhile:
                        if attempt == 0:
                            first_round[name] = "changed"
                        continue
                    if attempt == 0:
                        first_round[name] = "won"
                    return
            raise AssertionError(f"{name} never got its write in")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=owner_clicks, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(first_round.values()) == ["changed"] * (len(names) - 1) + ["won"]
    with uow() as u:
        r = u.rotations.get(rid)
        assert all(c.state is StepState.DISTRIBUTED for c in r.consumers.values())
        assert r.phase is Phase.VALIDATING  # the last write moved the phase on
        steps = [e.consumer for e in u.audit.for_rotation(rid) if e.action == "step"]
        assert sorted(steps) == sorted(names)  # each click once: none lost, none doubled


def test_second_active_rotation_for_a_secret_is_already_active(
    uow: Callable[[], SqlUnitOfWork],
) -> None:
    rid = stored(uow)
    with uow() as u, pytest.raises(AlreadyActive, match=f"in R-{rid}"):
        u.rotations.add(new_rotation())


def test_racing_starts_one_wins_the_other_is_already_active(
    uow: Callable[[], SqlUnitOfWork],
) -> None:
    ready = threading.Barrier(2)
    results: list[tuple[str, object]] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            with uow() as u:
                ready.wait(timeout=60)
                r = u.rotations.add(new_rotation())
                u.commit()
                outcome: tuple[str, object] = ("won", r.id)
        except AlreadyActive as exc:
            outcome = ("already", exc.rotation_ref)
        except BaseException as exc:
            outcome = ("error", exc)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(kind for kind, _ in results) == ["already", "won"], results
    winner = next(v for k, v in results if k == "won")
    assert next(v for k, v in results if k == "already") == f"R-{winner}"
    with uow() as u:
        assert len(u.rotations.list_active()) == 1


@pytest.mark.postgres
def test_start_that_loses_at_the_unique_index_is_already_active(postgres_url: str) -> None:
    """The index, not the pre-check, decides: B checks before A commits, then waits on A's
    uncommitted row. (PostgreSQL only: SQLite serializes writers, so that moment cannot be
    observed from outside; the racing test above covers SQLite's outcome.)"""
    upgrade(postgres_url)
    eng = make_engine(postgres_url)
    outcome: list[object] = []

    def second_start() -> None:
        try:
            with SqlUnitOfWork(eng) as u:
                u.rotations.add(new_rotation())
                u.commit()
                outcome.append("won")
        except BaseException as exc:
            outcome.append(exc)

    try:
        with SqlUnitOfWork(eng) as first:
            r = first.rotations.add(new_rotation())
            racer = threading.Thread(target=second_start)
            racer.start()
            with eng.connect() as watch:
                while not watch.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                ).scalar_one():
                    watch.rollback()  # statistics are a snapshot per transaction
                    racer.join(timeout=0.05)
                    assert racer.is_alive(), outcome
            first.commit()
        racer.join(timeout=60)
        assert len(outcome) == 1 and isinstance(outcome[0], AlreadyActive), outcome
        assert outcome[0].rotation_ref == r.ref
    finally:
        eng.dispose()


# --- audit -----------------------------------------------------------------------------


def test_audit_rows_cannot_be_updated_or_deleted(
    uow: Callable[[], SqlUnitOfWork], engine: Engine
) -> None:
    stored(uow)
    count = audit_count(engine)
    assert count > 0
    refused = ["UPDATE audit_events SET actor = 'U0MALLORY'", "DELETE FROM audit_events"]
    if engine.dialect.name == "postgresql":
        refused.append("TRUNCATE audit_events")
    for statement in refused:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert audit_count(engine) == count
    # Nor does the code offer a way to change the log.
    public = {n for n in dir(SqlAuditLog) if not n.startswith("_")}
    assert not {n for n in public if any(w in n for w in ("update", "delete", "remove"))}
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM audit_events WHERE actor = 'U0MALLORY'")
            ).scalar_one()
            == 0
        )


def test_audit_export_since_a_date_in_order(uow: Callable[[], SqlUnitOfWork]) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    # Written out of time order, with many events sharing a timestamp, and more than one
    # export batch of them, so ordering and paging are both exercised.
    moments = [base + timedelta(hours=(i * 7) % 13) for i in range(1234)]
    with uow() as u:
        for i, at in enumerate(moments):
            u.audit.append(
                AuditEvent(
                    at=at,
                    actor="rotabot",
                    action="tick",
                    secret="s" if i % 2 else "t",
                    detail={"i": str(i)},
                )
            )
        u.commit()
    since = base + timedelta(hours=5)
    with uow() as u:
        exported = list(u.audit.export(since=since))
        everything = list(u.audit.export())
        latest = u.audit.for_secret("s", limit=3)
    expected = sorted(
        ((at, i) for i, at in enumerate(moments) if at >= since), key=lambda p: (p[0], p[1])
    )
    assert [(e.at, int(e.detail["i"])) for e in exported] == expected
    assert len(everything) == len(moments)
    assert all(e.at.utcoffset() == timedelta(0) for e in exported)
    assert [int(e.detail["i"]) for e in latest] == [1233, 1231, 1229]  # newest first


# --- alerts ----------------------------------------------------------------------------


def test_alerts_add_get_save_and_queries(uow: Callable[[], SqlUnitOfWork]) -> None:
    rid = stored(uow)

    def alert(
        consumer: str,
        failure_class: str,
        seen: datetime,
        secret: str = "model-api-key",
        status: AlertStatus = AlertStatus.OPEN,
    ) -> Alert:
        return Alert(
            consumer=consumer,
            secret=secret,
            lane="prod",
            failure_class=failure_class,
            reason="HTTP 401 invalid_api_key",
            first_seen=seen,
            last_seen=seen,
            source="inference-api",
            rotation_id=rid,
            phase_at_alert="distributing",
            began_during_rotation=True,
            status=status,
            channel="C0INCIDENT",
            message_ts="1732525200.000200",
        )

    with uow() as u:
        a1 = u.alerts.add(alert("inference-api", "authentication", T0))
        a2 = u.alerts.add(alert("inference-api", "authentication", T0 + timedelta(minutes=5)))
        a3 = u.alerts.add(alert("inference-api", "rate-limit", T0 + timedelta(minutes=6)))
        a4 = u.alerts.add(
            alert(
                "retriever",
                "network",
                T0 + timedelta(minutes=7),
                secret="cache-password",
                status=AlertStatus.RESOLVED,
            )
        )
        assert None not in (a1.id, a2.id, a3.id, a4.id)
        u.commit()

    with uow() as u:
        got = u.alerts.get(a2.id)  # type: ignore[arg-type]
        assert got == a2 and got.last_seen.utcoffset() == timedelta(0)
        latest = u.alerts.latest_for("inference-api", "authentication", since=T0)
        assert latest is not None and latest.id == a2.id
        assert (
            u.alerts.latest_for("inference-api", "authentication", since=T0 + timedelta(minutes=10))
            is None
        )
        assert u.alerts.latest_for("retriever", "authentication", since=T0) is None
        assert latest.id is not None
        counted = u.alerts.add_count(latest.id, 2, T0 + timedelta(minutes=20))
        assert (counted.count, counted.last_seen) == (latest.count + 2, T0 + timedelta(minutes=20))
        # An earlier sighting never moves last_seen back.
        assert u.alerts.add_count(latest.id, 1, T0).last_seen == T0 + timedelta(minutes=20)
        u.commit()
    # A save from a read taken before those counts were added (a click rendering the alert
    # meanwhile) changes what it means to change and never takes the counts back.
    latest.status = AlertStatus.NOT_RELATED
    latest.resolved_by = "U0ALICE"
    with uow() as u:
        u.alerts.save(latest)
        u.commit()
    latest.count += 3
    latest.last_seen = T0 + timedelta(minutes=20)

    with uow() as u:
        assert u.alerts.get(a2.id) == latest  # type: ignore[arg-type]
        assert [a.id for a in u.alerts.for_secret("model-api-key")] == [a2.id, a3.id, a1.id]
        assert [a.id for a in u.alerts.for_secret("model-api-key", unresolved_only=True)] == [
            a3.id,
            a1.id,
        ]
        assert [
            a.id for a in u.alerts.for_secret("model-api-key", since=T0 + timedelta(minutes=6))
        ] == [a2.id, a3.id]
        assert [a.id for a in u.alerts.recent(limit=2)] == [a2.id, a4.id]


# --- a database that is down -------------------------------------------------------------

CANARY = "canary-PW-3f9a1c"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def unreachable_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    if request.param == "sqlite":
        yield "sqlite:////nonexistent-rotabot-dir/sub/rotabot.db"
        return
    # A bound port nobody listens on refuses connections, and nobody else can take it meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"postgresql+psycopg://rotabot:{CANARY}@127.0.0.1:{port}/rotabot"


def test_a_database_that_is_down_is_store_unavailable_without_the_password(
    unreachable_url: str,
) -> None:
    failures: list[StoreUnavailable] = []
    for attempt in (
        lambda: SqlUnitOfWork(make_engine(unreachable_url)).__enter__(),
        lambda: upgrade(unreachable_url),
        lambda: current_revision(unreachable_url),
    ):
        with pytest.raises(StoreUnavailable) as caught:
            attempt()
        failures.append(caught.value)
    for exc in failures:
        message = str(exc)
        shown = "".join(traceback.format_exception(exc))
        assert CANARY not in shown
        if unreachable_url.startswith("postgresql"):
            port = unreachable_url.rsplit(":", 1)[1].split("/")[0]
            assert f"127.0.0.1:{port}" in message
            assert "rotabot:***@" in message and "PostgreSQL is running" in message
        else:
            assert "/nonexistent-rotabot-dir/sub/rotabot.db" in message


@pytest.mark.postgres
def test_a_connection_lost_mid_transaction_is_store_unavailable(postgres_url: str) -> None:
    """(PostgreSQL only: a SQLite file cannot go away under an open connection.)"""
    upgrade(postgres_url)
    eng = make_engine(postgres_url)
    password = make_url(postgres_url).password
    assert password
    try:
        with SqlUnitOfWork(eng) as u:
            r = u.rotations.add(new_rotation())
            with eng.connect() as admin:
                admin.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                admin.commit()
            with pytest.raises(StoreUnavailable, match="cannot be reached") as caught:
                u.rotations.history(r.secret)
            assert password not in "".join(traceback.format_exception(caught.value))
        with SqlUnitOfWork(eng) as u:  # the pool replaces the dead connection
            assert u.rotations.history(r.secret) == []  # the insert died with its transaction
    finally:
        eng.dispose()
