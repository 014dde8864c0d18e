"""Timers by moving a FixedClock: real SQLite/PostgreSQL, the Slack stand-in, a real WebClient.

Covers: the window turning revocable exactly once, auto_revoke, the gate-blocked notice, owner
reminders and escalation, the overlap warning, a deadline that passed while the bot was down,
two replicas on one PostgreSQL over 50 rotations, and leader takeover.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from harness.backends import LocalBackends
from harness.serve import catalog_head
from sqlalchemy import func, select, text

from bot.domain.clock import FixedClock
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import Rotation
from bot.runtime.bootstrap import Container, build
from bot.runtime.server import start_scheduler
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.services.timers import NoticeSender, TimerWork
from storage.leader import AlwaysLeader, PostgresLeader, leader_for
from storage.sql_common import AUDIT, REMINDERS

SIGNING_SECRET = "0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

CATALOG = catalog_head(observe="2h", admins=("U0SECOPS",)) + """\
  remind_after: 30m
  escalate_after: 2h
stores:
  files: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: restart}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot}
  cache-password:
    issuer: {kind: manual}
    store: {name: files, path: infra/cache}
    auto_revoke: true
    consumers:
      cache-warmer: {owner: U0BOB, lane: dev, reload: hot}
"""


def many_secrets(n: int) -> str:
    lines = [f"""\
  bulk-{i:02d}:
    issuer: {{kind: manual}}
    store: {{name: files, path: bulk/{i:02d}}}
    consumers:
      worker-{i:02d}: {{owner: U0BOB, lane: dev, reload: hot}}
