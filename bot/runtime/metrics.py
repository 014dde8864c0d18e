"""Prometheus /metrics from a cached snapshot of rotations and alerts: counts, never a value."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.domain.alert import Alert
from bot.domain.lifecycle import Phase
from bot.domain.rotation import Rotation

ALERT_WINDOW = 1000  # rotabot_alerts counts the most recent this many alerts
TIMER_PHASES = frozenset({Phase.OBSERVING, Phase.READY_CHECK})


@dataclass(frozen=True)
class _Counts:
    phases: Counter[str]
    pending: Counter[str]
    alerts: Counter[tuple[str, str]]
    unresolved: Counter[tuple[str, str]]
    timers: int


def _count(active: Sequence[Rotation], alerts: Sequence[Alert]) -> _Counts:
    return _Counts(
        phases=Counter(r.phase.value for r in active),
        pending=Counter(consumer.lane for r in active for consumer, _ in r.pending_steps()),
        alerts=Counter((a.failure_class, a.consumer) for a in alerts),
        unresolved=Counter((a.failure_class, a.consumer) for a in alerts if a.unresolved),
        timers=sum(1 for r in active if r.phase in TIMER_PHASES),
    )


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
    return [rotations, pending, alerts, unresolved, timers]


def _add_pairs(family: GaugeMetricFamily, items: Iterable[tuple[tuple[str, str], int]]) -> None:
    for (failure_class, consumer), n in sorted(items):
        family.add_metric([failure_class, consumer], n)


class StateCollector(Collector):
    """Rotation and alert gauges, from a snapshot at most ``max_age`` seconds old.

    Each scrape would otherwise load every active rotation and the last 1000 alerts; with
    several Prometheus servers (or a short scrape interval) the database would do that work
    again and again for numbers that change at human pace.
    """

    def __init__(
        self,
        active: Callable[[], Sequence[Rotation]],
        recent_alerts: Callable[[int], Sequence[Alert]],
        *,
        max_age: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._active = active
        self._recent_alerts = recent_alerts
        self._max_age = max_age
        self._monotonic = monotonic
        # Held across the refresh so concurrent scrapes wait for one query, not run their own.
        self._lock = threading.Lock()
        self._counts: _Counts | None = None
        self._taken_at = 0.0

    def _current(self) -> _Counts:
        with self._lock:
            now = self._monotonic()
            if self._counts is None or now - self._taken_at >= self._max_age:
                # A failing query propagates (the scrape fails visibly); nothing stale is kept
                # as if it were fresh.
                counts = _count(self._active(), self._recent_alerts(ALERT_WINDOW))
                self._counts, self._taken_at = counts, now
            return self._counts

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering checks for clashes without querying the database.
        return _families(None)

    def collect(self) -> Iterable[Metric]:
        return _families(self._current())


def metrics_registry(
    *,
    active: Callable[[], Sequence[Rotation]],
    recent_alerts: Callable[[int], Sequence[Alert]],
    max_age: float = 5.0,
    monotonic: Callable[[], float] = time.monotonic,
) -> CollectorRegistry:
    """A registry (never the process-global one) with the rotation and alert gauges; hand
    the same registry to ``adapters.slack_client.slack_client`` for the Slack counters."""
    registry = CollectorRegistry()
    registry.register(
        StateCollector(active, recent_alerts, max_age=max_age, monotonic=monotonic)
    )
    return registry


def render(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition body and its Content-Type; blocking (it may query), so off the loop."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
