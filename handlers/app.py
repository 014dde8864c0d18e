"""Builds the Bolt app and registers every listener. Called by the composition root only."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot.runtime.bootstrap import Container
from handlers import actions, alert_actions, commands, home, schedule_actions, views

log = logging.getLogger("rotabot.handlers")


def build_bolt_app(
    c: Container,
    *,
    signing_secret: str | None = None,
    process_before_response: bool = False,
) -> App:
    """``process_before_response=True`` finishes each listener before the HTTP answer
    (FaaS hosts need it; property tests use it to compare state after every click)."""
    app = App(
        client=c.slack,
        signing_secret=signing_secret or c.settings.slack_signing_secret,
        token_verification_enabled=False,  # no auth.test at start: the token is checked on use
        # Default: ack returns at once; listeners finish in a worker.
        process_before_response=process_before_response,
        request_verification_enabled=True,
    )
    commands.register(app, c)
    actions.register(app, c)
    views.register(app, c)
    home.register(app, c)
    alert_actions.register(app, c)
    schedule_actions.register(app, c)
    return app
