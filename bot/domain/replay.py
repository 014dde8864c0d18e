"""Slack requests taken once: replayed requests ignored, repeated user actions answered.

Two layers, both kept in the database every replica shares (storage/slack_requests.py):

- A request's ``X-Slack-Signature`` covers its timestamp and body, and Bolt refuses a timestamp
  more than :data:`SIGNATURE_TOLERANCE_SECONDS` away. Remembering each *verified* signature for
  longer than that window either way means an identical request sent again (a captured one
  replayed, or a duplicate from a proxy) is recognised wherever and whenever it lands:
  :class:`SeenSignatures`, checked by a Bolt global middleware (bot/runtime/slack_replay.py).
- A slash command or modal submission names the user action it comes from (Slack's
  ``trigger_id``, a modal's view id). An action that creates something (a rotation, an alert)
  records what it created under that id, so the same action processed twice, with a
  different signature (Slack or a proxy sending it again, Socket Mode redelivering it) or on
  another replica, creates nothing new and answers with the first result: :class:`ActionLog`
  and :func:`once`.

Plain Python: the ports are implemented in storage/, the composition root wires them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Protocol, TypeVar

from bot.domain.errors import RotabotError

T = TypeVar("T")

# slack_sdk's SignatureVerifier, which Bolt's RequestVerification uses, accepts a request
# timestamp at most five minutes away from the clock, either way.
SIGNATURE_TOLERANCE_SECONDS = 300


class SeenSignatures(Protocol):
    """The signatures of verified Slack requests taken within the signature window."""

    def first_time(self, signature: str) -> bool:
        """True (and remembered) the first time ``signature`` is offered; False for an
        identical request seen before, by this process or any other. Raises StoreUnavailable
        when it cannot tell: the request is then refused, never taken on trust."""
        ...


class ActionInFlight(RotabotError):
    """The same user action is being processed by another request right now."""

    def __init__(self) -> None:
        super().__init__(
            "this request is already being processed (Slack sent it twice); nothing new was "
            "started. Its result will show where it usually does."
        )


class ActionLog(Protocol):
    """What each user action created, so processing it again creates nothing.

    ``begin`` before any effect: None means go ahead (the id is now held for a short lease),
    a string is what the first processing recorded. ActionInFlight: another request holds
    the id and has not finished. Then ``finish`` with what was created as soon as it is
    committed, or ``release`` when nothing was created (the action may be processed again).
    """

    def begin(self, action_id: str) -> str | None: ...

    def finish(self, action_id: str, result: str) -> None: ...

    def release(self, action_id: str) -> None: ...


def once(
    log: ActionLog | None,
    action_id: str | None,
    *,
    first: Callable[[Callable[[str], None]], T],
    again: Callable[[str], T],
) -> T:
    """Run ``first`` for a new action; for one processed before, ``again(result)``.

    ``first`` is handed ``created(result)``, to call as soon as what it created is committed
    (before slower work such as minting a credential), so a repeat arriving meanwhile is
    answered from the record. If ``first`` raises before calling it, the id is released: the
    action created nothing, and a retry of it is processed afresh. Without a log or an id
    (the CLI, unit tests, a payload without one) ``first`` simply runs.
    """
    if log is None or not action_id:
        return first(lambda result: None)
    earlier = log.begin(action_id)
    if earlier is not None:
        return again(earlier)
    made = False

    def created(result: str) -> None:
        nonlocal made
        made = True  # committed: never release it, even if recording the result fails
        log.finish(action_id, result)

    try:
        outcome = first(created)
    except BaseException:
        if not made:
            # Its lease lapses instead; the error already leaving is the one that matters.
            with suppress(Exception):
                log.release(action_id)
        raise
    if not made:
        log.release(action_id)
    return outcome
