"""A freeze window through `rotabot serve` and signed Slack requests: `/rotate start` refused
with the window named, started with `--override-freeze` and the override told in the thread,
the Switch button refused with the command to type, and the override that switches; a frozen
switch queued from the refusal's button and cancelled."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CATALOG, Bot, BotConfig
from e2e_helpers import (
    click_parent,
    click_step,
    has_button,
    parent_message,
    wait_ephemeral,
    wait_parent,
)

from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.model import Message
from handlers.ids import Action

# Frozen every day, whenever the test runs.
FREEZE = """\
  freeze:
    - {name: audit week, time_zone: Europe/Berlin, days: [mon, tue, wed, thu, fri, sat, sun]}
"""


@pytest.fixture
def bot_config(tmp_path: Path) -> BotConfig:
    text = CATALOG.format(store=tmp_path / "secrets").replace("stores:\n", FREEZE + "stores:\n", 1)
    assert "audit week" in text
    return BotConfig(catalog=text)


def test_frozen_commands_and_buttons_say_so_and_an_admin_overrides_with_a_reason(
    bot: Bot,
) -> None:
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    refused = wait_ephemeral(bot, "U0ADMIN", "frozen: audit week until")
    assert "Europe/Berlin; start is refused" in refused.text
    assert "/rotate start model-api-key --override-freeze" in refused.text
    assert bot.state.channel_messages("C0ROTATE") == []

    bot.slack.command("U0ADMIN", "C0ROTATE",
                      'start model-api-key --override-freeze "audit finding F-7 must be fixed"')
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    told = bot.state.wait_for(lambda s: next(
        (m for m in s.thread("C0ROTATE", parent_message(bot).ts)
         if "overrode the freeze to start" in m.text), None), 15)
    assert "<@U0ADMIN>" in told.text and "audit finding F-7" in told.text

    bot.store.put("ai/model-api-key", SecretMaterial({"api_key": "rotated-in-the-freeze"}))
    click_parent(bot, Action.CHECK_STORE)
    for consumer, owner in [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"),
                            ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Distributed")  # owners' steps are not frozen
        click_step(bot, owner, consumer, "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    click_parent(bot, Action.SWITCH)
    button = wait_ephemeral(bot, "U0ADMIN", "switch is refused")
    assert "/rotate switch R-1 --override-freeze" in button.text
    assert "observing" not in parent_message(bot).text  # not switched

    bot.slack.command("U0ADMIN", "C0ROTATE",
                      'switch R-1 --override-freeze "audit finding F-7 must be fixed"')
    wait_parent(bot, "observing")
    assert bot.state.violations == []


def test_a_frozen_switch_is_queued_from_the_refusal_and_cancelled_from_the_thread(
    bot: Bot,
) -> None:
    bot.slack.command("U0ADMIN", "C0ROTATE",
                      'start model-api-key --override-freeze "audit finding F-7 must be fixed"')
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    bot.store.put("ai/model-api-key", SecretMaterial({"api_key": "queued-through-the-freeze"}))
    click_parent(bot, Action.CHECK_STORE)
    for consumer, owner in [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"),
                            ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    click_parent(bot, Action.SWITCH)
    refused = wait_ephemeral(bot, "U0ADMIN", "switch is refused")
    assert "/rotate switch R-1 --after-freeze" in refused.text

    reply = bot.slack.click("U0ADMIN", ephemeral_seq=refused.seq,
                            action_id=Action.SWITCH_AFTER_FREEZE.value)
    assert reply.status == 200
    queued = wait_ephemeral(bot, "U0ADMIN", "switches it once the freeze ends")
    assert "R-1" in queued.text
    thread = parent_message(bot).ts

    def told(needle: str) -> Message:
        return bot.state.wait_for(lambda s: next(
            (m for m in s.thread("C0ROTATE", thread) if needle in m.text), None), 15)

    note = told("queued the switch of R-1")
    assert "<@U0ADMIN>" in note.text and "audit week until" in note.text
    assert "observing" not in parent_message(bot).text  # frozen: not switched

    reply = bot.slack.click("U0BOB", channel="C0ROTATE", message_ts=note.ts,
                            action_id=Action.CANCEL_QUEUED_SWITCH.value)
    assert reply.status == 200
    wait_ephemeral(bot, "U0BOB", "only admins of model-api-key")
    bot.slack.command("U0ADMIN", "C0ROTATE", "switch R-1 --cancel-after-freeze")
    wait_ephemeral(bot, "U0ADMIN", "the queued switch is cancelled")
    assert "cancelled the switch of R-1" in told("cancelled the switch").text
    assert bot.state.violations == []
