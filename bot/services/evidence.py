"""Consumer evidence: reports of what a consumer runs move its steps, gate clicks, and raise drift
and silence alerts.

A report (``POST /evidence``, handlers/evidence_http.py, or a health check's ``version_field``)
is checked against the catalog, stored (storage/evidence.py), then compared with the running
rotation by the rules of bot/domain/evidence.py:
- the new version moves the consumer to Distributed; a passing check on it (each of its named
  ``checks``) to Validated, through the same service path as an owner's click, with the
  evidence as actor and note;
- the old version after the consumer's lane moved (or after the switch) opens a ``drift``
  alert through AlertService, like any other failure;
- a consumer with ``require_evidence`` cannot be clicked past a step its reports do not show,
  and the gate names what it lacks;
- a consumer with a ``heartbeat`` that stops reporting while a rotation touches it opens a
  ``silent`` alert, once per rotation across replicas and restarts (the claim is a row in
  ``reminders_sent``, the timers' once-only record).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from bot.catalog.shapes import body_problems, token_shape, value_shape
from bot.domain.alert_intake import (
    MAX_JSON_DEPTH,
    AlertReport,
    SchemaError,
    json_depth_exceeds,
)
from bot.domain.errors import RotabotError
from bot.domain.evidence import (
    EVIDENCE_ACTOR,
    EvidenceReport,
    Match,
    check_lines,
    drift_reason,
    evidence_note,
    match,
    missing_evidence,
    next_step,
    passed_workflows,
    silence_reason,
)
from bot.domain.failures import Classification, FailureClass
from bot.domain.lifecycle import StepState
from bot.domain.reminders import ReminderLog
from bot.domain.rotation import Rotation
from bot.services.alerts import AlertService
from bot.services.health import HealthService
from bot.services.ports import EvidenceLog
from bot.services.rotations import RotationService

log = logging.getLogger("rotabot.evidence")

# The claim kind (reminders_sent) of a consumer's one silence alert per rotation.
SILENT_CLAIM = "silent"
_NAME = r"^[A-Za-z0-9._-]+$"
# A hex run this long is a digest (MD5 and up): a password's unsalted hash can be guessed.
_DIGEST_HEX = 32


def _number_as_text(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class EvidencePayload(BaseModel):
    """The JSON body of ``POST /evidence``. Unknown fields are refused, so a typo is named."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    consumer: str = Field(min_length=1, max_length=100, pattern=_NAME)
    secret: str | None = Field(default=None, min_length=1, max_length=100, pattern=_NAME)
    # A number is taken as its text: stores number their versions, senders write 7 or "7".
    version: Annotated[str | None, BeforeValidator(_number_as_text)] = Field(
        default=None, min_length=1, max_length=64)
    key_id: str | None = Field(default=None, min_length=1, max_length=200)
    ok: bool = True
    workflow: str | None = Field(default=None, min_length=1, max_length=100, pattern=_NAME)
    at: datetime | None = None  # ISO 8601 or unix seconds; default: when it arrived

    @model_validator(mode="after")
    def _says_what_it_runs(self) -> EvidencePayload:
        if self.version is None and self.key_id is None:
            raise ValueError("say which credential the consumer runs: version or key_id")
        return self


class EvidenceRequired(RotabotError):
    """A click that ``require_evidence`` makes insufficient: the consumer's reports do not
    show the step."""


class CredentialShaped(SchemaError):
    """A report carries something shaped like a credential or a digest of one."""


def _shape_of(name: str, value: str) -> str | None:
    """Why ``value`` (a report's ``name`` field) must not be stored, or None."""
    compact = value.replace("-", "").replace(":", "")
    if len(compact) >= _DIGEST_HEX and all(c in "0123456789abcdefABCDEF" for c in compact):
        return ("looks like a hash of a credential (an unsalted hash can be guessed): send "
                "the store's version number or the provider's key id")
    # Key ids of providers are random-looking by design: only known token shapes are refused.
    shape = token_shape(value) if name == "key_id" else value_shape(value)
    if shape is not None:
        return (f"looks like a credential ({shape}): send the version number or key id, "
                "never the value")
    return None


