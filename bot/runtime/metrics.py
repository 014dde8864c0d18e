"""Prometheus text for /metrics: counts and phases, never a secret value."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from bot.domain.lifecycle import Phase

if TYPE_CHECKING:
    from bot.runtime.bootstrap import Container


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def _family(name: str, kind: str, help_text: str,
            samples: Iterable[tuple[Mapping[str, str], int]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        rendered = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{rendered}}} {value}" if rendered else f"{name} {value}")
    return lines


def render_metrics(c: Container) -> str:
    active = c.service.active()
    phases = Counter(r.phase.value for r in active)
    pending = Counter(consumer.lane for r in active for consumer, _ in r.pending_steps())
    alerts = c.service.recent_alerts(1000)
    by_class = Counter((a.failure_class, a.consumer) for a in alerts)
    unresolved = Counter((a.failure_class, a.consumer) for a in alerts if a.unresolved)
    timers = sum(1 for r in active if r.phase in (Phase.OBSERVING, Phase.READY_CHECK))
    lines: list[str] = []
    lines += _family("rotabot_rotations", "gauge", "Active rotations by phase.",
                     (({"phase": p}, n) for p, n in sorted(phases.items())))
    lines += _family("rotabot_steps_pending", "gauge",
                     "Consumer steps waiting on an owner, by lane.",
                     (({"lane": k}, n) for k, n in sorted(pending.items())))
    lines += _family("rotabot_alerts", "gauge",
                     "Recent alerts (last 1000) by failure class and consumer.",
                     (({"class": k, "consumer": v}, n) for (k, v), n in sorted(by_class.items())))
    lines += _family("rotabot_alerts_unresolved", "gauge",
                     "Unresolved alerts by failure class and consumer.",
                     (({"class": k, "consumer": v}, n)
                      for (k, v), n in sorted(unresolved.items())))
    lines += _family("rotabot_timers_pending", "gauge",
                     "Rotations waiting on a timer (observation window, new version).",
                     [({}, timers)])
    counter = getattr(c.slack, "counter", None)
    if counter is not None:
        calls, limited = counter.snapshot()
        lines += _family("rotabot_slack_api_calls_total", "counter",
                         "Slack Web API calls by method.",
                         (({"method": m}, n) for m, n in sorted(calls.items())))
        lines += _family("rotabot_slack_rate_limited_total", "counter",
                         "Slack 429 answers by method (each retried after Retry-After).",
                         (({"method": m}, n) for m, n in sorted(limited.items())))
    return "\n".join(lines) + "\n"
