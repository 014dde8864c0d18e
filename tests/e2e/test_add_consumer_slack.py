"""Adding a consumer to a rotation in flight through `rotabot serve` and signed Slack
requests: the catalog file gains a consumer with its own dotenv target, `/rotate reload` names
the command, a non-admin is refused, and the admin's `/rotate add-consumer` writes the new
credential to that target (its lane's turn came already), asks its owner in the thread and
says so there."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from conftest import CATALOG, Bot, BotConfig
from e2e_helpers import click_parent, click_step, parent_message, prompt_for, wait_ephemeral

from bot.domain.secret_material import SecretMaterial
from handlers.ids import Action

NEW_VALUE = "canary-added-consumer-" + secrets.token_hex(8)


@pytest.fixture
def bot_config() -> BotConfig:
    return BotConfig(forbid=(NEW_VALUE,))


def test_an_admin_adds_a_consumer_the_reloaded_catalog_gained(bot: Bot, tmp_path: Path) -> None:
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    bot.store.put("ai/model-api-key", SecretMaterial({"api_key": NEW_VALUE}))
    click_parent(bot, Action.CHECK_STORE)
    click_step(bot, "U0BOB", "retriever", "Distributed")
    click_step(bot, "U0BOB", "retriever", "Validated")  # dev done: staging's turn

    env = tmp_path / "billing.env"
    env.write_text("MODEL_API_KEY=the-old-one\n")
    env.chmod(0o600)
    added = (
        "      billing-sync:\n"
        "        owner: U0CAROL\n"
        "        lane: dev\n"
        "        reload: restart\n"
        f"        targets: [{{kind: env-file, file: {env}, key: MODEL_API_KEY}}]\n"
    )
    (tmp_path / "catalog.yml").write_text(
        CATALOG.format(store=tmp_path / "secrets").replace("      nightly-ingest:\n",
                                                           added + "      nightly-ingest:\n"))
    bot.slack.command("U0ADMIN", "C0ROTATE", "reload")
    reloaded = wait_ephemeral(bot, "U0ADMIN", "Rotations in flight keep")
    assert "`/rotate add-consumer R-1 billing-sync`" in reloaded.text

    bot.slack.command("U0BOB", "C0ROTATE", "add-consumer R-1 billing-sync")
    wait_ephemeral(bot, "U0BOB", "only admins of model-api-key")
    bot.slack.command("U0ADMIN", "C0ROTATE", "add-consumer R-1 retriever")
    wait_ephemeral(bot, "U0ADMIN", "retriever is already in R-1")
    assert env.read_text() == "MODEL_API_KEY=the-old-one\n"

    bot.slack.command("U0ADMIN", "C0ROTATE", "add-consumer R-1 billing-sync")
    wait_ephemeral(bot, "U0ADMIN", "`billing-sync` added")
    told = bot.state.wait_for(lambda s: next(
        (m for m in s.thread("C0ROTATE", parent_message(bot).ts)
         if "added `billing-sync` (dev)" in m.text), None), 15)
    assert "<@U0ADMIN>" in told.text and "<@U0CAROL>" in told.text
    prompt_for(bot, "billing-sync", "Distributed")  # its owner is asked at once
    assert env.read_text() == f"MODEL_API_KEY={NEW_VALUE}\n"
    assert bot.state.violations == []