def parse_evidence(body: bytes, *, now: datetime) -> EvidenceReport:
    """A ``POST /evidence`` body as a report (lane and rotation are filled in by the service);
    SchemaError names the field, and never repeats what it held."""
    if json_depth_exceeds(body, MAX_JSON_DEPTH):
        raise SchemaError("body", f"nests objects and arrays deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise SchemaError("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise SchemaError("body", "must be a JSON object")
    # Before the schema: a credential under an unknown key must be refused as one, not named
    # as an unknown field whose value a sender might then move into a known one.
    for name in ("consumer", "secret", "version", "key_id", "workflow"):
        value = data.get(name)
        if isinstance(value, str) and (why := _shape_of(name, value)) is not None:
            raise CredentialShaped(name, why)
    # ("secret" names the catalog's secret here, not a credential: checked above.)
    for found in body_problems({k: v for k, v in data.items() if k != "secret"}):
        raise CredentialShaped("body", f"{found}; a report carries references only")
    try:
        p = EvidencePayload.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))[:100] or "body"
        kind = str(first.get("type", ""))
        problem: str | None = {
            "missing": "is required",
            "extra_forbidden": "is not a known field (consumer, secret, version, key_id, ok, "
                               "workflow, at)",
            "string_pattern_mismatch": "may only hold letters, digits, '.', '_' and '-'",
            "bool_parsing": "must be true or false",
            "bool_type": "must be true or false",
        }.get(kind)
        if problem is None:
            # pydantic's message describes the rule, not the value given.
            problem = "is invalid: " + str(first.get("msg", "")).lower()
        raise SchemaError(where, problem) from None
    at = p.at if p.at is not None else now
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return EvidenceReport(
        consumer=p.consumer, secret=p.secret or "", version=p.version, key_id=p.key_id,
        ok=p.ok, at=at, workflow=p.workflow,
    )


@dataclass(frozen=True)
class EvidenceOutcome:
    """What one report did, for the sender's answer."""

    report: EvidenceReport
    rotation: str | None = None  # the running rotation's ref
    matched: str | None = None  # Match value: new, old, other
    steps: tuple[str, ...] = ()  # steps it moved, in order
    alert: str | None = None  # the drift alert it opened or counted into
    note: str = ""


StepListener = Callable[[Rotation, str, StepState], None]


