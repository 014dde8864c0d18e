"""/metrics on prometheus-client: gauges from a cached snapshot, Slack counters, escaping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from adapters.slack_client import slack_client
from bot.domain.alert import Alert, AlertStatus
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.runtime.metrics import metrics_registry, render

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
ADMIN = "U0ADMIN"
ODD = 'qa "blue"\nsecond line \\ end'  # newline, quotes and a backslash in a label value
CONSUMERS = [
    ConsumerPlan("web", "prod", "U0WEB", "staged"),
    ConsumerPlan("api", "dev", "U0API", "hot"),
    ConsumerPlan("worker", "staging", "U0WORK", "restart"),
]


def rotation(secret: str, *, consumers: list[ConsumerPlan] = CONSUMERS,
             lanes: tuple[str, ...] = ("dev", "staging", "prod"),
             prepared: bool = True) -> Rotation:
    r = Rotation.begin(secret=secret, lanes=lanes, consumers=consumers,
                       overlap=timedelta(hours=24), observe=timedelta(hours=2),
                       store_path=f"kv/{secret}", actor=ADMIN, now=T0)
    if prepared:
        r.prepared(old_version="1", new_version="2", old_key_id=None, new_key_id=None,
                   actor=ADMIN, now=T0)
    return r


def observing(secret: str) -> Rotation:
    r = rotation(secret)
    for name in ("api", "worker", "web"):
        for target in (StepState.DISTRIBUTED, StepState.VALIDATED):
            assert r.mark_step(name, target, actor="U", now=T0)
    r.switch(actor=ADMIN, now=T0)
    return r


def alert(consumer: str, failure_class: str, status: AlertStatus) -> Alert:
    return Alert(consumer=consumer, secret="model-api-key", lane="prod",
                 failure_class=failure_class, reason="HTTP 401", first_seen=T0, last_seen=T0,
                 status=status)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Source:
    """``active`` and ``recent_alerts`` as the service gives them, counting calls."""

    def __init__(self, rotations: list[Rotation], alerts: list[Alert]) -> None:
        self.rotations, self.alerts = rotations, alerts
        self.active_calls = 0
        self.alert_limits: list[int] = []

    def active(self) -> list[Rotation]:
        self.active_calls += 1
        return list(self.rotations)

    def recent_alerts(self, limit: int) -> list[Alert]:
        self.alert_limits.append(limit)
        return list(self.alerts)


def samples(registry: CollectorRegistry) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}}, read back through prometheus_client's parser."""
    body, _ = render(registry)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_counts_match_the_rotations_and_alerts(clock: FakeClock) -> None:
    rotations = [
        rotation("a-key", prepared=False),  # ready-check: a timer, no steps yet
        rotation("b-key"),  # distributing: only the dev lane's consumer is asked
        rotation("c-key"),
        observing("d-key"),  # every consumer is asked to sign off
    ]
    assert [r.phase for r in rotations] == [
        Phase.READY_CHECK, Phase.DISTRIBUTING, Phase.DISTRIBUTING, Phase.OBSERVING]
    alerts = [
        alert("web", "authentication", AlertStatus.OPEN),
        alert("web", "authentication", AlertStatus.RESOLVED),
        alert("api", "network", AlertStatus.ACKNOWLEDGED),
        alert("api", "network", AlertStatus.NOT_RELATED),
    ]
    source = Source(rotations, alerts)
    got = samples(metrics_registry(active=source.active, recent_alerts=source.recent_alerts,
                                   monotonic=clock))

    assert got["rotabot_rotations"] == {
        (("phase", "distributing"),): 2, (("phase", "observing"),): 1,
        (("phase", "ready-check"),): 1,
    }
    assert got["rotabot_steps_pending"] == {
        (("lane", "dev"),): 3, (("lane", "prod"),): 1, (("lane", "staging"),): 1,
    }
    assert got["rotabot_alerts"] == {
        (("class", "authentication"), ("consumer", "web")): 2,
        (("class", "network"), ("consumer", "api")): 2,
    }
    assert got["rotabot_alerts_unresolved"] == {
        (("class", "authentication"), ("consumer", "web")): 1,
        (("class", "network"), ("consumer", "api")): 1,
    }
    assert got["rotabot_timers_pending"] == {(): 2}
    assert source.alert_limits == [1000]


