"""A freeze window through `rotabot serve` and signed Slack requests: `/rotate start` refused
with the window named, started with `--override-freeze` and the override told in the thread,
the Switch button refused with the command to type, and the override that switches."""

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
