"""What an alert says about its rotation, in plain words, from stored facts only.

"inference-api (prod) is failing authentication, 4 min after R-42 switched model-api-key to
the new credential": the phase, the minutes since the switch (or preparation, start,
revocation, rollback), the lane and the owner. Pure: the alert service loads the facts.

The text is Slack mrkdwn: names from the catalog and the alert are escaped (``escape_mrkdwn``),
the owner is a mention, so renderers post it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.domain.alert import Alert
from bot.domain.lifecycle import Phase
from bot.domain.mentions import escape_mrkdwn, mention
from bot.domain.rotation import Rotation

# A finished rotation still explains a failure this long after it ended (the forgotten
# consumer that breaks when the old credential is revoked).
RECENT_ROTATION = timedelta(days=7)

CLASS_WORDS = {
    "authentication": "is failing authentication",
    "rate-limit": "is being rate-limited",
    "payload": "is failing with payload errors",
    "network": "is failing with network errors",
    "unknown": "is failing (cause not recognised)",
    "drift": "still runs the old credential (drift)",
    "silent": "has gone silent (no report within its heartbeat)",
}


@dataclass(frozen=True)
class AlertContext:
    """What an alert says about its rotation, computed from stored facts."""

    text: str
    lane: str
    owner: str | None
    reload: str | None
    began_during_rotation: bool
    rotation_id: int | None = None
    rotation_ref: str | None = None
    phase: str | None = None
    minutes: int | None = None  # since `since`
    since: str | None = None  # "switch", "preparation", "start", "revocation", "rollback"


def prompt_rotation(alert: Alert, context: AlertContext) -> int | None:
    """The rotation an alert's buttons act on: its own (Roll back), or, for a failure that
    began after a rotation revoked the old credential, that revoked rotation: rollback is
    impossible then, so the message offers an emergency re-rotation of it instead (the
    renderer tells the two apart: only the second has ``alert.rotation_id`` None)."""
    if alert.rotation_id is not None:
        return alert.rotation_id
    return context.rotation_id if context.since == "revocation" else None


def _span(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    return f"{hours // 24} d"


def describe(
    *,
    consumer: str,
    lane: str,
    failure_class: str,
    secret: str,
    began: datetime,
    rotation: Rotation | None,
    last_finished: Rotation | None = None,
    owner: str | None = None,
    reload: str | None = None,
) -> AlertContext:
    """The alert in plain words, e.g. "inference-api (prod) is failing authentication, 4 min
    after R-42 switched model-api-key to the new credential" (mrkdwn, names escaped)."""
    consumer, secret = escape_mrkdwn(consumer), escape_mrkdwn(secret)
    head = f"{consumer} ({escape_mrkdwn(lane)}) {CLASS_WORDS.get(failure_class, 'is failing')}"
    rid = ref = phase = since = None
    minutes: int | None = None
    during = False
    if rotation is not None:
        rid, ref, phase = rotation.id, rotation.ref, rotation.phase.value
        during = began >= rotation.created_at
        if not during:
            text = f"{head}; it began before {ref} started rotating {secret}, so not caused by it"
        elif rotation.switched_at is not None and began >= rotation.switched_at:
            since, anchor = "switch", rotation.switched_at
            text = (
                f"{head}, {_span(began - anchor)} after {ref} switched {secret} "
                "to the new credential"
            )
        elif rotation.prepared_at is not None and began >= rotation.prepared_at:
            since, anchor = "preparation", rotation.prepared_at
            text = (
                f"{head}, {_span(began - anchor)} after {ref} prepared the new {secret} "
                "credential (not switched yet)"
            )
        else:
            since, anchor = "start", rotation.created_at
            text = f"{head}, {_span(began - anchor)} after {ref} started rotating {secret}"
        if since is not None:
            minutes = int((began - anchor).total_seconds() // 60)
    elif (
        last_finished is not None
        and last_finished.finished_at is not None
        and last_finished.phase in (Phase.REVOKED, Phase.ROLLED_BACK)
        and timedelta(0) <= began - last_finished.finished_at <= RECENT_ROTATION
    ):
        ago = began - last_finished.finished_at
        rid, ref, phase = last_finished.id, last_finished.ref, last_finished.phase.value
        minutes = int(ago.total_seconds() // 60)
        if last_finished.phase is Phase.REVOKED:
            since = "revocation"
            text = (
                f"{head}, {_span(ago)} after {ref} revoked the old {secret} credential "
                "(no rotation is running; a consumer still on the old credential fails like this)"
            )
        else:
            since = "rollback"
            text = f"{head}, {_span(ago)} after {ref} rolled {secret} back (no rotation is running)"
    else:
        text = f"{head}; no rotation of {secret} is running"
    extra = []
    if owner:
        extra.append(f"owner {mention(owner)}")
    if reload:
        extra.append(f"reload {escape_mrkdwn(reload)}")
    if rotation is not None:
        extra.append(f"{ref} is {phase}")
    if extra:
        details = ", ".join(extra)
        text = f"{text}. {details[:1].upper()}{details[1:]}."
    return AlertContext(
        text=text,
        lane=lane,
        owner=owner,
        reload=reload,
        began_during_rotation=during,
        rotation_id=rid,
        rotation_ref=ref,
        phase=phase,
        minutes=minutes,
        since=since,
    )
