"""Rollback notes for owners, and the emergency re-rotation that replaces rollback after revoke.

Before revocation a rollback makes the previous credential current again (RotationService.
rollback); owners of ``restart`` and ``staged`` consumers must then act, so the thread names
them with their catalog rollback notes. After revocation there is nothing to go back to: the
old credential no longer exists. Rollback then means an emergency re-rotation: a new rotation
of the same secret marked urgent, whose owner reminders and escalations come four times sooner.

Plain Python: no Slack, no storage; handlers render what these return.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.catalog import Catalog
from bot.domain.errors import AlreadyActive, NotAuthorized, RotabotError
from bot.domain.lifecycle import Phase
from bot.domain.log_context import rotation_context
from bot.domain.reminders import URGENT_FACTOR
from bot.domain.rotation import Rotation
from bot.services.ports import UnitOfWork
from bot.services.rotations import RotationService, reminder_settings

__all__ = ["URGENT_FACTOR", "reminder_settings"]

log = logging.getLogger("rotabot.emergency")

ACTION_RE_ROTATION = "emergency.re-rotation"


@dataclass(frozen=True)
class OwnerNote:
    """A consumer whose owner must act after a rollback (restart or staged reload)."""

    consumer: str
    owner: str
    lane: str
    reload: str
    note: str | None


def owners_to_act(catalog: Catalog, secret: str) -> list[OwnerNote]:
    """Consumers that do not pick the restored credential up by themselves, lane order."""
    spec = catalog.secret(secret)
    lanes = list(catalog.settings_for(secret).lanes)

    def rank(lane: str) -> int:
        return lanes.index(lane) if lane in lanes else len(lanes)

    notes = [
        OwnerNote(name, c.owner, c.lane, str(c.reload), c.rollback)
        for name, c in spec.consumers.items()
        if str(c.reload) in ("restart", "staged")
    ]
    return sorted(notes, key=lambda n: (rank(n.lane), n.consumer))


@dataclass(frozen=True)
class EmergencyOutcome:
    rotation: Rotation  # the urgent rotation (new, or the one already running)
    started: bool  # False: one was already running; nothing was started


def require_admin(service: RotationService, revoked: Rotation, actor: str) -> None:
    """Only admins of the secret may start a rotation, urgent or not; a refusal is audited."""
    if service.is_admin(actor, revoked.secret):
        return
    why = f"only admins of {revoked.secret} may start an emergency re-rotation"
    service._audit_refusal(revoked.id, actor, ACTION_RE_ROTATION, why)
    raise NotAuthorized(why)


def start_emergency(
    service: RotationService, revoked_id: int, *, actor: str, reason: str | None = None
) -> EmergencyOutcome:
    """Start an urgent re-rotation of the secret a revoked rotation rotated. Admins only (as
    any start). Idempotent: while a rotation of the secret runs, a second request starts
    nothing and returns it. Audited on both rotations."""
    revoked = service.get(revoked_id)
    require_admin(service, revoked, actor)
    if revoked.phase is not Phase.REVOKED:
        raise RotabotError(
            f"{revoked.ref} is {revoked.phase.value}, not revoked: roll it back instead "
            f"(`/rotate rollback {revoked.ref}`)"
        )
    try:
        # An emergency does not wait for a hard cutover's readiness review: the admin's
        # confirmation stands in for it, and the cutover tells every owner what to do.
        fresh = service.start(revoked.secret, actor=actor, urgent=True, ready_confirmed=True)
    except AlreadyActive:
        with service.uow_factory() as uow:
            running = uow.rotations.active_for_secret(revoked.secret)
        if running is None:  # it finished between the two reads: let the caller retry
            raise
        return EmergencyOutcome(running, started=False)
    assert fresh.id is not None
    now = service.clock.now()

    def note_old(r: Rotation, uow: UnitOfWork) -> None:
        r.record_note(
            actor=actor, now=now, action=ACTION_RE_ROTATION, reason=reason,
            detail={"new_rotation": fresh.ref},
        )

    def note_new(r: Rotation, uow: UnitOfWork) -> None:
        r.record_note(
            actor=actor, now=now, action=ACTION_RE_ROTATION, reason=reason,
            detail={"replaces": revoked.ref},
        )

    service._mutate(revoked_id, note_old)
    service._mutate(fresh.id, note_new)
    log.warning(
        "emergency re-rotation %s started after %s", fresh.ref, revoked.ref,
        extra=rotation_context(fresh),
    )
    return EmergencyOutcome(service.get(fresh.id), started=True)
