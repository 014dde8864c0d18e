"""Prometheus text for /metrics: counts and phases, never a secret value."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.bootstrap import Container


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def render_metrics(c: Container) -> str:
    active = c.service.active()
    phases = Counter(r.phase.value for r in active)
    pending = Counter(consumer.lane for r in active for consumer, _ in r.pending_steps())
    alerts = Counter(
        (a.failure_class, a.consumer) for a in c.service.recent_alerts(500) if a.unresolved
    )
    lines = [
        "# HELP rotabot_rotations Active rotations by phase.",
        "# TYPE rotabot_rotations gauge",
    ]
    lines += [f'rotabot_rotations{{phase="{_label(p)}"}} {n}' for p, n in sorted(phases.items())]
    lines += [
        "# HELP rotabot_steps_pending Consumer steps waiting on an owner, by lane.",
        "# TYPE rotabot_steps_pending gauge",
    ]
    lines += [
        f'rotabot_steps_pending{{lane="{_label(k)}"}} {n}' for k, n in sorted(pending.items())
    ]
    lines += [
        "# HELP rotabot_alerts_unresolved Unresolved alerts by class and consumer.",
        "# TYPE rotabot_alerts_unresolved gauge",
    ]
    lines += [
        f'rotabot_alerts_unresolved{{class="{_label(k)}",consumer="{_label(c_)}"}} {n}'
        for (k, c_), n in sorted(alerts.items())
    ]
    return "\n".join(lines) + "\n"
