"""Action and callback ids, and the typed metadata carried in button values."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from bot.domain.lifecycle import StepState


class Action(StrEnum):
    STEP = "rotabot.step"  # Distributed / Validated / Sign off
    REPORT_PROBLEM = "rotabot.report_problem"
    SWITCH = "rotabot.switch"
    REVOKE = "rotabot.revoke"
    REVOKE_OVERRIDE = "rotabot.revoke_override"
    ROLLBACK = "rotabot.rollback"
    CANCEL = "rotabot.cancel"
    RESUME = "rotabot.resume"
    CHECK_STORE = "rotabot.check_store"
    ALERT_ROLLBACK = "rotabot.alert_rollback"
    ALERT_NOT_RELATED = "rotabot.alert_not_related"
    ALERT_ACK = "rotabot.alert_ack"
    CONFIRM_READY = "rotabot.confirm_ready"  # an owner confirms a scheduled rotation
    CANCEL_REVIEW = "rotabot.cancel_review"  # an admin calls off a hard cutover's review
    EMERGENCY_ROTATE = "rotabot.emergency_rotate"  # after revocation: an urgent re-rotation
    APPROVE_BREAK_GLASS = "rotabot.approve_break_glass"  # a second admin, two-person revoke
    SWITCH_AFTER_FREEZE = "rotabot.switch_after_freeze"  # queue a frozen switch for its end
    CANCEL_QUEUED_SWITCH = "rotabot.cancel_queued_switch"


class View(StrEnum):
    START = "rotabot.view.start"
    REPORT_PROBLEM = "rotabot.view.report_problem"
    REVOKE_OVERRIDE = "rotabot.view.revoke_override"
    ROLLBACK = "rotabot.view.rollback"
    EMERGENCY = "rotabot.view.emergency"
    ALERT_NOT_RELATED = "rotabot.view.alert_not_related"
    APPROVE_BREAK_GLASS = "rotabot.view.approve_break_glass"


class StepButton(BaseModel):
    rotation_id: int
    consumer: str
    step: StepState


class RotationButton(BaseModel):
    rotation_id: int


class AlertButton(BaseModel):
    alert_id: int
    rotation_id: int | None = None
    consumer: str | None = None


class NotRelatedMeta(BaseModel):
    """The Not related modal's private metadata: the alert, and the message clicked."""

    alert_id: int
    channel: str | None = None
    ts: str | None = None


class BadButton(Exception):
    """A button value that does not parse: forged or from an older version."""


M = TypeVar("M", bound=BaseModel)


def parse_value(model: type[M], value: str | None) -> M:
    try:
        return model.model_validate_json(value or "")
    except ValidationError:
        raise BadButton(
            "this button is out of date; use `/rotate status` to get a fresh one"
        ) from None
