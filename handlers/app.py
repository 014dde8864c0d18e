"""Builds the Bolt app and registers every listener. Called by the composition root only."""

from __future__ import annotations

import logging

from slack_bolt import App
from slack_sdk import WebClient

from handlers import actions, alert_actions, commands, home, schedule_actions, views
from handlers.deps import Deps
from handlers.respond import register_error_handler

log = logging.getLogger("rotabot.handlers")


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
    )
    # Listeners raise; this one handler tells the person (ephemeral or DM) and logs.
    register_error_handler(app)
    commands.register(app, deps)
    actions.register(app, deps)
    views.register(app, deps)
    home.register(app, deps)
    alert_actions.register(app, deps)
    schedule_actions.register(app, deps)
    return app
