"""Two-person break-glass through `rotabot serve` and signed Slack requests: the requester's
modal asks in the thread, the requester and a non-admin cannot approve, a second admin's
approval revokes with both names and reasons told and audited, and an unapproved request
expires and says so."""

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
    switch_when_ready,
    wait_ephemeral,
    wait_parent,
)
from harness.serve import catalog_head
from test_rotation_flow import start_and_write_new_version
from test_thread_receipts import open_modal, receipt

from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action

CONSUMERS = [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"), ("inference-api", "U0ALICE")]


def catalog(tmp_path: Path, within: str) -> str:
    head = catalog_head(observe="1h", admins=("U0ADMIN", "U0ALICE"))
    body = CATALOG.format(store=tmp_path / "secrets").split("\n", 1)[1].split("stores:", 1)[1]
    text = head + "stores:" + body
    return text.replace(
        "    description: Model provider key\n",
        "    description: Model provider key\n"
        f"    break_glass: {{approvals: 2, within: {within}}}\n",
    )


@pytest.fixture
def bot_config(request: pytest.FixtureRequest, tmp_path: Path) -> BotConfig:
    return BotConfig(catalog=catalog(tmp_path, getattr(request, "param", "15m")))


def observing_with_gate_closed(bot: Bot) -> None:
    start_and_write_new_version(bot)
    for consumer, owner in CONSUMERS:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    switch_when_ready(bot)  # observing for an hour, nobody signed off: the gate is closed


def ask(bot: Bot, reason: str) -> Message:
    click_parent(bot, Action.REVOKE, "U0ADMIN")
    modal = open_modal(bot, "U0ADMIN")
    assert modal.view["submit"]["text"] == "Ask for approval"
    assert bot.slack.submit_view("U0ADMIN", modal.id, {"reason": reason}).status == 200
    return receipt(bot, "asks to revoke the old credential")


def approve_click(bot: Bot, user: str, request: Message) -> None:
    reply = bot.slack.click(user, channel="C0ROTATE", message_ts=request.ts,
                            action_id=Action.APPROVE_BREAK_GLASS.value)
    assert reply.status == 200


def audit(bot: Bot, action: str) -> list[tuple[str, str | None, dict[str, str]]]:
    with sqlite3.connect(bot.db_path) as db:
        rows = db.execute("SELECT actor, reason, detail FROM audit_events WHERE action = ? "
                          "ORDER BY id", (action,)).fetchall()
    return [(a, r, json.loads(d or "{}")) for a, r, d in rows]


def test_a_second_admin_approves_and_only_then_the_old_credential_is_revoked(bot: Bot) -> None:
    observing_with_gate_closed(bot)
    request = ask(bot, "the old key was pasted in a public channel")
    assert "<@U0ADMIN> asks to revoke" in request.text
    assert "the old key was pasted in a public channel" in request.text
    assert "observing" in parent_message(bot).text  # nothing revoked yet

    # The requester cannot approve their own request; a non-admin cannot approve at all.
    approve_click(bot, "U0ADMIN", request)
    wait_ephemeral(bot, "U0ADMIN", "you asked for this break-glass revoke")
    approve_click(bot, "U0BOB", request)
    wait_ephemeral(bot, "U0BOB", "only admins of model-api-key")
    assert bot.state.open_views("U0BOB") == []
    assert "observing" in parent_message(bot).text

    approve_click(bot, "U0ALICE", request)
    modal = open_modal(bot, "U0ALICE")
    short = bot.slack.submit_view("U0ALICE", modal.id, {"reason": "ok"})
    assert "errors" in short.body
    assert bot.slack.submit_view(
        "U0ALICE", modal.id, {"reason": "confirmed the leak with the provider"}).status == 200
    approved = receipt(bot, "approved <@U0ADMIN>'s break-glass")
    assert "<@U0ALICE>" in approved.text and "confirmed the leak" in approved.text
    assert "pasted in a public channel" in approved.text
    revoked = receipt(bot, "revoked the old credential of R-1 past the gate")
    assert "<@U0ALICE>" in revoked.text
    wait_parent(bot, "rotated model-api-key")

    ((requester, why, detail),) = audit(bot, "break-glass.requested")
    assert (requester, why, detail["approvals"]) == (
        "U0ADMIN", "the old key was pasted in a public channel", "2")
    ((approver, their_why, more),) = audit(bot, "break-glass.approved")
    assert (approver, their_why, more["requester"]) == (
        "U0ALICE", "confirmed the leak with the provider", "U0ADMIN")
    refused = [d["attempted"] for _, _, d in audit(bot, "refused")]
    assert refused.count("approve break-glass") == 1  # the requester's own click
    assert any(a.startswith("approve a break-glass") for a in refused)  # the non-admin's
    assert bot.state.violations == []


@pytest.mark.parametrize("bot_config", ["2s"], indirect=True)
def test_an_unapproved_request_expires_and_says_so(bot: Bot) -> None:
    observing_with_gate_closed(bot)
    request = ask(bot, "the old key was pasted in a public channel")
    # The timer (every 2 s in `serve`) cancels it once its 2 s are up.
    expired = receipt(bot, "expired at")
    assert "<@U0ADMIN>" in expired.text and "nothing was revoked" in expired.text
    approve_click(bot, "U0ALICE", request)
    wait_ephemeral(bot, "U0ALICE", "no break-glass request waits on R-1")
    assert bot.state.open_views("U0ALICE") == []
    assert "observing" in parent_message(bot).text
    assert len(audit(bot, "break-glass.expired")) == 1
    assert audit(bot, "break-glass.approved") == []
