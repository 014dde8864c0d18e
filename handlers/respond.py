"""Turning errors into messages a person can act on, in one place: the app's error handler."""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from slack_bolt import App, BoltContext, BoltResponse
from slack_bolt.kwargs_injection.args import Args
from slack_sdk import WebClient

from bot.catalog import UnknownSecret
from bot.domain.commands import CommandError
from bot.domain.credentials import IssuerError, StoreError
from bot.domain.errors import NotifyError, RotabotError
from bot.domain.freeze import Frozen
from bot.domain.lifecycle import IllegalTransition
from handlers import blocks
from handlers.ids import BadButton

log = logging.getLogger("rotabot.handlers")

Respond = Callable[..., Any]


def user_message(exc: BaseException) -> blocks.Rendered:
    """The message for an error; unexpected ones get a reference, never a traceback."""
    if isinstance(exc, CommandError):
        return blocks.error_message(str(exc), exc.usage)
    if isinstance(exc, Frozen) and exc.queue_rotation is not None:
        return blocks.frozen_switch_message(str(exc), exc.queue_rotation)
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


def direct_message(client: WebClient, user: str, rendered: blocks.Rendered) -> None:
    """Tell one person something where no channel answers: a modal's submitter."""
    channel = client.conversations_open(users=user)["channel"]["id"]
    text, body = rendered
    client.chat_postMessage(channel=channel, text=text, blocks=[b.to_dict() for b in body])


def tell(error: Exception, body: dict[str, Any], context: BoltContext, client: WebClient) -> None:
    """The one place a listener's error becomes what the person sees: an ephemeral reply where
    Slack gave a response_url (commands, message buttons), a DM otherwise (modal submissions,
    App Home clicks); an event nobody acted on is only logged (by user_message)."""
    rendered = user_message(error)
    user = (body.get("user") or {}).get("id") or body.get("user_id")
    try:
        respond = context.respond
        if context.response_url and respond is not None:
            ephemeral(respond, rendered)
        elif user and body.get("type") != "event_callback":
            direct_message(client, str(user), rendered)
    except Exception as exc:  # telling the person failed too: the log is all that is left
        log.error("could not tell %s about an error: %s", user, type(exc).__name__)


Listener = Callable[..., None]

# The context key under which the replay middleware leaves its check for :func:`reported`.
FIRST_TIME = "rotabot_first_time"


# Set by the catalog middleware (handlers/app.py): the check that this replica runs the newest
# catalog, asked after the ack of a request that acts; and the pin that keeps one catalog for
# the whole of a request while a reload swaps it.
CATALOG_CHECK = "rotabot_catalog_check"
CATALOG_PIN = "rotabot_catalog_pin"


class _Replayed(Exception):
    """Raised by the wrapped ack of a replayed request: the listener stops after acking."""


def reported(listener: Listener) -> Callable[[Args], None]:
    """Register ``listener`` through this: what it raises goes to :func:`tell`.

    The listener's ``ack`` is wrapped: once it has answered Slack, a replayed request (its
    signature taken before) stops the listener there. Errors are caught here rather than left
    to Bolt: with ``process_before_response=False``
    Bolt resets the acknowledged response when a listener raises, and a request whose ack it
    had not yet returned is then answered 404 "unhandled request" (a race seen with replicas).
    Bolt injects arguments by name, so the wrapper takes Bolt's ``Args`` and hands the
    listener the ones it names.
    """
    names = inspect.getfullargspec(listener).args

    def run(args: Args) -> None:
        # Set by the replay middleware (bot/runtime/slack_replay.py) for signed requests.
        first_time: Callable[[], bool] | None = args.context.get(FIRST_TIME)
        catalog_check: Callable[[], None] | None = args.context.get(CATALOG_CHECK)
        pin: Callable[[], AbstractContextManager[object]] = args.context.get(
            CATALOG_PIN, nullcontext)

        def ack(*a: Any, **kw: Any) -> None:
            args.ack(*a, **kw)
            # Asked after the ack, off Slack's 3 seconds: a replay stops here, unprocessed.
            if first_time is not None and not first_time():
                raise _Replayed
            if catalog_check is not None:
                catalog_check()  # a stale catalog: CatalogStale, told to the person below

        given = {name: ack if name == "ack" else getattr(args, name) for name in names}
        try:
            with pin():
                listener(**given)
        except _Replayed:
            return
        except Exception as error:
            tell(error, args.body, args.context, args.client)

    run.__name__ = run.__qualname__ = getattr(listener, "__name__", "listener")
    return run


def register_error_handler(app: App) -> None:
    """Errors Bolt catches outside a listener body (middleware, a listener registered without
    :func:`reported`) reach :func:`tell` too."""

    @app.error
    def on_error(
        error: Exception,
        body: dict[str, Any],
        context: BoltContext,
        client: WebClient,
        response: BoltResponse | None,
    ) -> BoltResponse | None:
        tell(error, body, context, client)
        # Processed before the HTTP answer (FaaS, tests): the person was told in Slack, so
        # Slack gets the 200 it already had from ack(), not Bolt's default 500.
        return BoltResponse(status=200, body="") if response is not None else None
