"""What a person in the channel sees after each change, through `rotabot serve` and signed
Slack requests: a receipt in the thread with the actor and the reason, buttons that stop
applying taken off in the same update, and whoever acts next mentioned."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import CATALOG, Bot, BotConfig
from e2e_helpers import (
    click_parent,
    click_step,
    parent_message,
    prompt_for,
    switch_when_ready,
    wait_ephemeral,
    wait_parent,
)
from test_rotation_flow import start_and_write_new_version

from bot.sandbox.slack_standin.state import Message, ViewRecord
from handlers.ids import Action

INSTRUCTIONS = "Create a key named rotabot-next in the provider console (Settings > Keys)"


@pytest.fixture
def bot_config(tmp_path: Path) -> BotConfig:
    catalog = CATALOG.format(store=tmp_path / "secrets").replace(
        "issuer: {kind: manual}",
        f'issuer: {{kind: manual, instructions: "{INSTRUCTIONS}"}}')
    assert INSTRUCTIONS in catalog
    return BotConfig(catalog=catalog)


def thread(bot: Bot) -> list[Message]:
    return bot.state.thread("C0ROTATE", parent_message(bot).ts)


def receipt(bot: Bot, needle: str) -> Message:
    """The thread message saying `needle` (waits for it)."""
    return bot.state.wait_for(
        lambda s: next((m for m in thread(bot) if needle in m.text), None), 15)


def has_actions(message: Message) -> bool:
    return any(b.get("type") == "actions" for b in message.blocks)


def labels(message: Message) -> list[str]:
    return [e.get("text", {}).get("text", "") for b in message.blocks
            if b.get("type") == "actions" for e in b.get("elements", [])]


def open_modal(bot: Bot, user: str) -> ViewRecord:
    return bot.state.wait_for(lambda s: next(iter(s.open_views(user)), None), 10)


def incident(bot: Bot, needle: str) -> Message:
    return bot.state.wait_for(lambda s: next(
        (m for m in s.channel_messages("C0INCIDENT") if needle in m.text), None), 15)


def report_problem(bot: Bot, user: str, consumer: str, label: str, text: str) -> ViewRecord:
    prompt = prompt_for(bot, consumer, label)
    bot.slack.click(user, channel="C0ROTATE", message_ts=prompt.ts,
                    action_id=Action.REPORT_PROBLEM.value)
    modal = open_modal(bot, user)
    if text:
        assert bot.slack.submit_view(user, modal.id, {"what": text}).status == 200
    return modal


def test_the_manual_issuers_instructions_and_the_admin_are_in_the_message(bot: Bot) -> None:
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    blob = wait_parent(bot, "waiting for the new credential")
    assert INSTRUCTIONS.replace(">", "&gt;") in blob
    assert "<@U0ADMIN>: create the new credential and write it to `ai/model-api-key`" in blob


def test_a_reported_problem_is_told_everywhere_and_an_empty_one_is_refused(bot: Bot) -> None:
    start_and_write_new_version(bot)
    click_step(bot, "U0BOB", "retriever", "Distributed")

    # Blank: the modal stays open with an error on the field; nothing is stored.
    modal = report_problem(bot, "U0BOB", "retriever", "Validated", "")
    blank = bot.slack.submit_view("U0BOB", modal.id, {"what": "   "})
    assert blank.json == {"response_action": "errors",
                          "errors": {"what": "Say what fails, in a sentence"}}
    with sqlite3.connect(bot.db_path) as db:
        assert db.execute("select count(*) from alerts").fetchone() == (0,)

    what = "401 invalid_api_key from the provider on /v1/embeddings"
    assert bot.slack.submit_view("U0BOB", modal.id, {"what": what}).status == 200
    # The thread: who, which consumer, the owner's own words, the alert, what it blocks.
    told = receipt(bot, "reported a problem with")
    assert "<@U0BOB> reported a problem with `retriever` (dev)" in told.text
    assert what in told.text and "A-1 blocks revocation" in told.text
    assert "<@U0ADMIN>, roll back" in told.text
    # The incident channel: the alert with its buttons.
    alert = incident(bot, "retriever")
    assert "Roll back R-1" in labels(alert)
    # The rotation message and `/rotate status` say what blocks and why.
    blob = wait_parent(bot, "Open problems")
    assert "A-1" in blob and what in blob and "reported by <@U0BOB>" in blob
    bot.slack.command("U0ADMIN", "C0ROTATE", "status R-1")
    status = wait_ephemeral(bot, "U0ADMIN", "R-1 model-api-key")
    assert what in json.dumps(status.blocks)


def test_rollback_is_told_with_its_reason_and_every_dead_button_goes(bot: Bot) -> None:
    start_and_write_new_version(bot)
    click_step(bot, "U0BOB", "retriever", "Distributed")
    report_problem(bot, "U0BOB", "retriever", "Validated", "timeouts since the new key")
    alert = incident(bot, "retriever")
    # A report modal opened before the rollback and submitted after it.
    late = report_problem(bot, "U0BOB", "retriever", "Validated", "")

    click_parent(bot, Action.ROLLBACK)
    modal = open_modal(bot, "U0ADMIN")
    bot.slack.submit_view("U0ADMIN", modal.id,
                          {"new_credential": "revoke", "reason": "retriever times out"})

    told = receipt(bot, "rolled back R-1")
    assert "<@U0ADMIN> rolled back R-1" in told.text
    assert "Reason: retriever times out" in told.text
    assert "the new one is revoked" in told.text
    blob = wait_parent(bot, "rolled back model-api-key")
    assert "Roll back" not in blob
    # The live prompt (retriever's Validated) lost its buttons and says why.
    bot.state.wait_for(lambda s: not any(has_actions(m) for m in thread(bot)), 15)
    retired = [m for m in thread(bot) if "no longer needed" in m.text]
    assert [m for m in retired if "`retriever` (dev)" in m.text and "rolled back" in m.text]
    # The alert: resolved by the rollback, no buttons.
    bot.state.wait_for(lambda s: (m := s.find_message("C0INCIDENT", alert.ts)) is not None
                       and not has_actions(m) and "resolved by <@U0ADMIN>" in json.dumps(
                           m.blocks), 15)
    # The late report is refused in words; no alert is added.
    bot.slack.submit_view("U0BOB", late.id, {"what": "still failing"})
    refusal = bot.state.wait_for(lambda s: next(
        (m for c in s.channels.values() if c.is_im and c.im_user == "U0BOB"
         for m in s.channel_messages(c.id) if "has ended" in m.text), None), 10)
    assert "R-1 has ended (rolled back)" in refusal.text
    with sqlite3.connect(bot.db_path) as db:
        assert db.execute("select count(*) from alerts").fetchone() == (1,)


def test_acknowledge_and_not_related_are_told_and_take_their_buttons(bot: Bot) -> None:
    start_and_write_new_version(bot)
    click_step(bot, "U0BOB", "retriever", "Distributed")
    report_problem(bot, "U0BOB", "retriever", "Validated", "403 from the provider")
    alert = incident(bot, "retriever")
    assert labels(alert) == ["Roll back R-1", "Not related", "Acknowledge"]

    bot.slack.click("U0CAROL", channel="C0INCIDENT", message_ts=alert.ts,
                    action_id=Action.ALERT_ACK.value)
    told = receipt(bot, "acknowledged A-1")
    assert "<@U0CAROL> acknowledged A-1 on `retriever`" in told.text
    bot.state.wait_for(lambda s: labels(s.find_message("C0INCIDENT", alert.ts))
                       == ["Roll back R-1", "Not related"], 10)

    # Not related needs a reason, in a modal; a person who may not is refused before it.
    bot.slack.click("U0MALLORY", channel="C0INCIDENT", message_ts=alert.ts,
                    action_id=Action.ALERT_NOT_RELATED.value)
    wait_ephemeral(bot, "U0MALLORY", "may mark A-1 as not related")
    bot.slack.click("U0BOB", channel="C0INCIDENT", message_ts=alert.ts,
                    action_id=Action.ALERT_NOT_RELATED.value)
    modal = open_modal(bot, "U0BOB")
    short = bot.slack.submit_view("U0BOB", modal.id, {"reason": "no"})
    assert short.json["response_action"] == "errors"
    bot.slack.submit_view("U0BOB", modal.id, {"reason": "the provider had an outage"})
    told = receipt(bot, "as not related")
    assert "<@U0BOB> marked A-1 on `retriever` as not related to R-1" in told.text
    assert "Reason: the provider had an outage" in told.text
    bot.state.wait_for(lambda s: not has_actions(s.find_message("C0INCIDENT", alert.ts)), 10)
    blob = wait_parent(bot, "distributing")
    assert "Open problems" not in blob


def test_whose_turn_it_is_and_every_admin_step_is_told(bot: Bot) -> None:
    start_and_write_new_version(bot)
    assert "the new credential (version 2) is ready" in receipt(bot, "is ready beside").text
    for consumer, owner in [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"),
                            ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    # The admins' turn: said in the thread with a mention, and in the phase line.
    turn = receipt(bot, "every consumer validated")
    assert "<@U0ADMIN>, press *Switch to new credential*" in turn.text
    wait_parent(bot, "an admin switches next")
    assert parent_message(bot).blocks[0]["text"]["text"] == "R-1 · rotating model-api-key"

    switch_when_ready(bot)
    assert "<@U0ADMIN> switched R-1" in receipt(bot, "switched R-1").text
    # Observing, the gate closed: Revoke is the break-glass modal, with no dialog before it.
    revoke = [e for b in parent_message(bot).blocks if b.get("type") == "actions"
              for e in b["elements"] if e["action_id"] == Action.REVOKE.value]
    assert [(e["text"]["text"], "confirm" in e) for e in revoke] == [
        ("Revoke early (break-glass)…", False)]

    for consumer, owner in [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"),
                            ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Sign off")
    ready = receipt(bot, "is ready to revoke")
    assert "<@U0ADMIN>, press *Revoke old credential*" in ready.text
    # The message's refresh is queued in Slack's call budget beside the receipt's post:
    # either may land first, so wait for the open gate's render.
    def revoke_buttons(_: object) -> list[dict[str, object]] | None:
        found = [e for b in parent_message(bot).blocks if b.get("type") == "actions"
                 for e in b["elements"] if e["action_id"] == Action.REVOKE.value]
        return found if any("confirm" in e for e in found) else None

    revoke = bot.state.wait_for(revoke_buttons, 10)
    assert [("confirm" in e) for e in revoke] == [True]  # gate open: one confirmation
    click_parent(bot, Action.REVOKE)
    assert "<@U0ADMIN> revoked the old credential of R-1" in receipt(bot, "revoked the old").text
    wait_parent(bot, "rotated model-api-key")
    # Sign-offs read as words, not state names.
    assert "signed off" in json.dumps(parent_message(bot).blocks)
    assert "signed-off" not in json.dumps(parent_message(bot).blocks)
    assert bot.state.violations == []
