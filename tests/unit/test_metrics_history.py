"""/metrics history families on a real SQLite store: phases and their start, last switches,
alert counters by catalog labels, health checks, the timer heartbeat; never a value."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from bot.catalog import parse_catalog
from bot.domain.alert import Alert, AlertStatus
from bot.domain.failures import FailureClass
from bot.domain.lifecycle import StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.runtime.metrics import (
    SqlStoreReads,
    StateCollector,
    TimerHeartbeat,
    metrics_registry,
    render,
)
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.unit_of_work import SqlUnitOfWork

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
CANARY = "canary-" + secrets.token_hex(12)
CONSUMERS = [
    ConsumerPlan("web", "prod", "U0WEB", "hot"),
    ConsumerPlan("api", "dev", "U0API", "hot"),
]
CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  admins: [U0ADMIN]
  lanes: [dev, prod]
stores:
  local: {kind: file, path: /tmp/rotabot-unused}
secrets:
  a-key:
    issuer: {kind: manual}
    store: {name: local, path: a}
    consumers:
      web: {owner: U0WEB, lane: prod, reload: hot}
      api: {owner: U0API, lane: dev, reload: hot}
"""

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'rotabot.db'}"
    upgrade(url)
    eng = make_engine(url)
    yield eng
    eng.dispose()


def begin(secret: str, now: datetime) -> Rotation:
    r = Rotation.begin(secret=secret, lanes=("dev", "prod"), consumers=CONSUMERS,
                       overlap=timedelta(hours=24), observe=timedelta(hours=2),
                       store_path=f"kv/{secret}", actor="U0ADMIN", now=now)
    r.prepared(old_version="1", new_version="2", old_key_id=None, new_key_id=None,
               actor="U0ADMIN", now=now + HOUR)
    return r


def switched(secret: str, now: datetime) -> Rotation:
    """Prepared at now+1h, every consumer validated at now+2h, switched at now+3h."""
    r = begin(secret, now)
    for name in ("api", "web"):
        for target in (StepState.DISTRIBUTED, StepState.VALIDATED):
            assert r.mark_step(name, target, actor="U", now=now + 2 * HOUR)
    r.switch(actor="U0ADMIN", now=now + 3 * HOUR)
    return r


def health(r: Rotation, consumer: str, ok: bool, at: datetime) -> None:
    detail = {"consumer": consumer, "ok": "yes" if ok else "no"}
    if not ok:
        detail["failure_class"] = "authentication"
    # A reason that (wrongly) carries a value: it must never reach a label or a sample.
    r.record_note(actor="U", now=at, action="health.checked", reason=f"got {CANARY}",
                  detail=detail)


def alert(consumer: str, lane: str, failure_class: str, status: AlertStatus,
          count: int = 1) -> Alert:
    return Alert(consumer=consumer, secret="a-key", lane=lane, failure_class=failure_class,
                 reason=f"HTTP 401 for {CANARY}", first_seen=T0, last_seen=T0, status=status,
                 count=count, source=CANARY)


def store(engine: Engine, *rotations: Rotation, alerts: tuple[Alert, ...] = ()) -> None:
    with SqlUnitOfWork(engine) as uow:
        for r in rotations:
            uow.rotations.add(r)
        for a in alerts:
            uow.alerts.add(a)
        uow.commit()


def active(engine: Engine) -> list[Rotation]:
    with SqlUnitOfWork(engine) as uow:
        return uow.rotations.list_active()


def recent(engine: Engine, limit: int) -> list[Alert]:
    with SqlUnitOfWork(engine) as uow:
        return uow.alerts.recent(limit)


def scrape(engine: Engine, catalog: bool = True) -> tuple[str, Samples]:
    registry = metrics_registry(
        active=lambda: active(engine), recent_alerts=lambda n: recent(engine, n),
        store=SqlStoreReads(engine), catalog=parse_catalog(CATALOG) if catalog else None)
    text = render(registry)[0].decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return text, out