""" for i in range(n)]
    return "".join(lines)


class RecordedNotices:
    """A NoticeSender that hands each notice on to a replica's notifier and keeps what it
    sent, so a test can tell which replica sent which notice."""

    def __init__(self, inner: NoticeSender) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str]] = []  # (where: a user id or the rotation ref, text)

    def direct_message(self, user: str, text: str) -> str:
        ts = self.inner.direct_message(user, text)
        self.sent.append((user, text))
        return ts

    def thread_note(self, rotation: Rotation, text: str) -> str | None:
        ts = self.inner.thread_note(rotation, text)
        self.sent.append((rotation.ref, text))
        return ts


class World:
    def __init__(
        self, state: StandinState, clock: FixedClock, make: Callable[[], Container]
    ) -> None:
        self.state, self.clock, self._make = state, clock, make
        self.containers: list[Container] = []
        self.c = self.replica()
        self.timers = self.c.timers

    def replica(self) -> Container:
        """Another process on the same database, catalog and Slack (same clock)."""
        c = self._make()
        self.containers.append(c)
        return c

    def to_observing(
        self, secret: str, *, sign_off: bool = True, c: Container | None = None
    ) -> int:
        svc = (c or self.c).service
        rotation = svc.start(secret, actor="U0SECOPS")
        assert rotation.id is not None and rotation.phase is Phase.DISTRIBUTING
        for con in rotation.consumers_in_order():
            svc.step(rotation.id, con.name, StepState.DISTRIBUTED, actor=con.owner)
            svc.step(rotation.id, con.name, StepState.VALIDATED, actor=con.owner)
        svc.switch(rotation.id, actor="U0SECOPS")
        if sign_off:
            self.sign_off(rotation.id, c)
        assert svc.get(rotation.id).phase is Phase.OBSERVING
        return rotation.id

    def sign_off(self, rid: int, c: Container | None = None) -> None:
        svc = (c or self.c).service
        for con in svc.get(rid).consumers_in_order():
            svc.step(rid, con.name, StepState.SIGNED_OFF, actor=con.owner)

    def phase(self, rid: int) -> Phase:
        return self.c.service.get(rid).phase

    def transitions(self, rid: int, after: str) -> int:
        with self.c.engine.connect() as conn:
            stmt = select(func.count()).select_from(AUDIT).where(
                AUDIT.c.rotation_id == rid, AUDIT.c.action == "phase", AUDIT.c.after == after
            )
            return int(conn.execute(stmt).scalar_one())

    def windows_closed_by_timer(self) -> list[int]:
        """Rotation ids, once per move, that a timer took from observing to revocable."""
        with self.c.engine.connect() as conn:
            stmt = select(AUDIT.c.rotation_id).where(
                AUDIT.c.action == "phase",
                AUDIT.c.before == Phase.OBSERVING.value,
                AUDIT.c.after == Phase.REVOCABLE.value,
                AUDIT.c.actor == "rotabot",
            ).order_by(AUDIT.c.rotation_id, AUDIT.c.id)
            return [int(rid) for rid in conn.execute(stmt).scalars()]

    def thread_texts(self, rid: int, needle: str) -> list[str]:
        ts = self.c.service.get(rid).message_ts
        assert ts is not None
        return [m.text for m in self.state.thread("C0ROTATE", ts) if needle in m.text]

    def dms(self, needle: str) -> list[dict[str, Any]]:
        return [
            c.args
            for c in self.state.calls_to("chat.postMessage")
            if str(c.args.get("channel", "")).startswith("D") and needle in str(c.args["text"])
        ]

    def flush(self) -> None:
        for c in self.containers:
            c.notifier.flush()


# Slack's rate limits are not these tests' subject (tests/e2e/test_slack_budget.py is): they
# stay enforced, on both sides, but a Slack minute passes in 60 ms of this clock, so 50
# rotations' worth of posts in one channel do not wait out Slack's pace in real time.
SLACK_TIME_SCALE = 1000.0


def make_world(database_url: str, tmp_path: Path, catalog: str) -> Iterator[World]:
    state = StandinState(clock=lambda: time.monotonic() * SLACK_TIME_SCALE)
    for user in ("U0SECOPS", "U0ALICE", "U0BOB", "U0CAROL"):
        state.add_user(user, user.lower())
    state.add_channel("C0ROTATE", "rotations", members=["U0SECOPS"])
    state.add_channel("C0INCIDENT", "incidents", members=["U0SECOPS"])
    path = tmp_path / "catalog.yml"
    path.write_text(catalog)
    clock = FixedClock(T0)
    backends = LocalBackends(tmp_path / "s")
    with StandinServer(state) as server:
        settings = Settings(
            catalog_path=str(path),
            database_url=database_url,
            slack_api_url=server.base_url,
            slack_bot_token="xoxb-test",
            slack_signing_secret=SIGNING_SECRET,
        )

        def make() -> Container:
            return build(settings, clock=clock, migrate=True, backends=backends,
                         slack_clock=lambda: time.time() * SLACK_TIME_SCALE)

        w = World(state, clock, make)
        try:
            yield w
            w.flush()
            assert state.violations == []  # every Slack call was well-formed
        finally:
            for c in w.containers:
                leader = c.leader
                if isinstance(leader, PostgresLeader):
                    leader.close()
                c.engine.dispose()


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    yield from make_world(database_url, tmp_path, CATALOG)


# --- the observation window ---------------------------------------------------------


def test_window_end_makes_the_rotation_revocable_exactly_once(world: World) -> None:
    rid = world.to_observing("model-api-key")
    world.clock.advance(timedelta(hours=1, minutes=59))
    world.timers.run_once()
    assert world.phase(rid) is Phase.OBSERVING  # not a second early

    world.clock.advance(timedelta(minutes=1))
    for _ in range(3):
        world.timers.run_once()
    world.flush()

    assert world.phase(rid) is Phase.REVOCABLE
    assert world.transitions(rid, "revocable") == 1
    (ready,) = world.thread_texts(rid, "ready to revoke")
    assert "<@U0SECOPS>" in ready
    # The parent message now offers Revoke.
    parent = world.state.find_message("C0ROTATE", world.c.service.get(rid).message_ts or "")
    assert parent is not None and "Revoke" in str(parent.blocks)


def test_timers_of_a_replica_on_an_older_catalog_wait_until_it_is_reloaded(
    world: World, tmp_path: Path
) -> None:
    rid = world.to_observing("model-api-key")
    world.c.catalog_keeper.announce()
    # Another replica loads an edited catalog (a comment is enough to change its hash).
    other = world.replica()
    catalog = Path(world.c.settings.catalog_path)
    catalog.write_text(catalog.read_text() + "# edited\n")
    world.clock.advance(timedelta(hours=2, seconds=1))
    assert other.catalog_keeper.reload(actor="U0SECOPS").applied

    # The window is over, but this replica's catalog is not the newest: nothing fires.
    world.timers.run_once()
    assert world.phase(rid) is Phase.OBSERVING
    assert world.c.catalog_keeper.reload(actor="U0SECOPS").applied
    world.timers.run_once()
    assert world.phase(rid) is Phase.REVOCABLE
    assert world.transitions(rid, "revocable") == 1


def test_auto_revoke_revokes_once_when_the_gate_opens(world: World) -> None:
    rid = world.to_observing("cache-password")
    world.clock.advance(timedelta(hours=2, seconds=1))
    for _ in range(3):
        world.timers.run_once()
    world.flush()
    assert world.phase(rid) is Phase.REVOKED
    assert world.transitions(rid, "revocable") == 1
    assert world.transitions(rid, "revoked") == 1
    assert world.thread_texts(rid, "ready to revoke") == []  # nobody has to click


def test_a_deadline_that_passed_while_down_runs_once_at_the_first_tick(
    world: World,
) -> None:
    rid = world.to_observing("model-api-key")
    # The bot goes down (its scheduler never ran); the window ends hours before it restarts.
    world.c.engine.dispose()
    world.clock.advance(timedelta(hours=7))
    restarted = world.replica()
    work = restarted.timers
    # A one-hour interval: only the immediate first run can fire it in this test.
    scheduler: Any = start_scheduler(work, interval_seconds=3600)
    try:
        deadline = time.monotonic() + 20
        while world.phase(rid) is not Phase.REVOCABLE and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scheduler.shutdown(wait=True)
    assert world.phase(rid) is Phase.REVOCABLE
    # The restarted replica's timer closed the window (no other timer ran), once.
    assert world.windows_closed_by_timer() == [rid]
    work.run_once()
    assert world.transitions(rid, "revocable") == 1
    assert world.windows_closed_by_timer() == [rid]


def test_a_closed_gate_says_what_is_missing_once_then_opens(world: World) -> None:
    rid = world.to_observing("model-api-key", sign_off=False)
    world.clock.advance(timedelta(hours=2))
    for _ in range(3):
        world.timers.run_once()
    world.flush()
    assert world.phase(rid) is Phase.OBSERVING
    (blocked,) = world.thread_texts(rid, "cannot be revoked yet")
    assert "inference-api (prod) has not signed off" in blocked
    assert "<@U0ALICE>" in blocked and "<@U0SECOPS>" in blocked

    world.sign_off(rid)
    world.timers.run_once()
    world.timers.run_once()
    world.flush()
    assert world.phase(rid) is Phase.REVOCABLE
    assert len(world.thread_texts(rid, "cannot be revoked yet")) == 1
    assert len(world.thread_texts(rid, "ready to revoke")) == 1


# --- reminders, escalation, overlap warning ------------------------------------------


def test_owner_is_reminded_once_then_escalated_once(world: World) -> None:
    rotation = world.c.service.start("model-api-key", actor="U0SECOPS")
    rid = rotation.id
    assert rid is not None
    world.clock.advance(timedelta(minutes=29))
    world.timers.run_once()
    assert world.dms("Reminder") == []

    world.clock.advance(timedelta(minutes=1))
    for _ in range(3):
        world.timers.run_once()
    (dm,) = world.dms("Reminder")
    assert "`retriever`" in str(dm["text"]) and "Distributed" in str(dm["text"])
    assert len(world.state.calls_to("conversations.open")) == 1
    assert world.thread_texts(rid, "please follow up") == []

    world.clock.advance(timedelta(hours=1, minutes=30))  # 2h after the turn began
    for _ in range(3):
        world.timers.run_once()
    world.flush()
    (escalation,) = world.thread_texts(rid, "please follow up")
    assert "`retriever`" in escalation and "<@U0BOB>" in escalation
    assert "<@U0SECOPS>, please follow up" in escalation
    assert "has not confirmed *Distributed*" in escalation
    assert len(world.dms("Reminder")) == 1

    # Doing the step starts the next one's clock: a new reminder, once, 30m later.
    world.c.service.step(rid, "retriever", StepState.DISTRIBUTED, actor="U0BOB")
    world.clock.advance(timedelta(minutes=31))
    world.timers.run_once()
    world.timers.run_once()
    assert [d for d in world.dms("Reminder") if "Validated" in str(d["text"])] != []
    assert len(world.dms("Reminder")) == 2
    with world.c.engine.connect() as conn:
        rows = conn.execute(select(REMINDERS.c.consumer, REMINDERS.c.kind)).all()
    # (Other notices share the table, e.g. the notifier's own post claims.)
    ours = ("remind:", "escalate:")
    assert sorted((r.consumer, r.kind) for r in rows if r.kind.startswith(ours)) == [
        ("retriever", "escalate:distributed"),
        ("retriever", "remind:distributed"),
        ("retriever", "remind:validated"),
    ]


def test_overlap_deadline_warning_lists_consumers_not_validated(world: World) -> None:
    rotation = world.c.service.start("model-api-key", actor="U0SECOPS")
    rid = rotation.id
    assert rid is not None
    svc = world.c.service
    svc.step(rid, "retriever", StepState.DISTRIBUTED, actor="U0BOB")
    svc.step(rid, "retriever", StepState.VALIDATED, actor="U0BOB")
    # 24h overlap: the warning comes 2h before the end (25% would be 6h; 2h is smaller).
    world.clock.advance(timedelta(hours=21, minutes=59))
    world.timers.run_once()
    world.flush()
    assert world.thread_texts(rid, "overlap ends") == []
    world.clock.advance(timedelta(minutes=1))
    world.timers.run_once()
    world.timers.run_once()
    world.flush()
    (warning,) = world.thread_texts(rid, "overlap ends")
    assert "`inference-api` (prod, <@U0ALICE>)" in warning
    assert "retriever" not in warning
    assert "<@U0SECOPS>" in warning


# --- replicas --------------------------------------------------------------------------


@pytest.fixture
def bulk_world(postgres_url: str, tmp_path: Path) -> Iterator[World]:
    yield from make_world(postgres_url, tmp_path, CATALOG + many_secrets(50))


@pytest.mark.postgres
@pytest.mark.parametrize("election", ["advisory-lock", "none"])
def test_two_replicas_fire_every_timer_exactly_once_over_50_rotations(
    bulk_world: World, election: str
) -> None:
    """With the lock one replica does the work; with none (both always leader) the
    revision guard and the reminders table still let every timer fire exactly once."""
    w = bulk_world
    signed = [w.to_observing(f"bulk-{i:02d}") for i in range(25)]
    unsigned = [w.to_observing(f"bulk-{i:02d}", sign_off=False) for i in range(25, 50)]
    replicas = [w.c, w.replica()]
    works: list[TimerWork] = []
    notices: list[RecordedNotices] = []
    for c in replicas:
        work = c.timers
        if election == "none":
            work.is_leader = AlwaysLeader().is_leader
        assert work.notices is not None
        work.notices = RecordedNotices(work.notices)
        notices.append(work.notices)
        works.append(work)
    w.state.clear_log()
    # Past the window and past remind_after and escalate_after for the missing sign-offs.
    w.clock.advance(timedelta(hours=4))

    errors: list[BaseException] = []
    actions = [0] * len(works)  # what each replica's run_once said it did
    start = threading.Barrier(len(works))

    def loop(i: int, work: TimerWork) -> None:
        try:
            start.wait()
            for _ in range(4):
                actions[i] += work.run_once()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(i, work)) for i, work in enumerate(works)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    w.flush()
    assert errors == []

    for rid in signed:
        assert w.phase(rid) is Phase.REVOCABLE
        assert w.transitions(rid, "revocable") == 1
        assert len(w.thread_texts(rid, "ready to revoke")) == 1
    for rid in unsigned:
        assert w.phase(rid) is Phase.OBSERVING
        assert len(w.thread_texts(rid, "cannot be revoked yet")) == 1
        assert len(w.thread_texts(rid, "has not signed off for")) == 1
    # One sign-off reminder DM per unsigned rotation, no more.
    assert len(w.dms("Reminder")) == 25
    # Every signed rotation's window was closed by a timer exactly once, no unsigned one's.
    assert w.windows_closed_by_timer() == sorted(signed)
    if election == "advisory-lock":
        # One replica did everything; the other never ran a timer.
        assert sorted(len(n.sent) for n in notices) == [0, 25 * 4]
        idle = 0 if not notices[0].sent else 1
        assert actions[idle] == 0
        # The leader's count covers every window it closed and every notice it sent.
        assert actions[1 - idle] >= 25 + 25 * 4


@pytest.mark.postgres
def test_another_replica_takes_over_within_seconds_when_the_leader_dies(
    postgres_url: str,
) -> None:
    a, b = PostgresLeader(postgres_url), PostgresLeader(postgres_url)
    assert isinstance(leader_for(postgres_url), PostgresLeader)
    try:
        assert a.is_leader()
        assert not b.is_leader()
        assert a.is_leader()  # re-checking keeps it

        # The leader's process dies: its session ends and PostgreSQL drops the lock.
        admin = PostgresLeader(postgres_url, key=1)
        assert admin.is_leader()
        assert admin._conn is not None and a._conn is not None
        pid = a._conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin._conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.close()
        died = time.monotonic()
        deadline = died + 10
        while not b.is_leader() and time.monotonic() < deadline:
            time.sleep(0.05)
        took = time.monotonic() - died
        assert b.is_leader(), "no replica took over"
        print(f"leader takeover after {took:.3f}s")
        assert not a.is_leader()  # the dead session's owner notices and stays follower
        b.close()
        assert a.is_leader()  # and takes over in turn when b goes away
    finally:
        a.close()
        b.close()
