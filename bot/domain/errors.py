"""Domain errors. Each message is written for the person who must act on it."""

from __future__ import annotations


class RotabotError(Exception):
    """Base for errors a user can act on; ``str(exc)`` is shown to them as is."""


class RotationNotFound(RotabotError):
    def __init__(self, rotation_ref: str) -> None:
        super().__init__(f"no rotation {rotation_ref}: `/rotate list` shows the active ones")
        self.rotation_ref = rotation_ref


class ChangedMeanwhile(RotabotError):
    """Optimistic concurrency: someone else changed the rotation between read and write."""

    def __init__(self, rotation_ref: str) -> None:
        super().__init__(
            f"{rotation_ref} was changed by someone else meanwhile; nothing was lost, try again"
        )
        self.rotation_ref = rotation_ref


class NotAuthorized(RotabotError):
    pass


class OutOfOrder(RotabotError):
    """A step asked for before the lane before it has validated."""


class GateClosed(RotabotError):
    """Revocation refused: the gate's unmet conditions, in words."""

    def __init__(self, rotation_ref: str, unmet: tuple[str, ...]) -> None:
        lines = "\n".join(f"• {u}" for u in unmet)
        super().__init__(f"{rotation_ref} cannot be revoked yet:\n{lines}")
        self.rotation_ref = rotation_ref
        self.unmet = unmet


class AlreadyActive(RotabotError):
    def __init__(self, secret: str, rotation_ref: str) -> None:
        super().__init__(f"{secret} is already being rotated in {rotation_ref}")
        self.secret = secret
        self.rotation_ref = rotation_ref


class GroupBusy(RotabotError):
    """Another secret of the same exclusive group (`groups:`) is being rotated."""

    def __init__(self, why: str) -> None:
        super().__init__(f"{why}; start this one after it finishes")
        self.why = why


class BusyElsewhere(RotabotError):
    """Another rotabot process (a replica) is doing this to the rotation right now."""


class StoreUnavailable(RotabotError):
    """The bot's own database cannot be reached; nothing was changed."""


class NotifyError(Exception):
    """Slack refused a post; the message says what the admin should do."""