def test_phases_switches_alerts_and_health_from_the_store(engine: Engine) -> None:
    old = switched("a-key", T0 - 48 * HOUR)  # switched at T0-45h, then revoked: finished
    old.revoke(_Open(), actor="U0ADMIN", now=T0 - 40 * HOUR)
    observing = switched("a-key", T0)  # switched (and observing) since T0+3h
    health(observing, "web", False, T0 + 2 * HOUR)
    health(observing, "web", True, T0 + 2 * HOUR)
    health(observing, "api", True, T0 + 2 * HOUR)
    waiting = begin("b-key", T0)  # distributing since T0+1h
    failing = begin("c-key", T0)
    failing.fail(reason=f"store said {CANARY}", now=T0 + 5 * HOUR)
    store(engine, old, observing, waiting, failing, alerts=(
        alert("web", "prod", "authentication", AlertStatus.OPEN, count=3),
        alert("web", "prod", "authentication", AlertStatus.RESOLVED),
        alert("api", "dev", "network", AlertStatus.ACKNOWLEDGED),
        alert("api", "dev", "network", AlertStatus.NOT_RELATED, count=2),
    ))

    text, got = scrape(engine)

    refs = {r.secret: r.ref for r in (observing, waiting, failing)}
    assert got["rotabot_rotation_phase"] == {
        (("phase", "observing"), ("rotation", refs["a-key"]), ("secret", "a-key")): 1,
        (("phase", "distributing"), ("rotation", refs["b-key"]), ("secret", "b-key")): 1,
        (("phase", "failed"), ("rotation", refs["c-key"]), ("secret", "c-key")): 1,
    }
    assert got["rotabot_rotation_phase_since_timestamp_seconds"] == {
        (("phase", "observing"), ("rotation", refs["a-key"]), ("secret", "a-key")):
            (T0 + 3 * HOUR).timestamp(),
        (("phase", "distributing"), ("rotation", refs["b-key"]), ("secret", "b-key")):
            (T0 + HOUR).timestamp(),
        (("phase", "failed"), ("rotation", refs["c-key"]), ("secret", "c-key")):
            (T0 + 5 * HOUR).timestamp(),
    }
    # The latest switch of each secret that ever switched: the active rotation's, not R-1's.
    assert got["rotabot_rotation_last_switch_timestamp_seconds"] == {
        (("secret", "a-key"),): (T0 + 3 * HOUR).timestamp()}

    web = (("class", "authentication"), ("consumer", "web"), ("lane", "prod"),
           ("secret", "a-key"))
    api = (("class", "network"), ("consumer", "api"), ("lane", "dev"), ("secret", "a-key"))
    recorded, reports = got["rotabot_alerts_recorded_total"], got["rotabot_alert_reports_total"]
    assert (recorded[web], recorded[api]) == (2, 2)
    assert (reports[web], reports[api]) == (4, 3)
    # Every catalog consumer and class starts at zero, so increase() sees the first alert.
    assert len(recorded) == len(reports) == 2 * len(FailureClass)
    assert {v for k, v in recorded.items() if k not in (web, api)} == {0}
    assert got["rotabot_alerts_open"] == {
        (("class", "authentication"), ("lane", "prod"), ("secret", "a-key")): 1,
        (("class", "network"), ("lane", "dev"), ("secret", "a-key")): 1,
    }
    assert got["rotabot_health_checks"] == {
        (("consumer", "web"), ("lane", "prod"), ("ok", "no"), ("secret", "a-key")): 1,
        (("consumer", "web"), ("lane", "prod"), ("ok", "yes"), ("secret", "a-key")): 1,
        (("consumer", "api"), ("lane", "dev"), ("ok", "yes"), ("secret", "a-key")): 1,
    }
    assert got["rotabot_health_check_last_ok"] == {
        (("consumer", "web"), ("lane", "prod"), ("secret", "a-key")): 1,
        (("consumer", "api"), ("lane", "dev"), ("secret", "a-key")): 1,
    }
    # The existing families still come from the same snapshot.
    assert got["rotabot_rotations"][(("phase", "observing"),)] == 1
    assert "# TYPE rotabot_alerts_recorded_total counter" in text
    assert CANARY not in text
    assert "kv/" not in text  # no store path either


def test_every_label_value_is_a_catalog_name_class_phase_or_ref(engine: Engine) -> None:
    r = switched("a-key", T0)
    health(r, "web", False, T0 + 2 * HOUR)
    store(engine, r, alerts=(alert("web", "prod", "authentication", AlertStatus.OPEN),))
    _, got = scrape(engine)
    allowed = {"a-key", "web", "api", "prod", "dev", "yes", "no", r.ref, "observing",
               "authentication", "rate-limit", "payload", "network", "unknown", "drift",
               "silent"}
    values = {v for name, series in got.items() if name.startswith(
        ("rotabot_rotation_", "rotabot_alert", "rotabot_health")) for labels in series
        for _, v in labels}
    assert values <= allowed


def test_without_a_catalog_only_stored_label_sets_appear(engine: Engine) -> None:
    store(engine, alerts=(alert("web", "prod", "payload", AlertStatus.RESOLVED),))
    _, got = scrape(engine, catalog=False)
    assert got["rotabot_alerts_recorded_total"] == {
        (("class", "payload"), ("consumer", "web"), ("lane", "prod"), ("secret", "a-key")): 1}
    assert "rotabot_alerts_open" not in got
    assert "rotabot_rotation_phase" not in got


def test_history_is_part_of_the_cached_snapshot(engine: Engine) -> None:
    calls = []

    class Counting(SqlStoreReads):
        def last_switches(self) -> dict[str, datetime]:
            calls.append("last_switches")
            return super().last_switches()

    clock = [100.0]
    collector = StateCollector(lambda: active(engine), lambda n: recent(engine, n),
                               store=Counting(engine), monotonic=lambda: clock[0])
    list(collector.describe())
    assert calls == []  # registering queries nothing
    list(collector.collect())
    list(collector.collect())
    assert calls == ["last_switches"]
    clock[0] += 5.0
    list(collector.collect())
    assert calls == ["last_switches", "last_switches"]


def test_timer_heartbeat_has_a_sample_only_after_a_run() -> None:
    wall = [1_700_000_000.0]
    heartbeat = TimerHeartbeat(wall=lambda: wall[0])
    name = "rotabot_timer_last_run_timestamp_seconds"
    [family] = heartbeat.collect()
    assert family.name == name and family.samples == []
    assert heartbeat.beat() == 0  # a TimerWork extra job: no actions of its own
    [family] = heartbeat.collect()
    assert [(s.name, s.value) for s in family.samples] == [(name, 1_700_000_000.0)]


class _Open:
    open = True
    unmet: tuple[str, ...] = ()
