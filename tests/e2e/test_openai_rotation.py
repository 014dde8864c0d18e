"""A rotation of an OpenAI project key through `rotabot serve` and signed Slack requests.

The `openai` issuer talks to a loopback stand-in of OpenAI's organization admin API that checks
every request against OpenAI's published OpenAPI description (tests/harness/openai_standin.py).
The file store starts with the key of service account `rotabot-model-api-key-a`; the rotation
mints a key on `-b`, the old key's `last_used_at` holds the gate while it is recent, and revoke
deletes `-a`. No key value reaches Slack, the log or the database.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CANARY_OLD, Bot, BotConfig
from e2e_helpers import (
    click_parent,
    click_step,
    has_button,
    wait_ephemeral,
    wait_parent,
)
from harness.openai_standin import OpenAIStandin, started
from harness.serve import catalog_head

from handlers.ids import Action

PATH = "ai/model-api-key"
A, B = "rotabot-model-api-key-a", "rotabot-model-api-key-b"
CATALOG = catalog_head(observe="2s") + """\
stores:
  local:
    kind: file
    path: {store}
secrets:
  model-api-key:
    description: Model provider key
    issuer:
      kind: openai
      admin_key_env: OPENAI_ADMIN_KEY
      project_id: {project}
      base_url: "{base_url}"
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
def openai() -> Iterator[OpenAIStandin]:
    yield from started()


@pytest.fixture
def bot_config(tmp_path: Path, openai: OpenAIStandin) -> BotConfig:
    project = next(iter(openai.projects))
    # What the store holds before the first rotation: the key of account -a.
    openai.seed_service_account(project, A, key_value=CANARY_OLD)
    return BotConfig(
        catalog=CATALOG.format(store=tmp_path / "secrets", project=project,
                               base_url=openai.base_url, path=PATH),
        env={"OPENAI_ADMIN_KEY": openai.admin_key, "ROTABOT_LOG_LEVEL": "DEBUG"},
        forbid=(openai.admin_key,),
    )


def test_openai_key_from_start_to_revoke(bot: Bot, openai: OpenAIStandin) -> None:
    old_account = openai.account_named(A)
    assert old_account is not None
    [old_key] = openai.keys_of(old_account.id)

    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    wait_parent(bot, "distributing")

    # Prepared: a key on account -b, pending in the store beside the old one; both valid.
    state = bot.store.describe(PATH)
    assert (state.current, state.pending) == ("1", "2")
    new_value = bot.store.read(PATH, "2").reveal()["api_key"]
    bot.state.forbid(new_value)
    new_account = openai.account_named(B)
    assert new_account is not None
    [new_key] = openai.keys_of(new_account.id)
    assert new_key.value == new_value and new_value != CANARY_OLD
    assert openai.valid(CANARY_OLD) and openai.valid(new_value)
    assert bot.store.read(PATH, "2").field_names() == ["api_key"]

    for consumer, owner in [("retriever", "U0BOB"), ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    bot.state.wait_for(lambda s: has_button(bot, Action.SWITCH), 10)
    click_parent(bot, Action.SWITCH)
    wait_parent(bot, "observing")

    # A straggler still calls OpenAI with the old key: its last_used_at holds the gate.
    openai.use(old_key.id)
    for consumer, owner in [("retriever", "U0BOB"), ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Sign off")
    expected = f"key {old_key.id} was last used at"
    text = wait_parent(bot, f"the old credential is still in use: {expected}", timeout=20)
    assert "within the last 15 minutes" in text and "ready to revoke" not in text
    bot.slack.command("U0ADMIN", "C0ROTATE", "revoke R-1")
    refusal = wait_ephemeral(bot, "U0ADMIN", "cannot be revoked yet")
    assert expected in refusal.text
    assert openai.account_named(A) is not None and openai.valid(CANARY_OLD)

    # The straggler moved: the last use is older than the window, the gate opens.
    openai.use(old_key.id, at=time.time() - 20 * 60)
    text = wait_parent(bot, "ready to revoke", timeout=20)
    assert "not in the last 15 minutes" in text
    click_parent(bot, Action.REVOKE)
    wait_parent(bot, "done: the old credential is revoked")

    # Revoked: account -a is deleted with its key; -b and the new key remain.
    assert openai.account_named(A) is None
    assert not openai.valid(CANARY_OLD) and openai.valid(new_value)
    assert openai.account_named(B) is not None
    after = bot.store.describe(PATH)
    assert after.current == "2"
    assert [v.destroyed for v in after.versions if v.version == "1"] == [True]
    deletes = [(s.method, s.template) for s in openai.seen if s.method == "DELETE"]
    assert deletes == [("DELETE",
                        "/organization/projects/{project_id}/service_accounts/"
                        "{service_account_id}")]

    # Every call fit OpenAI's description, and every Slack call Slack's.
    assert openai.violations == [] and openai.response_violations == []
    assert bot.state.violations == []
    # No key value (nor the admin key) in Slack, the log or the database.
    dump = "\n".join(sqlite3.connect(bot.db_path).iterdump())
    calls = json.dumps([c.args for c in bot.state.calls], default=str)
    log = bot.log_text()
    assert '"level": "debug"' in log
    for value in (CANARY_OLD, new_value, openai.admin_key):
        assert value not in dump and value not in log and value not in calls
    assert old_key.id in dump and new_key.id in dump  # key ids are references, kept
