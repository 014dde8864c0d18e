"""A hard-cutover rotation through `rotabot serve` and signed Slack requests.

The secret's issuer holds one valid value (the local issuer with `dual_valid: false`, which
invalidates the previous key when it mints). `/rotate start` opens a readiness review; the
rotation starts only when the last owner confirms; then the new value is current in the store
and in both lanes' dotenv files at once, every owner is told to reload and validate within the
cutover window (shown on the message), and the rotation finishes with nothing to revoke. A
second run rolls back by re-issue: a third value, current and in every file, the second one
gone. No value reaches Slack, the log or the database.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path

import pytest
from conftest import Bot, BotConfig
from e2e_helpers import click_parent, click_step, parent_message, wait_ephemeral, wait_parent
from harness.serve import catalog_head

from adapters.env_file import EnvFileTarget
from adapters.file_store import FileStore
from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action

PATH = "crm/token"
FIRST = "crm-first-" + secrets.token_hex(12)
OWNERS = {"crm-sync-dev": "U0BOB", "crm-sync": "U0ALICE"}
CATALOG = catalog_head(observe="2s", lanes=("dev", "prod")) + """\
  cutover_window: 30m
stores:
  local:
    kind: file
    path: {store}
secrets:
  crm-token:
    description: Single-key SaaS token (a new one ends the old one)
    issuer: {{kind: local, dual_valid: false, fields: [token]}}
    store: {{name: local, path: {path}}}
    targets:
      dev: [{{kind: env-file, file: {dir}/dev.env, key: CRM_TOKEN}}]
      prod: [{{kind: env-file, file: {dir}/prod.env, key: CRM_TOKEN}}]
    consumers:
      crm-sync-dev: {{owner: U0BOB, lane: dev, reload: hot}}
      crm-sync: {{owner: U0ALICE, lane: prod, reload: restart,
                 rollback: Restart with the re-issued token}}