def test_empty_families_still_render_help_and_type(clock: FakeClock) -> None:
    source = Source([], [])
    body, content_type = render(metrics_registry(
        active=source.active, recent_alerts=source.recent_alerts, monotonic=clock))
    text = body.decode()
    for name in ("rotabot_rotations", "rotabot_steps_pending", "rotabot_alerts",
                 "rotabot_alerts_unresolved"):
        assert f"# TYPE {name} gauge" in text
    assert "rotabot_timers_pending 0.0" in text
    assert content_type.startswith("text/plain; version=")


def test_label_with_newline_and_quotes_round_trips(clock: FakeClock) -> None:
    odd_lane = rotation("e-key", consumers=[ConsumerPlan("svc", ODD, "U0SVC", "hot")],
                        lanes=(ODD,))
    source = Source([odd_lane], [alert(ODD, "authentication", AlertStatus.OPEN)])
    got = samples(metrics_registry(active=source.active, recent_alerts=source.recent_alerts,
                                   monotonic=clock))
    assert got["rotabot_steps_pending"] == {(("lane", ODD),): 1}
    assert got["rotabot_alerts"] == {(("class", "authentication"), ("consumer", ODD)): 1}


def test_scrapes_within_max_age_share_one_query(clock: FakeClock) -> None:
    source = Source([rotation("a-key")], [])
    registry = metrics_registry(active=source.active, recent_alerts=source.recent_alerts,
                                max_age=5.0, monotonic=clock)
    assert source.active_calls == 0  # registering queries nothing

    first = samples(registry)
    clock.now += 4.9
    source.rotations.append(rotation("b-key"))  # not seen until the snapshot is refreshed
    second = samples(registry)
    assert source.active_calls == 1
    assert first == second
    assert second["rotabot_rotations"] == {(("phase", "distributing"),): 1}

    clock.now += 0.2  # 5.1 s after the first scrape
    third = samples(registry)
    assert source.active_calls == 2
    assert len(source.alert_limits) == 2
    assert third["rotabot_rotations"] == {(("phase", "distributing"),): 2}


def test_a_failed_query_is_not_cached(clock: FakeClock) -> None:
    source = Source([rotation("a-key")], [])
    down = [True, False]  # the first query fails, the next one works

    def active() -> list[Rotation]:
        if down.pop(0):
            raise ConnectionError("database down")
        return source.active()

    registry = metrics_registry(active=active, recent_alerts=source.recent_alerts,
                                monotonic=clock)
    with pytest.raises(ConnectionError):
        render(registry)
    assert samples(registry)["rotabot_rotations"] == {(("phase", "distributing"),): 1}


def test_slack_counters_share_the_registry(clock: FakeClock) -> None:
    source = Source([], [])
    registry = metrics_registry(active=source.active, recent_alerts=source.recent_alerts,
                                monotonic=clock)
    client = slack_client("xoxb-test", "http://127.0.0.1:9/api/", registry)
    client.counter.call("chat.postMessage")
    client.counter.call("chat.postMessage")
    client.counter.call("chat.update")
    # A GET call's query string must not become part of the label.
    client.counter.limited("http://127.0.0.1:9/api/chat.update?channel=C1")

    got = samples(registry)
    assert got["rotabot_slack_api_calls_total"] == {
        (("method", "chat.postMessage"),): 2, (("method", "chat.update"),): 1,
    }
    assert got["rotabot_slack_rate_limited_total"] == {(("method", "chat.update"),): 1}
    assert client.counter.snapshot() == (
        {"chat.postMessage": 2, "chat.update": 1}, {"chat.update": 1})

    # A second client on the same registry adds to the same counters instead of clashing.
    again = slack_client("xoxb-test", "http://127.0.0.1:9/api/", registry)
    again.counter.call("chat.update")
    assert samples(registry)["rotabot_slack_api_calls_total"][(("method", "chat.update"),)] == 2


def test_app_instances_do_not_collide() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    a = slack_client(None, "http://127.0.0.1:9/api/", one)
    b = slack_client(None, "http://127.0.0.1:9/api/", two)
    private = slack_client(None, "http://127.0.0.1:9/api/")
    a.counter.call("auth.test")
    assert a.counter.snapshot() == ({"auth.test": 1}, {})
    assert b.counter.snapshot() == ({}, {})
    assert private.counter.snapshot() == ({}, {})
