"""A webhook signing secret rotated through `rotabot serve` and signed Slack requests.

The `webhook-hmac` issuer mints the new secret; the receivers' list of accepted secrets goes to a
dotenv file (an env-file target on the dev lane, where the receiver runs) and the senders sign
in prod. During the overlap the store's current version and the dotenv file list [new, old];
after revocation both list only [new]. No secret reaches Slack, the log or the database.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path

import pytest
from conftest import Bot, BotConfig
from e2e_helpers import click_parent, click_step, prompt_for, switch_when_ready, wait_parent
from harness.serve import catalog_head

from adapters.env_file import EnvFileTarget
from adapters.file_store import FileStore
from bot.domain.secret_material import SecretMaterial
from handlers.ids import Action

PATH = "hooks/billing-signing"
OLD = "whsec_" + secrets.token_urlsafe(32)
OLD_ID = "wh_" + secrets.token_hex(4)
CATALOG = catalog_head(observe="2s", lanes=("dev", "prod")) + """\
stores:
  local:
    kind: file
    path: {store}
secrets:
  billing-webhook:
    description: Signing secret of the billing webhooks
    issuer: {{kind: webhook-hmac}}
    store: {{name: local, path: {path}}}
    targets:
      dev: [{{kind: env-file, file: {env}, key: WEBHOOK_SECRETS, field: secrets}}]
    consumers:
      hook-receiver:
        owner: U0BOB
        lane: dev
        reload: hot
        rollback: Restore the previous list
      billing-sender:
        owner: U0ALICE
        lane: prod
        reload: restart
        rollback: Sign with the previous secret
"""


def env_target(tmp_path: Path) -> EnvFileTarget:
    return EnvFileTarget(tmp_path / "hooks.env", "WEBHOOK_SECRETS", field="secrets")


@pytest.fixture
def bot_config(tmp_path: Path) -> BotConfig:
    # Before rotabot: the senders sign with OLD and the receiver accepts [OLD].
    before = SecretMaterial({"secret": OLD, "secrets": json.dumps([OLD]), "key_id": OLD_ID})
    FileStore(tmp_path / "secrets").put(PATH, before)
    (tmp_path / "hooks.env").write_text("RECEIVER_PORT=8080\n")
    env_target(tmp_path).write(before)
    return BotConfig(
        catalog=CATALOG.format(store=tmp_path / "secrets", path=PATH,
                               env=tmp_path / "hooks.env"),
        forbid=(OLD,),
    )


def accepted(material: SecretMaterial | None) -> list[str]:
    assert material is not None
    value = json.loads(material.reveal()["secrets"])
    assert isinstance(value, list)
    return value


def test_webhook_secret_from_start_to_revoke(bot: Bot, tmp_path: Path) -> None:
    target = env_target(tmp_path)
    bot.slack.command("U0ADMIN", "C0ROTATE", "start billing-webhook")
    wait_parent(bot, "distributing")

    # Minted: pending version 2 signs with the new secret and lists [new, old].
    state = bot.store.describe(PATH)
    assert (state.current, state.pending) == ("1", "2")
    pending = bot.store.read(PATH, "2").reveal()
    new = pending["secret"]
    bot.state.forbid(new)
    assert new.startswith("whsec_") and new != OLD
    assert json.loads(pending["secrets"]) == [new, OLD]
    assert pending["key_id"].startswith("wh_") and pending["key_id"] != OLD_ID
    # Dev's turn: the receiver's dotenv file lists both, the store's current is still OLD.
    assert accepted(target.read()) == [new, OLD]
    assert bot.store.read(PATH).reveal()["secret"] == OLD
    assert "RECEIVER_PORT=8080" in target.path.read_text()
    assert "env-file" in prompt_for(bot, "hook-receiver", "Distributed").text

    for consumer, owner in [("hook-receiver", "U0BOB"), ("billing-sender", "U0ALICE")]:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    switch_when_ready(bot)
    # The overlap: the stored current and the dotenv file list [new, old].
    assert bot.store.describe(PATH).current == "2"
    assert accepted(bot.store.read(PATH)) == [new, OLD]
    assert accepted(target.read()) == [new, OLD]

    for consumer, owner in [("hook-receiver", "U0BOB"), ("billing-sender", "U0ALICE")]:
        click_step(bot, owner, consumer, "Sign off")
    text = wait_parent(bot, "ready to revoke", timeout=20)
    assert "cannot see which secret a receiver verified with" in text
    click_parent(bot, Action.REVOKE)
    wait_parent(bot, "done: the old credential is revoked")

    # Revoked: a new current version lists only the new secret, and so does the dotenv file.
    after = bot.store.describe(PATH)
    assert (after.current, after.previous) == ("3", "2")
    assert [v.destroyed for v in after.versions if v.version == "1"] == [True]
    current = bot.store.read(PATH).reveal()
    assert (current["secret"], current["key_id"]) == (new, pending["key_id"])
    assert json.loads(current["secrets"]) == [new]
    assert accepted(target.read()) == [new]
    assert "RECEIVER_PORT=8080" in target.path.read_text()

    db = sqlite3.connect(bot.db_path)
    [(detail,)] = db.execute(
        "select detail from audit_events where action = 'credential.trimmed'").fetchall()
    assert json.loads(detail)["version"] == "3" and "hooks.env" in json.loads(detail)["targets"]
    ids = db.execute("select old_key_id, new_key_id from rotations").fetchall()
    assert ids == [(OLD_ID, pending["key_id"])]

    # Every Slack call fit Slack's spec; no secret in Slack, the log or the database.
    assert bot.state.violations == []
    dump = "\n".join(db.iterdump())
    calls = json.dumps([c.args for c in bot.state.calls], default=str)
    log = bot.log_text()
    for value in (OLD, new, OLD.removeprefix("whsec_"), new.removeprefix("whsec_")):
        assert value not in dump and value not in log and value not in calls
