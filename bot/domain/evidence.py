"""Consumer evidence as plain rules: what a consumer's report of its version means for a rotation.

A report says "consumer X runs version (or key id) V, and its check ``workflow`` passed or
failed at T". Compared with the rotation it falls in one of three kinds: the new credential,
the old one, or neither. From that follow the rules here, with no I/O and no clock of their
own: which step the report moves (``next_step``), whether it is drift (the old credential after
the consumer's lane moved, ``drift_reason``), what evidence a ``require_evidence`` consumer still
lacks (``missing_evidence``), and when a consumer that reports on a heartbeat has gone silent
(``silence_reason``). bot/services/evidence.py applies them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from bot.domain.durations import format_duration
from bot.domain.lifecycle import SWITCHED_PHASES, Phase, StepState
from bot.domain.rotation import Rotation, step_rank

# The actor of a step that a consumer's report moved (audit trail, message, thread).
EVIDENCE_ACTOR = "rotabot (evidence)"
# Phases in which a rotation "touches" its consumers: a lane's turn came, or the switch.
_TOUCHING = frozenset({Phase.DISTRIBUTING, Phase.VALIDATING, *SWITCHED_PHASES})


class Match(StrEnum):
    NEW = "new"  # the rotation's new version or key id
    OLD = "old"  # the version or key id consumers used before the rotation
    OTHER = "other"  # neither (another rotation's, a typo): recorded, moves nothing


@dataclass(frozen=True)
class EvidenceReport:
    """One report of a consumer, as received (``POST /evidence``) or read (a health check)."""

    consumer: str
    secret: str
    version: str | None
    key_id: str | None
    ok: bool
    at: datetime  # when the consumer says it checked (received time when it did not say)
    workflow: str | None = None
    source: str = "POST /evidence"
    lane: str = ""
    rotation_id: int | None = None
    id: int | None = None

    @property
    def runs(self) -> str:
        """What the consumer runs, in words: "version 7", "key k-2", "version 7 (key k-2)"."""
        if self.version and self.key_id:
            return f"version {self.version} (key {self.key_id})"
        return f"version {self.version}" if self.version else f"key {self.key_id}"


def _same(reported: str | None, known: str | None) -> bool:
    """Versions compare as labels, forgiving a leading 'v' ("v7" is version "7")."""
    if not reported or not known:
        return False

    def norm(v: str) -> str:
        v = v.strip().lower()
        return v[1:] if v[:1] == "v" and v[1:].isdigit() else v

    return norm(reported) == norm(known)


def match(rotation: Rotation, report: EvidenceReport) -> Match:
    if _same(report.version, rotation.new_version) or _same(report.key_id, rotation.new_key_id):
        return Match.NEW
    if _same(report.version, rotation.old_version) or _same(report.key_id, rotation.old_key_id):
        return Match.OLD
    return Match.OTHER


def new_credential(rotation: Rotation) -> str:
    """The rotation's new credential as a consumer would report it, in words."""
    if rotation.new_version and rotation.new_key_id:
        return f"version {rotation.new_version} (key {rotation.new_key_id})"
    if rotation.new_version:
        return f"version {rotation.new_version}"
    return f"key {rotation.new_key_id}" if rotation.new_key_id else "the new credential"


def evidence_note(report: EvidenceReport, step: StepState) -> str:
    """The step's note: "validated: inference-api reported version 7 at 09:12"."""
    check = f" ({report.workflow} passed)" if report.workflow and report.ok else ""
    return (f"{step.value}: {report.consumer} reported {report.runs}{check} "
            f"at {report.at.strftime('%H:%M')}")


def passed_workflows(rotation: Rotation, reports: Sequence[EvidenceReport]) -> set[str]:
    """The workflows whose check passed on the new credential ("" for a report naming none)."""
    return {r.workflow or "" for r in reports if r.ok and match(rotation, r) is Match.NEW}


def _validated_by(checks: Sequence[str], passed: Collection[str]) -> bool:
    """A consumer with named ``checks`` needs each to pass; without, any passing report."""
    return all(w in passed for w in checks) if checks else bool(passed)


def next_step(
    rotation: Rotation,
    report: EvidenceReport,
    *,
    passed: Collection[str] = (),
    checks: Sequence[str] = (),
) -> StepState | None:
    """The step this report (with the workflows that passed before, ``passed``) moves the
    consumer to, or None. A report of the new version is Distributed; a passing one (every
    named check passing) is Validated. Only the step whose turn it is moves."""
    if match(rotation, report) is not Match.NEW:
        return None
    turn = dict((c.name, s) for c, s in rotation.pending_steps()).get(report.consumer)
    if turn is StepState.DISTRIBUTED:
        return turn
    if turn is StepState.VALIDATED:
        done = set(passed) | ({report.workflow or ""} if report.ok else set())
        return turn if _validated_by(checks, done) else None
    return None


