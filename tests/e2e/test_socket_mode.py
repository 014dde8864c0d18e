"""`rotabot serve` on Socket Mode (SLACK_APP_TOKEN): the whole rotation over the stand-in's
WebSocket, with a disconnect and reconnect in the middle."""

from __future__ import annotations

import json

import httpx
import pytest
from conftest import CANARY_NEW, CANARY_OLD, Bot, BotConfig
from e2e_helpers import click_step, parent_message, switch_when_ready, wait_ephemeral
from test_rotation_flow import PATH, start_and_write_new_version

from bot.sandbox.slack_standin.socket_mode import SocketModeStandin
from handlers.ids import Action

OWNERS = [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"), ("inference-api", "U0ALICE")]


@pytest.fixture
def bot_config() -> BotConfig:
    return BotConfig(socket_mode=True)


def socket_of(bot: Bot) -> SocketModeStandin:
    assert bot.socket is not None
    return bot.socket


def test_whole_rotation_over_socket_mode_survives_a_reconnect(bot: Bot) -> None:
    socket = socket_of(bot)
    first = socket.live_connection()
    assert first is not None and first.hello is not None

    # An Events API envelope: App Home opened, and the bot publishes the Home tab.
    assert bot.slack.open_home("U0BOB").status == 200
    bot.state.wait_for(lambda s: s.home_view("U0BOB"), 10)

    start_and_write_new_version(bot)
    assert bot.store.describe(PATH).pending == "2"
    for consumer, owner in OWNERS:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    switch_when_ready(bot)
    state = bot.store.describe(PATH)
    assert (state.current, state.previous) == ("2", "1")

    # Slack asks the app to move: it opens a new connection, and the rotation goes on there.
    old, new = socket.disconnect("refresh_requested")
    assert new is not None and new.hello is not None and new.id > old.id
    assert old.closed_at is not None

    bot.slack.command("U0ADMIN", "C0ROTATE", "revoke R-1")
    refusal = wait_ephemeral(bot, "U0ADMIN", "cannot be revoked yet")
    assert "retriever (dev) has not signed off" in refusal.text
    for consumer, owner in OWNERS:
        click_step(bot, owner, consumer, "Sign off")
    bot.state.wait_for(lambda s: "ready to revoke" in parent_message(bot).text, 15)
    reply = bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent_message(bot).ts,
                            action_id=Action.REVOKE.value)
    assert reply.status == 200
    bot.state.wait_for(lambda s: "revoked" in parent_message(bot).text, 10)
    after = bot.store.describe(PATH)
    assert after.current == "2"
    assert [v.destroyed for v in after.versions if v.version == "1"] == [True]

    # Two apps.connections.open calls, both with the app-level token; every envelope of every
    # kind was acked with its id, those after the disconnect on the new connection.
    assert [(o.ok, o.token_kind) for o in socket.opens] == [(True, "app"), (True, "app")]
    envelopes = socket.envelopes
    assert {e.type for e in envelopes} == {"events_api", "slash_commands", "interactive"}
    assert all(e.acked for e in envelopes)
    assert all(e.ack_connection == e.connection for e in envelopes)
    later = [e for e in envelopes if e.sent_at > old.closed_at]
    assert later and {e.connection for e in later} == {new.id}
    assert socket.violations == []
    assert bot.state.violations == []

    # No credential in the log: not the canaries, not the app-level token.
    log = bot.log_text()
    assert CANARY_OLD not in log and CANARY_NEW not in log
    assert bot.server.env["SLACK_APP_TOKEN"] not in log
    calls = json.dumps([c.args for c in bot.state.calls], default=str)
    assert CANARY_OLD not in calls and CANARY_NEW not in calls


def test_modal_submission_is_answered_in_the_ack(bot: Bot) -> None:
    """A view_submission's answer (response_action) travels in the ack's payload."""
    reply = bot.slack.command("U0ADMIN", "C0ROTATE", "start")
    assert reply.status == 200
    view = bot.state.wait_for(lambda s: next(iter(s.views.values()), None), 10)
    submitted = bot.slack.submit_view("U0ADMIN", view.id, {"overlap": "soon"})
    assert submitted.status == 200
    assert isinstance(submitted.json, dict) and submitted.json["response_action"] == "errors"
    assert "overlap" in submitted.json["errors"]
    assert view.id in bot.state.views  # Slack keeps the modal open, showing the errors
    envelope = socket_of(bot).envelopes[-1]
    assert envelope.accepts_response_payload and envelope.ack_payload == submitted.json
    assert socket_of(bot).violations == []


def test_health_is_served_on_socket_mode_too(bot: Bot) -> None:
    assert httpx.get(bot.url + "/healthz", timeout=2).status_code == 200
