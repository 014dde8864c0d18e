"""A rotation of an Anthropic API key through `rotabot serve` and signed Slack requests.

The `anthropic` issuer talks to a loopback stand-in of Anthropic's Admin API that checks every
request and builds every answer with the official SDK's types
(tests/harness/anthropic_standin.py). The file store starts with the value of an existing key;
the rotation waits until a person "creates" a key in the console (the stand-in) and writes its
value to the store, then rotabot finds both keys' ids by their partial hints. The old key's
recent usage holds the gate; revoke sets it inactive. No key value reaches Slack, the log or
the database.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import CANARY_OLD, Bot, BotConfig
from e2e_helpers import (
    click_parent,
    click_step,
    has_button,
    parent_message,
    wait_ephemeral,
    wait_parent,
)
from harness.anthropic_standin import KEY_ONE, AnthropicStandin, started
from harness.serve import catalog_head

from bot.domain.secret_material import SecretMaterial
from handlers.ids import Action

PATH = "ai/model-api-key"
CATALOG = catalog_head(observe="2s") + """\
stores:
  local:
    kind: file
    path: {store}
secrets:
  model-api-key:
    description: Model provider key
    issuer:
      kind: anthropic
      admin_key_env: ANTHROPIC_ADMIN_KEY
      base_url: "{base_url}"
      instructions: Create a key in the Anthropic console and write it to the store
    store: {{name: local, path: {path}}}
    consumers:
      retriever:
        owner: U0BOB
        lane: dev
        reload: hot
        rollback: Pin the previous version
      inference-api:
        owner: U0ALICE
        lane: prod
        reload: hot
        rollback: Pin the previous store version
"""


@pytest.fixture
def anthropic() -> Iterator[AnthropicStandin]:
    yield from started()


@pytest.fixture
def bot_config(tmp_path: Path, anthropic: AnthropicStandin) -> BotConfig:
    # What the store holds before the rotation (conftest writes CANARY_OLD): an existing key.
    anthropic.seed_key(CANARY_OLD, name="inference (2025)")
    return BotConfig(
        catalog=CATALOG.format(store=tmp_path / "secrets", base_url=anthropic.base_url,
                               path=PATH),
        env={"ANTHROPIC_ADMIN_KEY": anthropic.admin_key, "ROTABOT_LOG_LEVEL": "DEBUG"},
        forbid=(anthropic.admin_key,),
    )


def test_anthropic_key_from_start_to_revoke(bot: Bot, anthropic: AnthropicStandin) -> None:
    [old_key] = anthropic.keys.values()

    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    blob = wait_parent(bot, "waiting for the new credential")
    assert "Create a key in the Anthropic console" in blob
    parent = parent_message(bot)

    # A person creates a key in the console and writes its value to the store.
    new_key = anthropic.create_key(name="inference (2026)")
    bot.state.forbid(new_key.value)
    bot.store.put(PATH, SecretMaterial({"api_key": new_key.value}))
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent.ts,
                    action_id=Action.CHECK_STORE.value)
    wait_parent(bot, "distributing")
    state = bot.store.describe(PATH)
    assert (state.current, state.pending) == ("1", "2")
    assert anthropic.valid(CANARY_OLD) and anthropic.valid(new_key.value)

    for consumer, owner in [("retriever", "U0BOB"), ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    click_parent(bot, Action.SWITCH)
    wait_parent(bot, "observing")

    # A straggler still calls Anthropic with the old key: the usage report holds the gate.
    anthropic.use(old_key.id, requests=4, tokens=2000)
    for consumer, owner in [("retriever", "U0BOB"), ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Sign off")
    expected = f"key {old_key.id} made 4 requests (2000 tokens) in the last 15 minutes"
    text = wait_parent(bot, f"the old credential is still in use: {expected}", timeout=20)
    assert "ready to revoke" not in text
    bot.slack.command("U0ADMIN", "C0ROTATE", "revoke R-1")
    refusal = wait_ephemeral(bot, "U0ADMIN", "cannot be revoked yet")
    assert expected in refusal.text
    assert anthropic.status_of(old_key.id) == "active"

    # The straggler moved: its last use is older than the window, the gate opens.
    anthropic.forget_usage(old_key.id)
    anthropic.use(old_key.id, at=datetime.now(UTC) - timedelta(minutes=25))
    text = wait_parent(bot, "ready to revoke", timeout=20)
    click_parent(bot, Action.REVOKE)
    wait_parent(bot, "done: the old credential is revoked")

    # Revoked: the old key is inactive at Anthropic, the new one untouched.
    assert anthropic.status_of(old_key.id) == "inactive"
    assert anthropic.status_of(new_key.id) == "active"
    assert not anthropic.valid(CANARY_OLD) and anthropic.valid(new_key.value)
    after = bot.store.describe(PATH)
    assert after.current == "2"
    assert [v.destroyed for v in after.versions if v.version == "1"] == [True]
    posts = [(s.route, s.body) for s in anthropic.seen if s.method == "POST"]
    assert posts == [(KEY_ONE, {"status": "inactive"})]

    # Every call fit the SDK's types, and every Slack call Slack's.
    assert anthropic.violations == []
    assert bot.state.violations == []
    # No key value (nor the admin key) in Slack, the log or the database.
    dump = "\n".join(sqlite3.connect(bot.db_path).iterdump())
    calls = json.dumps([c.args for c in bot.state.calls], default=str)
    log = bot.log_text()
    assert '"level": "debug"' in log
    for value in (CANARY_OLD, new_key.value, anthropic.admin_key):
        assert value not in dump and value not in log and value not in calls
    assert old_key.id in dump and new_key.id in dump  # key ids are references, kept
