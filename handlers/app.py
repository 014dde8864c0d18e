"""Builds the Bolt app and registers every listener. Called by the composition root only."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from slack_bolt import App, BoltRequest, BoltResponse
from slack_sdk import WebClient

from handlers import actions, alert_actions, commands, home, schedule_actions, views
from handlers.deps import Deps
from handlers.respond import CATALOG_CHECK, CATALOG_PIN, register_error_handler

log = logging.getLogger("rotabot.handlers")

# Where Bolt's messages turn from fixed text to request data: "Invalid request signature
# detected (signature: ..., body: ...)", "request body: {...}", "Unhandled request ({...})".
_DETAILS = re.compile(r"\s*(?:[(\[{:%]|\bbody\b)")


class WithholdRequestDetails(logging.Filter):
    """Cuts every Bolt log message at the first request detail (signature, timestamp, body,
    payload, response_url): the fixed text before it says what happened; the rest is the
    sender's, forged or not. Bolt puts details into the message text itself (f-strings), so
    a formatter cannot tell them apart."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        cut = _DETAILS.search(text)
        if cut is not None or record.args:
            head = text[: cut.start()] if cut is not None else text
            record.msg = f"{head.strip() or 'Bolt message'} (details withheld)"
            record.args = None
        return True


def bolt_logger() -> logging.Logger:
    """The logger Bolt is given: ``slack_bolt`` (held at the library log level by
    bot.runtime.logs) with the details filter. Bolt copies its level and filters onto each of
    its own loggers, including the one for request verification."""
    logger = logging.getLogger("slack_bolt")
    if not any(isinstance(f, WithholdRequestDetails) for f in logger.filters):
        logger.addFilter(WithholdRequestDetails())
    return logger


# What a replica running a stale catalog still answers: how to get out of that state.
_CATALOG_FREE_COMMANDS = frozenset({"", "help", "reload"})


def _acts(body: dict[str, Any]) -> bool:
    """Does this request act (a command but help/reload, a click, a modal submission)?"""
    if "command" in body:
        words = str(body.get("text") or "").split()
        return (words[0].lower() if words else "") not in _CATALOG_FREE_COMMANDS
    return body.get("type") in ("block_actions", "view_submission")


def catalog_middleware(
    deps: Deps,
) -> Callable[[BoltRequest, Callable[[], BoltResponse | None]], BoltResponse | None]:
    """Pins the catalog for each request, and hands requests that act the check that this
    replica runs the newest catalog (run after the ack by handlers.respond.reported)."""

    # Bolt passes arguments by name: ``req`` and ``next``.
    def check_catalog(
        req: BoltRequest, next: Callable[[], BoltResponse | None]
    ) -> BoltResponse | None:
        req.context[CATALOG_PIN] = deps.rotations.pinned
        body = req.body if isinstance(req.body, dict) else {}
        if deps.catalog_keeper is not None and _acts(body):
            req.context[CATALOG_CHECK] = deps.catalog_keeper.guard
        return next()

    return check_catalog


LISTENER_THREADS = 32


def build_bolt_app(
    deps: Deps,
    *,
    client: WebClient,
    signing_secret: str | None,
    process_before_response: bool = False,
) -> App:
    """``process_before_response=True`` finishes each listener before the HTTP answer
    (FaaS hosts need it; property tests use it to compare state after every click)."""
    app = App(
        client=client,
        signing_secret=signing_secret,
        token_verification_enabled=False,  # no auth.test at start: the token is checked on use
        # Default: ack returns at once; listeners finish in a worker.
        process_before_response=process_before_response,
        request_verification_enabled=True,
        # Not Bolt's default loggers (which take the root's level, DEBUG with ours): these
        # are capped with the other libraries and never show a request's details.
        logger=bolt_logger(),
        # Bolt's default is 5 threads, and a listener acks from its thread: five listeners
        # waiting on the database or Slack would leave the next request unacked (Bolt then
        # answers 404 after 3 s). Waits for Slack's pace are queued off these threads.
        listener_executor=ThreadPoolExecutor(max_workers=LISTENER_THREADS,
                                             thread_name_prefix="bolt-listener"),
    )
    # Listeners raise; this one handler tells the person (ephemeral or DM) and logs.
    register_error_handler(app)
    app.use(catalog_middleware(deps))
    commands.register(app, deps)
    actions.register(app, deps)
    views.register(app, deps)
    home.register(app, deps)
    alert_actions.register(app, deps)
    schedule_actions.register(app, deps)
    return app
