"""Turning errors into messages a person can act on, in one place."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from bot.catalog import UnknownSecret
from bot.domain.commands import CommandError
from bot.domain.credentials import IssuerError, StoreError
from bot.domain.errors import NotifyError, RotabotError
from bot.domain.lifecycle import IllegalTransition
from handlers import blocks
from handlers.ids import BadButton

log = logging.getLogger("rotabot.handlers")

Respond = Callable[..., Any]


def user_message(exc: BaseException) -> blocks.Rendered:
    """The message for an error; unexpected ones get a reference, never a traceback."""
    if isinstance(exc, CommandError):
        return blocks.error_message(str(exc), exc.usage)
    if isinstance(exc, UnknownSecret):
        return blocks.error_message(str(exc))
    if isinstance(exc, IllegalTransition):
        return blocks.error_message(f"not possible now: {exc}")
    if isinstance(exc, RotabotError | NotifyError | BadButton | StoreError | IssuerError):
        return blocks.error_message(str(exc))
    ref = uuid.uuid4().hex[:8]
    log.error("unexpected error %s: %s", ref, type(exc).__name__, exc_info=exc)
    return blocks.error_message(
        f"something went wrong on rotabot's side (ref {ref}); nothing was changed by this "
        "request. An admin can find the details in the logs under that ref."
    )


def ephemeral(respond: Respond, rendered: blocks.Rendered) -> None:
    text, body = rendered
    respond(
        text=text,
        blocks=[b.to_dict() for b in body],
        response_type="ephemeral",
        replace_original=False,
    )
