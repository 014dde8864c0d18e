"""The rotation a log line is about, as the ``extra=`` fields every layer attaches."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.domain.rotation import Rotation

CONTEXT_FIELDS = ("rotation_id", "rotation", "secret", "consumer", "lane", "alert_id", "kind")


def rotation_context(
    rotation: Rotation | None = None,
    *,
    consumer: str | None = None,
    lane: str | None = None,
    **more: Any,
) -> dict[str, Any]:
    """The ``extra=`` of a log line about a rotation: its id, ref, secret, and the
    consumer's name and lane when the line is about one consumer."""
    out: dict[str, Any] = {}
    if rotation is not None:
        out["rotation_id"] = rotation.id
        if rotation.id is not None:
            out["rotation"] = rotation.ref
        out["secret"] = rotation.secret
        if consumer is not None and lane is None and consumer in rotation.consumers:
            lane = rotation.consumers[consumer].lane
    if consumer is not None:
        out["consumer"] = consumer
    if lane is not None:
        out["lane"] = lane
    out.update({k: v for k, v in more.items() if v is not None})
    return out
