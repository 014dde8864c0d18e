"""Prometheus /metrics from a cached snapshot of rotations and alerts: counts, never a value.

Every label value is a catalog name (secret, lane, consumer), a failure class, a phase or a
rotation reference (R-<id>, bounded by the active rotations): nothing from a request or a
credential. The database is the source, so every replica reports the same numbers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.slack_budget import SlackCallBudget
from bot.catalog import Catalog
from bot.domain.alert import UNRESOLVED, Alert
from bot.domain.audit import AuditEvent
from bot.domain.failures import FailureClass
from bot.domain.lifecycle import Phase
from bot.domain.rotation import Rotation
from storage.metrics_reads import HEALTH_ACTION, PHASE_ACTION, AlertCount, SqlStoreReads

__all__ = ["AlertCount", "SqlStoreReads", "StoreReads"]

ALERT_WINDOW = 1000  # rotabot_alerts counts the most recent this many alerts
TIMER_PHASES = frozenset({Phase.OBSERVING, Phase.READY_CHECK})
_UNRESOLVED_VALUES = frozenset(s.value for s in UNRESOLVED)


class StoreReads(Protocol):
    """The aggregate reads behind the history metrics (:class:`SqlStoreReads` on the
    database every replica shares)."""

    def last_switches(self) -> Mapping[str, datetime]:
        """secret -> the time of its latest switch, finished rotations included."""
        ...

    def alert_counts(self) -> Sequence[AlertCount]: ...

    def rotation_events(self, rotation_ids: Sequence[int]) -> Sequence[AuditEvent]:
        """The phase-change and health-check events of these rotations, in record order."""
        ...


_Labels = tuple[str, ...]


@dataclass(frozen=True)
class _History:
    """What the history families show (empty without a :class:`StoreReads`)."""

    # (secret, rotation ref, phase) -> when the rotation entered the phase (unix seconds)
    phase_since: dict[_Labels, float] = field(default_factory=dict)
    last_switch: dict[str, float] = field(default_factory=dict)
    # (secret, lane, consumer, class) -> alerts recorded / failure reports
    alerts_recorded: Counter[_Labels] = field(default_factory=Counter)
    reports: Counter[_Labels] = field(default_factory=Counter)
    # (secret, lane, class) -> unresolved (open or acknowledged) alerts
    alerts_open: Counter[_Labels] = field(default_factory=Counter)
    # (secret, lane, consumer, ok) -> health checks in the active rotation of the secret
    health_checks: Counter[_Labels] = field(default_factory=Counter)
    # (secret, lane, consumer) -> 1 when the latest check passed, 0 when it failed
    health_last_ok: dict[_Labels, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Counts:
    phases: Counter[str]
    pending: Counter[str]
    alerts: Counter[tuple[str, str]]
    unresolved: Counter[tuple[str, str]]
    timers: int
    active: tuple[tuple[str, str, str], ...] = ()  # (secret, rotation ref, phase)
    history: _History = field(default_factory=_History)


def _count(active: Sequence[Rotation], alerts: Sequence[Alert],
           history: _History | None = None) -> _Counts:
    return _Counts(
        phases=Counter(r.phase.value for r in active),
        pending=Counter(consumer.lane for r in active for consumer, _ in r.pending_steps()),
        alerts=Counter((a.failure_class, a.consumer) for a in alerts),
        unresolved=Counter((a.failure_class, a.consumer) for a in alerts if a.unresolved),
        timers=sum(1 for r in active if r.phase in TIMER_PHASES),
        active=tuple(sorted((r.secret, r.ref, r.phase.value) for r in active)),
        history=history or _History(),
    )


def catalog_consumers(catalog: Catalog) -> list[tuple[str, str, str]]:
    """(secret, lane, consumer) of every catalog consumer: the label sets the alert counters
    start at zero with, so the first alert of a consumer shows in ``increase()``."""
    return sorted((secret, c.lane, name) for secret, spec in catalog.secrets.items()
                  for name, c in spec.consumers.items())


def _history(active: Sequence[Rotation], store: StoreReads,
             consumers: Sequence[tuple[str, str, str]]) -> _History:
    h = _History(last_switch={s: at.timestamp() for s, at in store.last_switches().items()})
    for secret, lane, consumer in consumers:
        for failure_class in FailureClass:
            h.alerts_recorded[(secret, lane, consumer, failure_class.value)] += 0
            h.reports[(secret, lane, consumer, failure_class.value)] += 0
    for a in store.alert_counts():
        key = (a.secret, a.lane, a.consumer, a.failure_class)
        h.alerts_recorded[key] += a.alerts
        h.reports[key] += a.reports
        if a.status in _UNRESOLVED_VALUES:
            h.alerts_open[(a.secret, a.lane, a.failure_class)] += a.alerts
    by_id = {r.id: r for r in active if r.id is not None}
    entered: dict[int, datetime] = {}
    for e in store.rotation_events(list(by_id)):
        r = by_id.get(e.rotation_id) if e.rotation_id is not None else None
        if r is None:
            continue
        if e.action == PHASE_ACTION and e.after == r.phase.value:
            entered[r.id or 0] = e.at  # the last move into the current phase wins
        elif e.action == HEALTH_ACTION and e.detail.get("consumer") in r.consumers:
            name = e.detail["consumer"]
            ok = e.detail.get("ok") == "yes"
            h.health_checks[(r.secret, r.consumers[name].lane, name, "yes" if ok else "no")] += 1
            h.health_last_ok[(r.secret, r.consumers[name].lane, name)] = int(ok)
    for rotation_id, r in by_id.items():
        since = entered.get(rotation_id, r.created_at)
        h.phase_since[(r.secret, r.ref, r.phase.value)] = since.timestamp()
    return h


def _families(counts: _Counts | None) -> list[Metric]:
    """The gauge families; without samples when ``counts`` is None (for describe)."""
    rotations = GaugeMetricFamily("rotabot_rotations", "Active rotations by phase.",
                                  labels=["phase"])
    pending = GaugeMetricFamily("rotabot_steps_pending",
                                "Consumer steps waiting on an owner, by lane.", labels=["lane"])
    alerts = GaugeMetricFamily(
        "rotabot_alerts", f"Recent alerts (last {ALERT_WINDOW}) by failure class and consumer.",
        labels=["class", "consumer"])
    unresolved = GaugeMetricFamily("rotabot_alerts_unresolved",
                                   "Unresolved alerts by failure class and consumer.",
                                   labels=["class", "consumer"])
    timers = GaugeMetricFamily(
        "rotabot_timers_pending",
        "Rotations waiting on a timer (observation window, new version).",
        value=counts.timers if counts is not None else None)
    if counts is not None:
        for phase, n in sorted(counts.phases.items()):
            rotations.add_metric([phase], n)
        for lane, n in sorted(counts.pending.items()):
            pending.add_metric([lane], n)
        _add_pairs(alerts, counts.alerts.items())
        _add_pairs(unresolved, counts.unresolved.items())
    return [rotations, pending, alerts, unresolved, timers, *_history_families(counts)]


def _history_families(counts: _Counts | None) -> list[Metric]:
    phase = GaugeMetricFamily(
        "rotabot_rotation_phase", "1 for each active rotation, labelled with its phase.",
        labels=["secret", "rotation", "phase"])
    phase_since = GaugeMetricFamily(
        "rotabot_rotation_phase_since_timestamp_seconds",
        "When each active rotation entered its current phase (unix time).",
        labels=["secret", "rotation", "phase"])
    last_switch = GaugeMetricFamily(
        "rotabot_rotation_last_switch_timestamp_seconds",
        "When the secret last switched to a new credential (unix time; finished rotations "
        "included).", labels=["secret"])
    recorded = CounterMetricFamily(
        "rotabot_alerts_recorded", "Alerts recorded, by secret, lane, consumer and class.",
        labels=["secret", "lane", "consumer", "class"])
    reports = CounterMetricFamily(
        "rotabot_alert_reports",
        "Failure reports (each alert and the repeats coalesced into it), by secret, lane, "
        "consumer and class.", labels=["secret", "lane", "consumer", "class"])
    open_ = GaugeMetricFamily(
        "rotabot_alerts_open", "Unresolved (open or acknowledged) alerts by secret, lane and "
        "class.", labels=["secret", "lane", "class"])
    checks = GaugeMetricFamily(
        "rotabot_health_checks",
        "Health checks recorded in each active rotation, by consumer and result (ok yes/no).",
        labels=["secret", "lane", "consumer", "ok"])
    last_ok = GaugeMetricFamily(
        "rotabot_health_check_last_ok",
        "1 when the consumer's latest health check in the active rotation passed, 0 if it "
        "failed.", labels=["secret", "lane", "consumer"])
    if counts is not None:
        h = counts.history
        for secret, ref, value in counts.active:
            phase.add_metric([secret, ref, value], 1)
        for labels, at in sorted(h.phase_since.items()):
            phase_since.add_metric(list(labels), at)
        for secret, at in sorted(h.last_switch.items()):
            last_switch.add_metric([secret], at)
        for labels, n in sorted(h.alerts_recorded.items()):
            recorded.add_metric(list(labels), n)
        for labels, n in sorted(h.reports.items()):
            reports.add_metric(list(labels), n)
        for labels, n in sorted(h.alerts_open.items()):
            open_.add_metric(list(labels), n)
        for labels, n in sorted(h.health_checks.items()):
            checks.add_metric(list(labels), n)
        for labels, ok in sorted(h.health_last_ok.items()):
            last_ok.add_metric(list(labels), ok)
    return [phase, phase_since, last_switch, recorded, reports, open_, checks, last_ok]


def _add_pairs(family: GaugeMetricFamily, items: Iterable[tuple[tuple[str, str], int]]) -> None:
    for (failure_class, consumer), n in sorted(items):
        family.add_metric([failure_class, consumer], n)


class StateCollector(Collector):
    """Rotation and alert gauges, from a snapshot at most ``max_age`` seconds old.

    Each scrape would otherwise load every active rotation and the last 1000 alerts; with
    several Prometheus servers (or a short scrape interval) the database would do that work
    again and again for numbers that change at human pace.

    With ``store``, the history families too (phase times, last switches, alert counters,
    health checks); ``catalog`` starts the alert counters at zero for every catalog consumer.
    """

    def __init__(
        self,
        active: Callable[[], Sequence[Rotation]],
        recent_alerts: Callable[[int], Sequence[Alert]],
        *,
        max_age: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        store: StoreReads | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self._active = active
        self._recent_alerts = recent_alerts
        self._max_age = max_age
        self._monotonic = monotonic
        self._store = store
        self._consumers = catalog_consumers(catalog) if catalog is not None else []
        # Held across the refresh so concurrent scrapes wait for one query, not run their own.
        self._lock = threading.Lock()
        self._counts: _Counts | None = None
        self._taken_at = 0.0

    def use_catalog(self, catalog: Catalog) -> None:
        """A reloaded catalog: its consumers from the next refresh on (one assignment)."""
        self._consumers = catalog_consumers(catalog)

    def _current(self) -> _Counts:
        with self._lock:
            now = self._monotonic()
            if self._counts is None or now - self._taken_at >= self._max_age:
                # A failing query propagates (the scrape fails visibly); nothing stale is kept
                # as if it were fresh.
                active = self._active()
                history = (_history(active, self._store, self._consumers)
                           if self._store is not None else None)
                counts = _count(active, self._recent_alerts(ALERT_WINDOW), history)
                self._counts, self._taken_at = counts, now
            return self._counts

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering checks for clashes without querying the database.
        return _families(None)

    def collect(self) -> Iterable[Metric]:
        return _families(self._current())


class TimerHeartbeat(Collector):
    """``rotabot_timer_last_run_timestamp_seconds``: when this process last finished a timer
    run. Only the replica that runs timers (the leader) has a sample; the others none, so a
    rule over ``max(...)`` watches whichever replica leads."""

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._last: float | None = None

    def beat(self) -> int:
        """A TimerWork ``extra`` job, run last in every tick; it does no work of its own."""
        self._last = self._wall()
        return 0

    def _family(self, last: float | None) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "rotabot_timer_last_run_timestamp_seconds",
            "When this process last finished a timer run (unix time; the leader only).",
            labels=[])
        if last is not None:
            family.add_metric([], last)
        return family

    def describe(self) -> Iterable[Metric]:
        return [self._family(None)]

    def collect(self) -> Iterable[Metric]:
        return [self._family(self._last)]


class SlackBudgetCollector(Collector):
    """This process's Slack call budget: calls waiting for their turn now, and how many
    calls were merged into another one or waited for a token, so an operator sees Slack's
    limits being reached before anyone sees a stale message."""

    def __init__(self, budget: SlackCallBudget) -> None:
        self._budget = budget

    def _families(self, waiting: int, merged: int, delayed: int) -> list[Metric]:
        queued = GaugeMetricFamily(
            "rotabot_slack_calls_waiting",
            "Slack calls waiting for their turn in this process's call budget.", labels=[])
        queued.add_metric([], waiting)
        merged_total = CounterMetricFamily(
            "rotabot_slack_calls_merged",
            "Slack calls that rode on a waiting call of the same message (one update sent).",
            labels=[])
        merged_total.add_metric([], merged)
        delayed_total = CounterMetricFamily(
            "rotabot_slack_calls_delayed",
            "Slack calls that found their method's budget spent and waited for a token.",
            labels=[])
        delayed_total.add_metric([], delayed)
        return [queued, merged_total, delayed_total]

    def describe(self) -> Iterable[Metric]:
        return self._families(0, 0, 0)

    def collect(self) -> Iterable[Metric]:
        stats = self._budget.stats
        return self._families(self._budget.waiting(), stats.merged, stats.waited)


def metrics_registry(
    *,
    active: Callable[[], Sequence[Rotation]],
    recent_alerts: Callable[[int], Sequence[Alert]],
    max_age: float = 5.0,
    monotonic: Callable[[], float] = time.monotonic,
    store: StoreReads | None = None,
    catalog: Catalog | None = None,
) -> CollectorRegistry:
    """A registry (never the process-global one) with the rotation and alert gauges; hand
    the same registry to ``adapters.slack_client.slack_client`` for the Slack counters."""
    registry = CollectorRegistry()
    registry.register(
        StateCollector(active, recent_alerts, max_age=max_age, monotonic=monotonic,
                       store=store, catalog=catalog)
    )
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition body and its Content-Type; blocking (it may query), so off the loop."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