"""


@pytest.fixture
def bot_config(tmp_path: Path) -> BotConfig:
    FileStore(tmp_path / "secrets").put(PATH, SecretMaterial({"token": FIRST}))
    for lane in ("dev", "prod"):
        EnvFileTarget(tmp_path / f"{lane}.env", "CRM_TOKEN").write(
            SecretMaterial({"token": FIRST}))
    return BotConfig(
        catalog=CATALOG.format(store=tmp_path / "secrets", path=PATH, dir=tmp_path),
        forbid=(FIRST,),
    )


def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for lane in ("dev", "prod"):
        held = EnvFileTarget(tmp_path / f"{lane}.env", "CRM_TOKEN").read()
        assert held is not None
        out[lane] = held.reveal()["CRM_TOKEN"]
    return out


def in_thread(bot: Bot, needle: str) -> Message:
    return bot.state.wait_for(lambda s: next(
        (m for m in s.thread("C0ROTATE", parent_message(bot).ts) if needle in m.text), None), 15)


def review(bot: Bot, nth: int = 0) -> Message:
    """The `nth` readiness review of crm-token posted (0: the first), as it reads now."""
    def found(s: object) -> Message | None:
        reviews = [m for m in bot.state.channel_messages("C0ROTATE")
                   if m.text.startswith("Hard cutover readiness review: crm-token")]
        return reviews[nth] if len(reviews) > nth else None
    return bot.state.wait_for(found, 10)


def confirm(bot: Bot, owner: str, nth: int = 0) -> None:
    message = review(bot, nth)
    value = next(
        str(b["accessory"]["value"]) for b in message.blocks
        if b.get("accessory", {}).get("action_id") == Action.CONFIRM_READY.value
        and json.loads(b["accessory"]["value"])["owner"] == owner
    )
    reply = bot.slack.click(owner, channel="C0ROTATE", message_ts=message.ts,
                            action_id=Action.CONFIRM_READY.value, value=value)
    assert reply.status == 200, reply.body


def rotations(bot: Bot) -> list[str]:
    return [m.text for m in bot.state.channel_messages("C0ROTATE") if m.text.startswith("R-")]


def review_then_cutover(bot: Bot, tmp_path: Path, nth: int = 0) -> str:
    """Start, confirm as every owner (on the `nth` review), and return the new value once it
    is out everywhere."""
    bot.slack.command("U0ADMIN", "C0ROTATE", "start crm-token")
    said = wait_ephemeral(bot, "U0ADMIN", "is a *hard cutover*")
    assert "the rotation starts the moment the last owner confirms ready" in said.text
    text = json.dumps(review(bot, nth).blocks)
    assert "The old value stops working the moment the new one is issued" in text
    assert "<@U0BOB>" in text and "<@U0ALICE>" in text
    confirm(bot, "U0BOB", nth)
    # One owner is not every owner: nothing is minted, nothing written.
    bot.state.wait_for(
        lambda s: "confirmed by <@U0BOB>" in json.dumps(review(bot, nth).blocks), 10)
    assert rotations(bot) == [] and files(tmp_path) == {"dev": FIRST, "prod": FIRST}

    confirm(bot, "U0ALICE", nth)
    shown = wait_parent(bot, "Cutover window until")
    assert "the old value stops working at mint; no overlap" in shown
    told = in_thread(bot, "*hard cutover*: the new credential is current")
    # Every owner is told what to do, by name.
    assert "<@U0BOB>" in told.text and "<@U0ALICE>" in told.text
    assert "press *Validated* within 30m" in told.text
    new = files(tmp_path)["dev"]
    bot.state.forbid(new)
    return new


def test_hard_cutover_from_review_to_finish(bot: Bot, tmp_path: Path) -> None:
    # A review an admin calls off mints nothing; an owner may not call it off.
    bot.slack.command("U0ADMIN", "C0ROTATE", "start crm-token")
    first = review(bot)
    bot.slack.click("U0BOB", channel="C0ROTATE", message_ts=first.ts,
                    action_id=Action.CANCEL_REVIEW.value)
    wait_ephemeral(bot, "U0BOB", "only admins of crm-token may cancel")
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=first.ts,
                    action_id=Action.CANCEL_REVIEW.value)
    called_off = bot.state.wait_for(
        lambda s: "Called off" in json.dumps(review(bot).blocks) and review(bot), 10)
    assert Action.CONFIRM_READY.value not in json.dumps(called_off.blocks)
    assert rotations(bot) == [] and bot.store.describe(PATH).current == "1"

    new = review_then_cutover(bot, tmp_path, nth=1)
    # Every lane at once, and the store's current is the new value already.
    assert new != FIRST and files(tmp_path) == {"dev": new, "prod": new}
    assert bot.store.describe(PATH).current == "2"
    assert bot.store.read(PATH).reveal()["token"] == new
    assert "left*" in wait_parent(bot, "Cutover window until")

    # Prod need not wait for dev: the old value is gone everywhere.
    for consumer in ("crm-sync", "crm-sync-dev"):
        click_step(bot, OWNERS[consumer], consumer, "Distributed")
        click_step(bot, OWNERS[consumer], consumer, "Validated")
    # Every owner validated: it moves on by itself (the store switched at the cutover).
    wait_parent(bot, "observing")
    for consumer in ("crm-sync", "crm-sync-dev"):
        click_step(bot, OWNERS[consumer], consumer, "Sign off")
    text = wait_parent(bot, "ready to finish", timeout=20)
    assert "Finish (nothing to revoke)" in text
    click_parent(bot, Action.REVOKE)
    wait_parent(bot, "cutover finished")
    told = in_thread(bot, "there was nothing to revoke")
    assert "stopped working at the cutover" in told.text
    assert files(tmp_path) == {"dev": new, "prod": new}

    canary(bot, FIRST, new)


def test_rollback_of_a_hard_cutover_issues_another_value_everywhere(
    bot: Bot, tmp_path: Path
) -> None:
    second = review_then_cutover(bot, tmp_path)
    click_step(bot, "U0BOB", "crm-sync-dev", "Distributed")

    click_parent(bot, Action.ROLLBACK)
    modal = bot.state.wait_for(lambda s: next(iter(s.open_views("U0ADMIN")), None), 10)
    says = json.dumps(modal.view)
    assert "issues another replacement" in says and "cannot come back" in says
    bot.slack.submit_view("U0ADMIN", modal.id, {"reason": "crm-sync gets 401 with the new one"})
    told = in_thread(bot, "*by re-issue*")
    assert "<@U0BOB>" in told.text and "<@U0ALICE>" in told.text
    assert "reload it with the re-issued value now" in told.text
    wait_parent(bot, "rolled back by re-issue")

    # A third value: current in the store and in every lane's file; the second is gone.
    third = files(tmp_path)["dev"]
    bot.state.forbid(third)
    assert third not in (FIRST, second) and files(tmp_path) == {"dev": third, "prod": third}
    state = bot.store.describe(PATH)
    assert state.current == "3" and bot.store.read(PATH).reveal()["token"] == third
    assert [v.destroyed for v in state.versions if v.version == "2"] == [True]

    canary(bot, FIRST, second, third)


def canary(bot: Bot, *values: str) -> None:
    """Every Slack call fit Slack's spec; no value in Slack, the log or the database."""
    assert bot.state.violations == []
    dump = "\n".join(sqlite3.connect(bot.db_path).iterdump())
    calls = json.dumps([c.args for c in bot.state.calls], default=str)
    log = bot.log_text()
    for value in values:
        assert value not in dump and value not in log and value not in calls
