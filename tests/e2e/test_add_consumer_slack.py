"""Adding a consumer to a rotation in flight through `rotabot serve` and signed Slack
requests: the catalog file gains a consumer with its own dotenv target, `/rotate reload` names
the command, a non-admin is refused, and the admin's `/rotate add-consumer` writes the new
credential to its targets (at once where its lane's were written; by opening its lane again
where they were not), asks its owner in the thread when its lane's turn came, and says so
there."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from conftest import CATALOG, Bot, BotConfig
from e2e_helpers import click_parent, click_step, parent_message, prompt_for, wait_ephemeral

from bot.domain.secret_material import SecretMaterial
from handlers.ids import Action

NEW_VALUE = "canary-added-consumer-" + secrets.token_hex(8)


def env_file(path: Path) -> Path:
    path.write_text("MODEL_API_KEY=the-old-one\n")
    path.chmod(0o600)
    return path


def target(path: Path) -> str:
    return f"[{{kind: env-file, file: {path}, key: MODEL_API_KEY}}]"


def catalog(tmp_path: Path, consumers: str = "") -> str:
    """The e2e catalog with a staging lane target, and ``consumers`` added to the secret."""
    text = CATALOG.format(store=tmp_path / "secrets").replace(
        "    consumers:\n",
        f"    targets:\n      staging: {target(tmp_path / 'staging.env')}\n    consumers:\n"
        + consumers, 1)
    assert "staging.env" in text
    return text


@pytest.fixture
def bot_config(tmp_path: Path) -> BotConfig:
    env_file(tmp_path / "staging.env")
    return BotConfig(catalog=catalog(tmp_path), forbid=(NEW_VALUE,))


def test_an_admin_adds_a_consumer_the_reloaded_catalog_gained(bot: Bot, tmp_path: Path) -> None:
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    bot.store.put("ai/model-api-key", SecretMaterial({"api_key": NEW_VALUE}))
    click_parent(bot, Action.CHECK_STORE)
    click_step(bot, "U0BOB", "retriever", "Distributed")
    click_step(bot, "U0BOB", "retriever", "Validated")  # dev done: staging's turn

    staging = tmp_path / "staging.env"
    assert staging.read_text() == f"MODEL_API_KEY={NEW_VALUE}\n"  # staging's turn: written
    env, late = env_file(tmp_path / "billing.env"), env_file(tmp_path / "late.env")
    (tmp_path / "catalog.yml").write_text(catalog(tmp_path, (
        f"      billing-sync: {{owner: U0CAROL, lane: dev, reload: restart,\n"
        f"                     targets: {target(env)}}}\n"
        f"      late-ingest: {{owner: U0CAROL, lane: staging, reload: hot,\n"
        f"                    targets: {target(late)}}}\n"
    )))
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
    # dev's targets were never written (it had none): dev opens again, writing billing-sync's.
    assert env.read_text() == f"MODEL_API_KEY={NEW_VALUE}\n"

    # staging's targets were written already: late-ingest's are written with the add, and it
    # waits until dev (billing-sync) validated.
    bot.slack.command("U0ADMIN", "C0ROTATE", "add-consumer R-1 late-ingest")
    wait_ephemeral(bot, "U0ADMIN", "`late-ingest` added")
    assert late.read_text() == f"MODEL_API_KEY={NEW_VALUE}\n"
    told = bot.state.wait_for(lambda s: next(
        (m for m in s.thread("C0ROTATE", parent_message(bot).ts)
         if "added `late-ingest` (staging)" in m.text), None), 15)
    assert "waits for the staging lane's turn" in told.text and str(late) in told.text
    assert bot.state.violations == []