@dataclass(frozen=True)
class CheckLine:
    """One named check of a consumer on the new credential: its latest report, if any."""

    workflow: str
    report: EvidenceReport | None

    @property
    def words(self) -> str:
        if self.report is None:
            return f"{self.workflow}: not reported"
        verdict = "passed" if self.report.ok else "failed"
        return f"{self.workflow}: {verdict} at {self.report.at.strftime('%H:%M')}"


def check_lines(
    rotation: Rotation, checks: Sequence[str], reports: Sequence[EvidenceReport]
) -> list[CheckLine]:
    """Each named check's latest report on the new credential (``reports`` oldest first)."""
    latest: dict[str, EvidenceReport] = {}
    for r in reports:
        if r.workflow and match(rotation, r) is Match.NEW:
            latest[r.workflow] = r
    return [CheckLine(w, latest.get(w)) for w in checks]


def drift_reason(rotation: Rotation, report: EvidenceReport) -> str | None:
    """Why a report of the old credential is drift (its lane moved, or the switch), or None."""
    if rotation.terminal or match(rotation, report) is not Match.OLD:
        return None
    c = rotation.consumer(report.consumer)
    if rotation.phase in SWITCHED_PHASES:
        after = f"{rotation.ref} switched to {new_credential(rotation)}"
    elif step_rank(c.state) >= step_rank(StepState.DISTRIBUTED):
        after = (f"its lane ({c.lane}) moved to {new_credential(rotation)} "
                 f"(step: {c.state.value})")
    else:
        return None
    return (f"{c.name} ({c.lane}) reports {report.runs}, the old credential, after {after}")


def missing_evidence(
    rotation: Rotation,
    consumer: str,
    target: StepState,
    *,
    reports: Sequence[EvidenceReport],
    checks: Sequence[str] = (),
) -> str | None:
    """What a ``require_evidence`` consumer lacks for ``target`` (Distributed or Validated, or
    beyond), in words; None when its reports show it."""
    c = rotation.consumer(consumer)
    new = [r for r in reports if match(rotation, r) is Match.NEW]
    want = new_credential(rotation)
    who = f"{c.name} ({c.lane}) requires evidence"
    if not new:
        return f"{who}: no report of {want} from {c.name} yet"
    if step_rank(target) < step_rank(StepState.VALIDATED):
        return None
    passed = passed_workflows(rotation, reports)
    if _validated_by(checks, passed):
        return None
    if checks:
        lacking = ", ".join(w for w in checks if w not in passed)
        return f"{who}: no passing check on {want} yet for {lacking}"
    return f"{who}: no passing check on {want} yet"


def lane_reached_at(rotation: Rotation, lane: str) -> datetime | None:
    """When the rotation's turn came to ``lane``: the last step that validated the lanes
    before it, or the preparation for the first lane. None while it has not come."""
    if rotation.phase not in _TOUCHING or lane not in rotation.lanes:
        return None
    active = rotation.active_lane()
    index = rotation.lanes.index(lane)
    if active is not None and (index > rotation.lanes.index(active)
                               or not rotation.lane_open(lane)):
        return None
    earlier = [c.updated_at for c in rotation.consumers_in_order()
               if rotation.lanes.index(c.lane) < index and c.updated_at is not None]
    start = rotation.prepared_at or rotation.created_at
    return max([start, *earlier])


def silence_reason(
    rotation: Rotation,
    consumer: str,
    *,
    heartbeat: timedelta,
    last_report: datetime | None,
    now: datetime,
) -> str | None:
    """"nightly-ingest has not reported for 25m since R-4 reached staging", or None while the
    consumer reported within its heartbeat (or the rotation does not touch it yet)."""
    c = rotation.consumer(consumer)
    reached = lane_reached_at(rotation, c.lane)
    if reached is None:
        return None
    since = max(reached, last_report) if last_report is not None else reached
    quiet = now - since
    if quiet < heartbeat:
        return None
    what = f"since {rotation.ref} reached {c.lane}"
    if last_report is not None and last_report > reached:
        what = (f"since its last report at {last_report.strftime('%H:%M')} "
                f"({rotation.ref} is in {c.lane})")
    return (f"{c.name} has not reported for {format_duration(quiet)} {what}; "
            f"it reports every {format_duration(heartbeat)}")
