"""Distribution targets: the new credential written where each lane's consumers read it, on
that lane's turn, and the previous one written back on rollback or cancel.

A lane's targets are written in catalog order. If one cannot be written, the targets this
attempt already wrote get the previous credential back, so a lane is either open (every
target holds the new credential) or not open at all, and the rotation pauses naming the
target and the error class. Reload hooks run after each write; their result is told in the
thread and never blocks the lane (the owners' validation is what says the consumer works).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.domain.credentials import ReloadFailed, StoreError
from bot.domain.errors import RotabotError
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import LaneTarget

log = logging.getLogger("rotabot.distribution")


@dataclass(frozen=True)
class Written:
    """One target write: where, the version the target now holds, the reload hook's result."""

    target: str
    version: str
    reload: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"target": self.target, "version": self.version}
        if self.reload is not None:
            out["reload"] = self.reload
        return out


def written_json(written: Sequence[Written]) -> str:
    """How writes ride in an audit event's detail (references and hook results only)."""
    return json.dumps([w.as_dict() for w in written])


def written_from_json(text: str | None) -> list[Written]:
    try:
        items = json.loads(text or "[]")
    except ValueError:
        return []
    return [
        Written(str(i.get("target", "?")), str(i.get("version", "")), i.get("reload"))
        for i in items
        if isinstance(i, dict)
    ]


class TargetWriteFailed(RotabotError):
    """A target could not be written; the message names it and the error class."""


def write_lane(
    lane: str,
    targets: Sequence[LaneTarget],
    new: SecretMaterial,
    previous: SecretMaterial | None,
    event: Mapping[str, str],
) -> list[Written]:
    """Write ``new`` to every target of ``lane``, kicking each one's reload hook. On a
    failure the targets written so far get ``previous`` back and TargetWriteFailed says
    which target failed and what was undone."""
    written: list[Written] = []
    for t in targets:
        try:
            version = t.target.write(new)
        except StoreError as exc:
            failure = (
                f"could not write the {lane} lane's target {t.label} ({type(exc).__name__}: "
                f"{exc})"
            )
            break
        written.append(Written(t.label, version, _kick(t, event, version)))
    else:
        return written
    undone, stuck = _undo([t for t in targets if t.label in {w.target for w in written}],
                          previous, event)
    if undone:
        failure += f"; {', '.join(undone)} got the previous credential back"
    if stuck:
        failure += f"; still holding the new credential: {', '.join(stuck)}"
    raise TargetWriteFailed(failure)


def write_everywhere(
    by_lane: Mapping[str, Sequence[LaneTarget]],
    lanes: Sequence[str],
    new: SecretMaterial,
    event: Mapping[str, str],
) -> dict[str, list[Written]]:
    """A hard cutover (or its re-issue): ``new`` to every lane's targets at once, in lane
    order. Nothing is written back on a failure: the value before is dead, so the targets
    already written keep ``new`` and a retry writes them all again. Raises TargetWriteFailed
    naming the target."""
    return {
        lane: write_lane(lane, by_lane[lane], new, None, {**event, "lane": lane})
        for lane in lanes
        if by_lane.get(lane)
    }


def restore_targets(
    targets: Sequence[LaneTarget],
    previous: SecretMaterial,
    event: Mapping[str, str],
    what: str = "the previous credential back",
) -> list[Written]:
    """Write ``previous`` back to ``targets`` (a rollback or cancel; ``what`` names it in an
    error). Raises StoreError, naming the target, at the first one that cannot be written (a
    retry writes them all again: writing what a target already holds adds no version)."""
    restored: list[Written] = []
    for t in targets:
        try:
            version = t.target.write(previous)
        except StoreError as exc:
            raise StoreError(
                f"could not write {what} to {t.label} ({type(exc).__name__}: {exc})"
            ) from None
        restored.append(Written(t.label, version, _kick(t, event, version)))
    return restored


def select(
    by_lane: Mapping[str, Sequence[LaneTarget]], labels: Sequence[str]
) -> tuple[list[LaneTarget], list[str]]:
    """The built targets named ``labels`` (what a rotation wrote), and the labels no longer
    in the catalog (they cannot be restored by rotabot)."""
    known = {t.label: t for targets in by_lane.values() for t in targets}
    return [known[label] for label in labels if label in known], [
        label for label in labels if label not in known
    ]


def _undo(
    targets: Sequence[LaneTarget], previous: SecretMaterial | None, event: Mapping[str, str]
) -> tuple[list[str], list[str]]:
    if previous is None:
        # A first credential has nothing before it: the targets keep the new one.
        return [], [t.label for t in targets]
    undone: list[str] = []
    stuck: list[str] = []
    for t in targets:
        try:
            version = t.target.write(previous)
        except StoreError as exc:
            log.error("could not write the previous credential back to %s: %s", t.label, exc)
            stuck.append(t.label)
            continue
        _kick(t, event, version)
        undone.append(t.label)
    return undone, stuck


def _kick(t: LaneTarget, event: Mapping[str, str], version: str) -> str | None:
    if t.hook is None:
        return None
    try:
        return t.hook.call({**event, "target": t.label, "version": version})
    except ReloadFailed as exc:
        log.warning("reload hook of %s failed: %s", t.label, exc)
        return f"failed: {exc}"