@dataclass
class EvidenceService:
    rotations: RotationService
    alerts: AlertService
    reports: EvidenceLog
    # The timers' once-only record; the silence alert of a consumer is claimed in it.
    reminders: ReminderLog | None = None
    # Told after a report moved a step (the Slack notifier updates the prompt it answers).
    on_step: list[StepListener] = field(default_factory=list)

    def install(self, health: HealthService | None = None) -> EvidenceService:
        """Clicks consult the consumer's evidence, and the gate names what is missing."""
        self.rotations.evidence_checks.append(self.before_click)
        self.rotations.evidence_missing = self.missing
        if health is not None:
            health.version_seen = self.from_health
            health.check_words = self.check_words
        return self

    # --- catalog ------------------------------------------------------------------------

    def _checks(self, secret: str, consumer: str) -> Sequence[str]:
        spec = self.rotations.catalog.secrets.get(secret)
        c = spec.consumers.get(consumer) if spec is not None else None
        return tuple(c.checks) if c is not None else ()

    def _required(self, secret: str, consumer: str) -> bool:
        try:
            return self.rotations.catalog.requires_evidence(secret, consumer)
        except RotabotError:  # the secret left the catalog mid-rotation
            return False

    # --- intake -------------------------------------------------------------------------

    def receive(self, report: EvidenceReport) -> EvidenceOutcome:
        """Check the report against the catalog (NotInCatalog, AmbiguousConsumer), keep it,
        and apply it to the running rotation of its secret."""
        target = self.alerts.resolve(AlertReport(
            consumer=report.consumer, secret=report.secret or None))
        with self.rotations.uow_factory() as uow:
            rotation = uow.rotations.active_for_secret(target.secret)
        running = rotation is not None and report.consumer in rotation.consumers
        report = replace(
            report, secret=target.secret, lane=target.lane,
            rotation_id=rotation.id if running and rotation is not None else None,
        )
        stored = self.reports.add(report, self.rotations.clock.now())
        log.info("evidence from %s (%s): %s", report.consumer, target.secret, report.runs)
        if rotation is None or not running:
            return EvidenceOutcome(
                stored, note=f"recorded; no rotation of {target.secret} is running")
        return self.apply(rotation, stored)

    def apply(self, rotation: Rotation, report: EvidenceReport) -> EvidenceOutcome:
        """Move the steps the report shows, then look for drift."""
        assert rotation.id is not None
        checks = self._checks(rotation.secret, report.consumer)
        moved: list[str] = []
        for _ in range(2):  # Distributed, then Validated
            passed = passed_workflows(rotation, self.reports.for_rotation(
                rotation.id, report.consumer))
            step = next_step(rotation, report, passed=passed, checks=checks)
            if step is None:
                break
            outcome = self.rotations.step_from_evidence(
                rotation.id, report.consumer, step, actor=EVIDENCE_ACTOR,
                note=evidence_note(report, step))
            rotation = outcome.rotation
            if not outcome.changed:
                break
            moved.append(step.value)
            for listener in self.on_step:
                listener(rotation, report.consumer, step)
        alert = None
        drift = drift_reason(rotation, report)
        if drift is not None:
            result = self.alerts.ingest(
                AlertReport(consumer=report.consumer, secret=rotation.secret,
                            lane=report.lane or None, source=report.source),
                verdict=Classification(FailureClass.DRIFT, drift),
            )
            alert = result.alert.ref
        kind = match(rotation, report)
        words = {Match.NEW: "the new credential", Match.OLD: "the old credential",
                 Match.OTHER: "neither the new nor the old credential"}[kind]
        note = f"{report.consumer} runs {words} of {rotation.ref}"
        if moved:
            note += f"; marked {' and '.join(moved)}"
        if alert:
            note += f"; drift alert {alert}"
        return EvidenceOutcome(report, rotation.ref, kind.value, tuple(moved), alert, note)

    def from_health(
        self, rotation: Rotation, consumer: str, version: str, ok: bool
    ) -> Match:
        """A health check read the version the consumer runs: kept like a report (its
        heartbeat, its evidence), drift raised like one. Returns how it compares."""
        assert rotation.id is not None
        c = rotation.consumer(consumer)
        report = self.reports.add(EvidenceReport(
            consumer=consumer, secret=rotation.secret, version=version, key_id=None, ok=ok,
            at=self.rotations.clock.now(), source=f"health check of {consumer}",
            lane=c.lane, rotation_id=rotation.id,
        ), self.rotations.clock.now())
        if drift_reason(rotation, report) is not None:
            self.apply(rotation, report)
        return match(rotation, report)

    # --- clicks and the gate ------------------------------------------------------------

    def before_click(
        self, rotation: Rotation, consumer: str, target: StepState, actor: str
    ) -> str | None:
        """An owner clicked Distributed or Validated: the consumer's latest report on the new
        credential becomes the step's note; with ``require_evidence`` and no such report the
        click is refused, saying what is missing."""
        if rotation.id is None:
            return None
        reports = self.reports.for_rotation(rotation.id, consumer)
        if self._required(rotation.secret, consumer):
            missing = missing_evidence(rotation, consumer, target, reports=reports,
                                       checks=self._checks(rotation.secret, consumer))
            if missing is not None:
                why = (f"{missing}. A click is not enough for {consumer} (require_evidence): "
                       f"it reports through POST /evidence or its health check; nothing "
                       "changed")
                self.rotations.refuse(rotation.id, actor, f"{target.value} {consumer}", why,
                                      consumer)
                raise EvidenceRequired(why)
        new = [r for r in reports if match(rotation, r) is Match.NEW
               and (r.ok or target is StepState.DISTRIBUTED)]
        return evidence_note(new[-1], target) if new else None

    def check_words(self, rotation: Rotation) -> dict[str, tuple[str, ...]]:
        """Consumer -> each of its named ``checks`` on the new credential, in words, for the
        rotation message ("retrieval: passed at 09:12", "ingestion: not reported")."""
        named = {c.name: self._checks(rotation.secret, c.name)
                 for c in rotation.consumers_in_order()}
        named = {k: v for k, v in named.items() if v}
        if rotation.id is None or rotation.terminal or not named:
            return {}
        reports = self.reports.for_rotation(rotation.id)
        return {
            name: tuple(line.words for line in check_lines(
                rotation, checks, [r for r in reports if r.consumer == name]))
            for name, checks in named.items()
        }

    def missing(self, rotation: Rotation) -> list[str]:
        """The gate's lines for consumers whose required evidence is missing."""
        if rotation.id is None or rotation.terminal:
            return []
        required = [c for c in rotation.consumers_in_order()
                    if self._required(rotation.secret, c.name)]
        if not required:
            return []
        reports = self.reports.for_rotation(rotation.id)
        out: list[str] = []
        for c in required:
            line = missing_evidence(
                rotation, c.name, StepState.VALIDATED,
                reports=[r for r in reports if r.consumer == c.name],
                checks=self._checks(rotation.secret, c.name))
            if line is not None:
                out.append(line)
        return out

    # --- silence ------------------------------------------------------------------------

    def run_silence(self) -> int:
        """Timer job (the leader's): a ``silent`` alert for each consumer on a heartbeat that
        stopped reporting while a rotation touches it, once per rotation and consumer."""
        if self.reminders is None or not any(
            c.heartbeat is not None for spec in self.rotations.catalog.secrets.values()
            for c in spec.consumers.values()
        ):
            return 0  # nothing reports on a heartbeat: no query each tick
        count = 0
        for rotation in self.rotations.active():
            spec = self.rotations.catalog.secrets.get(rotation.secret)
            if rotation.id is None or spec is None:
                continue
            for name, c in spec.consumers.items():
                if c.heartbeat is None or name not in rotation.consumers:
                    continue
                now = self.rotations.clock.now()
                reason = silence_reason(
                    rotation, name, heartbeat=c.heartbeat,
                    last_report=self.reports.last_received(rotation.secret, name), now=now)
                if reason is None or not self.reminders.claim(rotation.id, name, SILENT_CLAIM,
                                                              now):
                    continue
                try:
                    self.alerts.ingest(
                        AlertReport(consumer=name, secret=rotation.secret, lane=c.lane,
                                    source="heartbeat"),
                        verdict=Classification(FailureClass.SILENT, reason),
                    )
                except Exception:
                    # Not raised: forget the claim so the next tick tries again.
                    self.reminders.release(rotation.id, name, SILENT_CLAIM)
                    raise
                count += 1
        return count
