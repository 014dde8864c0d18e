"""Builds the Bolt app and registers every listener. Called by the composition root only."""

from __future__ import annotations

import logging

from slack_bolt import App

from bot.bootstrap import Container
from handlers import actions, commands, home, views

log = logging.getLogger("rotabot.handlers")


def build_bolt_app(c: Container, *, signing_secret: str | None = None) -> App:
    app = App(
        client=c.slack,
        signing_secret=signing_secret or c.settings.slack_signing_secret,
        token_verification_enabled=False,  # no auth.test at start: the token is checked on use
        process_before_response=False,  # ack returns at once; listeners finish in a worker
        request_verification_enabled=True,
    )
    commands.register(app, c)
    actions.register(app, c)
    views.register(app, c)
    home.register(app, c)
    return app
