"""Consumer health checks as rotation evidence: run on Validated, recorded, shown, gating.

When an owner presses *Validated* for a consumer whose catalog entry has a ``health_check``,
the check runs on the consumer's real dependency path (through the :class:`HealthProbe` port;
``adapters.health.HealthChecker`` implements it with httpx, so this module imports no HTTP
client). A failing check refuses the step with the failure class in words and opens (or
coalesces into) an alert tagged with the rotation, which keeps the revocation gate closed until
it is resolved; a later passing check of the same consumer resolves the alerts that earlier
checks opened (people's reports and ``/alerts`` stay open). A passing check becomes the step's
note, e.g. "inference-api reports version 7": evidence that the new credential reached it.

Every result is an audit event (``health.checked``), so the latest result per consumer is
read back from the audit log: it survives restarts and is the same on every replica.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bot.catalog import HealthCheck
from bot.domain.errors import RotabotError
from bot.domain.evidence import Match, new_credential
from bot.domain.gate import Evidence
from bot.domain.lifecycle import Phase
from bot.domain.rotation import Rotation
from bot.domain.usage import unmapped, unmapped_words, usage_line
from bot.services.rotations import RotationService

log = logging.getLogger("rotabot.health")

HEALTH_ACTION = "health.checked"

CLASS_WORDS = {
    "authentication": "authentication failure (the consumer's credential was refused)",
    "rate-limit": "rate limit (the consumer is being throttled)",
    "payload": "payload error (the consumer got requests or answers it could not use)",
    "network": "network failure (the consumer or its dependency could not be reached)",
    "unknown": "failure of an unrecognised kind",
}


class HealthReport(Protocol):
    """One check's outcome as the probe reports it (``adapters.health.HealthResult``)."""

    @property
    def ok(self) -> bool: ...

    @property
    def failure_class(self) -> str | None: ...

    @property
    def reason(self) -> str: ...

    @property
    def reported_version(self) -> str | None: ...


class HealthProbe(Protocol):
    """Runs one consumer's health check; never raises for a failing consumer."""

    def check(self, consumer_name: str, lane: str, hc: HealthCheck) -> HealthReport: ...


class HealthCheckFailed(RotabotError):
    """The consumer's health check failed, so it is not marked validated."""


@dataclass(frozen=True)
class HealthLine:
    """The latest health result of one consumer in one rotation, for the message."""

    consumer: str
    ok: bool
    failure_class: str | None
    reason: str
    version: str | None
    at: datetime


@dataclass(frozen=True)
class RotationEvidence:
    """What the rotation message shows beside the steps: usage of the old credential (after
    the switch) and the latest health result per consumer."""

    usage: Evidence | None = None
    health: Mapping[str, HealthLine] = field(default_factory=dict)
    # The usage in words at the time it was read ("usage evidence: cannot tell (why)", or
    # who used it when) and each unmapped consumer seen, by what identifies it.
    usage_line: str = ""
    unmapped: tuple[str, ...] = ()
    # Consumers whose catalog requires evidence their reports do not show yet, in words.
    missing: tuple[str, ...] = ()
    # Consumer -> each of its named checks on the new credential, in words.
    checks: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def class_in_words(failure_class: str | None) -> str:
    return CLASS_WORDS.get(failure_class or "unknown", failure_class or "failure")


# (rotation, consumer, reported version, ok) -> how the version compares with the rotation's
# (bot/services/evidence.py keeps it as the consumer's report).
VersionSeen = Callable[[Rotation, str, str, bool], Match]
# rotation -> consumer -> its named checks in words (bot/services/evidence.py).
CheckWords = Callable[[Rotation], Mapping[str, tuple[str, ...]]]


@dataclass
class HealthService:
    service: RotationService
    probe: HealthProbe
    # Set by EvidenceService.install: a reported version is evidence, compared and kept.
    version_seen: VersionSeen | None = None
    check_words: CheckWords | None = None

    def install(self) -> HealthService:
        """Run checks whenever an owner presses Validated (the service calls us back)."""
        self.service.step_checks.append(self.before_validated)
        return self

    def check_for(self, secret: str, consumer: str) -> HealthCheck | None:
        spec = self.service.catalog.secret(secret).consumers.get(consumer)
        return spec.health_check if spec is not None else None

    def before_validated(self, rotation: Rotation, consumer: str, actor: str) -> str | None:
        """The step check: ``None`` when the consumer has no health check, the evidence note
        when it passes; raises HealthCheckFailed (after recording an alert) when it fails."""
        hc = self.check_for(rotation.secret, consumer)
        if hc is None or rotation.id is None:
            return None
        c = rotation.consumer(consumer)
        result = self.probe.check(consumer, c.lane, hc)
        alert = self.service.record_health(
            rotation.id,
            consumer,
            actor=actor,
            ok=result.ok,
            failure_class=result.failure_class,
            reason=result.reason,
            version=result.reported_version,
        )
        if result.reported_version and self.version_seen is not None:
            seen = self.version_seen(rotation, consumer, result.reported_version, result.ok)
            if seen is Match.OLD:
                raise HealthCheckFailed(
                    f"{consumer} ({c.lane}) is not marked validated: its health check reports "
                    f"version {result.reported_version}, the old credential, not "
                    f"{new_credential(rotation)}. Reload it, then press Validated again."
                )
        if result.ok:
            return result.reason
        opened = f" {alert.ref} is open and blocks revocation until resolved." if alert else ""
        raise HealthCheckFailed(
            f"{consumer} ({c.lane}) is not marked validated: its health check failed with a "
            f"{class_in_words(result.failure_class)}: {result.reason}.{opened} Fix it, then "
            "press Validated again (the check runs again)."
        )

    def latest(self, rotation_id: int) -> dict[str, HealthLine]:
        """The most recent health result of each consumer in this rotation."""
        with self.service.uow_factory() as uow:
            events = uow.audit.for_rotation(rotation_id)
        lines: dict[str, HealthLine] = {}
        for e in events:
            if e.action != HEALTH_ACTION or "consumer" not in e.detail:
                continue
            name = e.detail["consumer"]
            lines[name] = HealthLine(
                consumer=name,
                ok=e.detail.get("ok") == "yes",
                failure_class=e.detail.get("failure_class") or None,
                reason=e.reason or "",
                version=e.detail.get("version") or None,
                at=e.at,
            )
        return lines

    def evidence(self, rotation: Rotation) -> RotationEvidence:
        """Evidence for the parent message. Usage is asked of the issuer only after the
        switch (observing/revocable), where it feeds the revocation gate."""
        health = self.latest(rotation.id) if rotation.id is not None else {}
        required = self.service.evidence_missing
        missing = tuple(required(rotation)) if required else ()
        checks = self.check_words(rotation) if self.check_words else {}
        if rotation.phase not in (Phase.OBSERVING, Phase.REVOCABLE):
            return RotationEvidence(health=health, missing=missing, checks=checks)
        usage = self.service.usage_of_old(rotation)
        now = self.service.clock.now()
        return RotationEvidence(
            usage=usage, health=health, usage_line=usage_line(usage, now),
            unmapped=tuple(unmapped_words(s, now) for s in unmapped(usage)),
            missing=missing, checks=checks,
        )
