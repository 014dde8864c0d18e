"""The revocation gate: a pure function from evidence to the conditions still unmet, in words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain.alert import Alert
from bot.domain.credentials import UsageEvidence
from bot.domain.durations import format_duration
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import Rotation
from bot.domain.usage import usage_line, usage_words

# What the issuer's (and store's) platform says about use of the old credential.
Evidence = UsageEvidence


@dataclass(frozen=True)
class GateResult:
    unmet: tuple[str, ...]
    # "usage evidence: cannot tell (why)" and the like: said even when it does not block.
    usage: str = ""

    @property
    def open(self) -> bool:
        return not self.unmet


def evaluate_gate(
    rotation: Rotation,
    *,
    now: datetime,
    alerts: Sequence[Alert] = (),
    usage: Evidence | None = None,
    missing_evidence: Sequence[str] = (),
) -> GateResult:
    """Every reason the old credential may not be revoked yet; empty means revoke is safe."""
    unmet: list[str] = []
    if rotation.phase not in (Phase.OBSERVING, Phase.REVOCABLE):
        unmet.append(
            f"{rotation.ref} is {rotation.phase.value}: revocation comes only after the switch "
            "and the observation window"
        )
    for c in rotation.consumers_in_order():
        if c.state is not StepState.SIGNED_OFF:
            unmet.append(
                f"{c.name} ({c.lane}) has not signed off (step: {c.state.value}, owner {c.owner})"
            )
    # Consumers whose catalog entry requires evidence and whose reports do not show it.
    unmet.extend(missing_evidence)
    if rotation.observe_until is None:
        unmet.append("the observation window has not started")
    elif now < rotation.observe_until:
        left = format_duration(rotation.observe_until - now)
        unmet.append(
            f"the observation window runs {left} more "
            f"(until {rotation.observe_until.strftime('%Y-%m-%d %H:%M:%S UTC')})"
        )
    for a in alerts:
        if a.unresolved and a.secret == rotation.secret:
            unmet.append(
                f"unresolved alert {a.ref}: {a.consumer} ({a.lane}) failing {a.failure_class}"
                f" ({a.count}x, {a.status.value})"
            )
    if usage is not None and usage.in_use:
        unmet.append(f"the old credential is still in use: {usage_words(usage, now)}")
    return GateResult(tuple(unmet), usage_line(usage, now) if usage is not None else "")
