"""Each verified Slack request is taken once: replays are acknowledged and ignored.

A Bolt global middleware (registered by ``bot.runtime.server.bolt_app`` with ``app.use``) runs
after Bolt's own RequestVerification, so only verified signatures are ever remembered
(unsigned junk cannot fill the table). It does no I/O itself: it hands the listener wrapper
(``handlers.respond.reported``) a check to run *right after the listener acks*. The database
is asked in the listener's worker thread, never on the ack path, so a stalled database
cannot make Slack wait past its 3 seconds; a signature seen before, by this process or any
other on the same database, is a replay: the listener stops after its ack (200, nothing
done) and one warning line says so.

When the database cannot tell (StoreUnavailable) the request is refused, not taken on trust:
the error reaches the person as every listener error does. Socket Mode requests carry no
signature (the WebSocket is authenticated instead) and pass through; repeated actions there
are caught by the action ids (ActionLog).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from slack_bolt import BoltRequest, BoltResponse

from bot.domain.replay import SeenSignatures
from handlers.respond import FIRST_TIME

log = logging.getLogger("rotabot.slack")

Middleware = Callable[[BoltRequest, Callable[[], BoltResponse | None]], BoltResponse | None]


def ignore_replays(seen: SeenSignatures) -> Middleware:
    """The middleware, remembering signatures in ``seen``."""

    # Bolt passes arguments by name: ``req`` and ``next`` (Bolt's names, builtin or not).
    def ignore_replayed_requests(
        req: BoltRequest, next: Callable[[], BoltResponse | None]
    ) -> BoltResponse | None:
        signature = (req.headers.get("x-slack-signature") or [""])[0]
        if req.mode == "socket_mode" or not signature:
            return next()
        kind = _request_type(req)

        def first_time() -> bool:
            if seen.first_time(signature):
                return True
            log.warning("ignored a replayed Slack request (%s): its signature was taken before",
                        kind)
            return False

        req.context[FIRST_TIME] = first_time
        return next()

    return ignore_replayed_requests


def _request_type(req: BoltRequest) -> str:
    body = req.body if isinstance(req.body, dict) else {}
    if "command" in body:
        return "command"
    return str(body.get("type") or "unknown")
