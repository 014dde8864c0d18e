"""A whole rotation through `rotabot serve` with signed Slack requests, plus the refusals."""

from __future__ import annotations

import json
import sqlite3
import time

from conftest import CANARY_NEW, CANARY_OLD, Bot
from e2e_helpers import (
    click_step,
    parent_message,
    prompt_for,
    switch_when_ready,
    wait_ephemeral,
)

from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action

PATH = "ai/model-api-key"


def start_and_write_new_version(bot: Bot) -> Message:
    reply = bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    assert reply.status == 200
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    parent = parent_message(bot)
    assert "waiting for the new credential" in parent.text
    # The manual issuer: a person writes the new credential; the bot notices the new version.
    bot.store.put(PATH, SecretMaterial({"api_key": CANARY_NEW}))
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent.ts,
                    action_id=Action.CHECK_STORE.value)
    bot.state.wait_for(lambda s: "distributing" in (parent_message(bot).text or ""), 10)
    return parent_message(bot)


def test_whole_rotation_from_start_to_revoke(bot: Bot) -> None:
    parent = start_and_write_new_version(bot)
    assert bot.store.describe(PATH).pending == "2"
    # Lanes go in order: only the dev consumer is asked first.
    assert prompt_for(bot, "retriever", "Distributed")
    assert not [m for m in bot.state.thread("C0ROTATE", parent.ts) if "inference-api" in m.text]

    for consumer, owner in [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"),
                            ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")

    switch_when_ready(bot)
    state = bot.store.describe(PATH)
    assert (state.current, state.previous) == ("2", "1")

    # Revoke before sign-off is refused with the unmet conditions in words.
    bot.slack.command("U0ADMIN", "C0ROTATE", "revoke R-1")
    refusal = wait_ephemeral(bot, "U0ADMIN", "cannot be revoked yet")
    assert "retriever (dev) has not signed off" in refusal.text

    for consumer, owner in [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"),
                            ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Sign off")
    # The observation window (3 s) elapses; the timer opens the gate.
    bot.state.wait_for(lambda s: "ready to revoke" in parent_message(bot).text, 15)
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent.ts,
                    action_id=Action.REVOKE.value)
    bot.state.wait_for(lambda s: "revoked" in parent_message(bot).text, 10)
    after = bot.store.describe(PATH)
    assert after.current == "2"
    assert [v.destroyed for v in after.versions if v.version == "1"] == [True]

    # Every Slack call was valid against Slack's spec, and no canary value left the store.
    assert bot.state.violations == []
    dump = "\n".join(sqlite3.connect(bot.db_path).iterdump())
    assert CANARY_OLD not in dump and CANARY_NEW not in dump
    assert CANARY_OLD not in bot.log_text() and CANARY_NEW not in bot.log_text()
    calls = json.dumps([c.args for c in bot.state.calls], default=str)
    assert CANARY_OLD not in calls and CANARY_NEW not in calls
    # One parent message for the rotation, updated in place.
    parents = [m for m in bot.state.channel_messages("C0ROTATE") if m.thread_ts in (None, m.ts)
               and "R-1" in m.text]
    assert len(parents) == 1


def test_click_by_the_wrong_user_is_refused_and_changes_nothing(bot: Bot) -> None:
    start_and_write_new_version(bot)
    prompt = prompt_for(bot, "retriever", "Distributed")
    bot.slack.click("U0MALLORY", channel="C0ROTATE", message_ts=prompt.ts,
                    action_id=Action.STEP.value)
    refusal = wait_ephemeral(bot, "U0MALLORY", "this step is")
    assert "<@U0BOB>" in refusal.text
    status = bot.slack.command("U0ADMIN", "C0ROTATE", "status R-1")
    assert status.status == 200
    text = wait_ephemeral(bot, "U0ADMIN", "R-1 model-api-key").text
    assert "distributing" in text
    rows = sqlite3.connect(bot.db_path).execute(
        "select actor, action from audit_events where action = 'refused'").fetchall()
    assert ("U0MALLORY", "refused") in rows


def test_double_click_applies_the_step_once(bot: Bot) -> None:
    start_and_write_new_version(bot)
    prompt = prompt_for(bot, "retriever", "Distributed")
    first = bot.slack.click("U0BOB", channel="C0ROTATE", message_ts=prompt.ts,
                            action_id=Action.STEP.value)
    assert first.status == 200
    # Once the first click has been applied (its prompt says who did the step), the same
    # button payload again, signed anew as Slack signs a second click (an identical replay is
    # ignored before any listener: tests/security/test_replay.py).
    bot.state.wait_for(lambda s: (m := s.find_message("C0ROTATE", prompt.ts)) is not None
                       and "retriever (dev) distributed by U0BOB" in m.text, 10)
    again = bot.slack.post(first.kind, first.request, "application/x-www-form-urlencoded",
                           timestamp=int(time.time()) + 1)
    assert again.status == 200
    wait_ephemeral(bot, "U0BOB", "already distributed")
    rows = sqlite3.connect(bot.db_path).execute(
        "select count(*) from audit_events where action = 'step' and consumer = 'retriever'"
        " and after = 'distributed'").fetchone()
    assert rows == (1,)


def test_forged_and_stale_requests_get_401_and_change_nothing(bot: Bot) -> None:
    body = "command=%2Frotate&text=start+model-api-key&user_id=U0ADMIN&channel_id=C0ROTATE"
    forged = bot.slack.post("command", body, "application/x-www-form-urlencoded",
                            signature="v0=" + "0" * 64)
    assert forged.status == 401
    stale = bot.slack.post("command", body, "application/x-www-form-urlencoded",
                           timestamp=int(time.time()) - 600)
    assert stale.status == 401
    count = sqlite3.connect(bot.db_path).execute("select count(*) from rotations").fetchone()
    assert count == (0,)
    assert bot.state.calls_to("chat.postMessage") == []


def test_bad_input_gets_usage_and_closest_secret(bot: Bot) -> None:
    bot.slack.command("U0ADMIN", "C0ROTATE", "strat model-api-key")
    wrong = wait_ephemeral(bot, "U0ADMIN", "unknown subcommand")
    assert "Did you mean `start`" in wrong.text
    bot.slack.command("U0ADMIN", "C0ROTATE", "map model-api-kye")
    unknown = wait_ephemeral(bot, "U0ADMIN", "model-api-kye")
    assert "model-api-key" in unknown.text.replace("model-api-kye", "")
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key --overlap soon")
    flag = wait_ephemeral(bot, "U0ADMIN", "is not a duration")
    assert "/rotate start SECRET" in json.dumps(flag.blocks)


def test_429_on_chat_update_is_retried_and_the_final_message_is_right(bot: Bot) -> None:
    parent = start_and_write_new_version(bot)
    bot.state.fail_next("chat.update", status=429, retry_after=1)
    click_step(bot, "U0BOB", "retriever", "Distributed")
    bot.state.wait_for(lambda s: "distributed" in json.dumps(parent_message(bot).blocks), 15)
    assert any(c.status == 429 for c in bot.state.calls_to("chat.update"))
    assert parent_message(bot).ts == parent.ts


def test_not_in_channel_tells_the_admin_to_invite_the_bot(bot: Bot) -> None:
    bot.state.set_bot_membership("C0ROTATE", False)
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    hint = wait_ephemeral(bot, "U0ADMIN", "invite")
    assert "/invite @rotabot" in hint.text
