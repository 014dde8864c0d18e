"""Scheduled health checks while a rotation is distributing, validating or observing.

Every ``interval`` (default 60 s, ``ROTABOT_HEALTH_INTERVAL``) each consumer of such a rotation
that has a catalog ``health_check`` is checked on its real dependency path, all of them in one
batch bounded by the checker's concurrency (``adapters.health.HealthChecker.check_many``). A
failure enters the same pipeline as a report to ``POST /alerts``: AlertService.ingest with
source ``health-check`` and the check's own classification, so repeats coalesce into one
message, the incident channel and the rotation thread hear of it, and the revocation gate
stays closed until someone resolves it. A passing check stores nothing (a check every minute
must not grow the audit log or re-render the rotation message); owners' Validated clicks keep
recording results as evidence (bot/services/health.py).

The timer loop (bot/services/timers.py TimerWork.extra, leader only) calls
:meth:`HealthSchedule.run_due` every tick; the schedule itself decides whether a rotation's
checks are due, from the clock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.catalog import HealthCheck
from bot.domain.alert_intake import AlertReport
from bot.domain.failures import Classification, FailureClass
from bot.domain.lifecycle import Phase
from bot.domain.log_context import rotation_context
from bot.domain.rotation import Rotation
from bot.services.alerts import AlertService

log = logging.getLogger("rotabot.health")

SOURCE = "health-check"
DEFAULT_INTERVAL = timedelta(seconds=60)
# A check every instant would hammer consumers; anything shorter is raised to this.
MIN_INTERVAL = timedelta(seconds=1)
CHECKED_PHASES = frozenset({Phase.DISTRIBUTING, Phase.VALIDATING, Phase.OBSERVING})


class CheckResult(Protocol):
    """One check's outcome (``adapters.health.HealthResult``)."""

    @property
    def consumer(self) -> str: ...

    @property
    def ok(self) -> bool: ...

    @property
    def status_code(self) -> int | None: ...

    @property
    def failure_class(self) -> str | None: ...

    @property
    def reason(self) -> str: ...


class BatchProbe(Protocol):
    """Runs many checks at once, bounded (``adapters.health.HealthChecker``)."""

    def check_many(self, items: Sequence[tuple[str, str, HealthCheck]]) -> Sequence[CheckResult]:
        ...


def _class_of(result: CheckResult) -> FailureClass:
    try:
        return FailureClass(result.failure_class or FailureClass.UNKNOWN.value)
    except ValueError:
        return FailureClass.UNKNOWN


@dataclass
class HealthSchedule:
    alerts: AlertService
    probe: BatchProbe
    interval: timedelta = DEFAULT_INTERVAL
    # When each rotation was last checked (or first seen), in this process. The first check
    # comes one interval after a rotation starts distributing (or after a restart or leader
    # change), so owners get a moment to distribute before their consumer is probed.
    _last: dict[int, datetime] = field(default_factory=dict)

    def due(self, rotation: Rotation, now: datetime) -> bool:
        if rotation.id is None or rotation.phase not in CHECKED_PHASES:
            return False
        last = self._last.setdefault(rotation.id, now)
        return now - last >= self.interval

    def run_due(self) -> int:
        """Check every consumer of every rotation that is due; returns how many checks ran."""
        service = self.alerts.rotations
        now = service.clock.now()
        active = service.active()
        rotations = [r for r in active if self.due(r, now)]
        live = {r.id for r in active}
        for gone in set(self._last) - live:
            del self._last[gone]  # finished rotations are never checked again
        items: list[tuple[Rotation, str, str, HealthCheck]] = []
        for rotation in rotations:
            assert rotation.id is not None
            self._last[rotation.id] = now
            spec = service.catalog.secrets.get(rotation.secret)
            if spec is None:  # the secret left the catalog mid-rotation: nothing to check
                continue
            for c in rotation.consumers_in_order():
                consumer = spec.consumers.get(c.name)
                if consumer is not None and consumer.health_check is not None:
                    items.append((rotation, c.name, c.lane, consumer.health_check))
        if not items:
            return 0
        results = self.probe.check_many([(name, lane, hc) for _, name, lane, hc in items])
        for (rotation, name, lane, _), result in zip(items, results, strict=True):
            if result.ok:
                continue
            self._report(rotation, name, lane, result)
        return len(items)

    def _report(self, rotation: Rotation, consumer: str, lane: str, result: CheckResult) -> None:
        fclass = _class_of(result)
        # The checker classified the failure already (status, exception type, labels); its
        # reason is built from labels only, never from a response body.
        verdict = Classification(fclass, result.reason[:300])
        report = AlertReport(
            consumer=consumer,
            secret=rotation.secret,
            lane=lane,
            status_code=result.status_code,
            source=SOURCE,
        )
        try:
            outcome = self.alerts.ingest(report, verdict=verdict)
        except Exception as exc:  # one consumer's trouble must not stop the others' checks
            log.error(
                "scheduled health check failure could not be recorded: %s",
                type(exc).__name__,
                extra=rotation_context(rotation, consumer=consumer, lane=lane),
            )
            return
        log.warning(
            "scheduled health check of %s failed: %s (%s)",
            consumer, fclass.value, outcome.alert.ref,
            extra=rotation_context(
                rotation, consumer=consumer, lane=lane, alert_id=outcome.alert.id
            ),
        )
