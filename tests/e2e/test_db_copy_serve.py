"""Moving to PostgreSQL: `rotabot db copy` takes a SQLite database holding a finished and an
in-flight rotation, and `rotabot serve` on the copy carries the in-flight one to revocation
through signed Slack requests, updating the same rotation message."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CATALOG, Bot, BotConfig
from e2e_helpers import click_step, parent_message, switch_when_ready, wait_ephemeral
from harness.serve import process_env
from sqlalchemy import text
from test_rotation_flow import start_and_write_new_version

from adapters.file_store import FileStore
from bot.domain.secret_material import SecretMaterial
from handlers.ids import Action
from storage.engine import make_engine

pytestmark = [pytest.mark.postgres]

OWNERS = [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"), ("inference-api", "U0ALICE")]
# A second secret, for the rotation that is finished before the copy.
WEBHOOK = """\
  webhook-key:
    issuer: {{kind: manual}}
    store: {{name: local, path: hooks/webhook-key}}
    consumers:
      receiver: {{owner: U0BOB, lane: dev, reload: hot}}
"""


@pytest.fixture
def bot_config(tmp_path: Path) -> BotConfig:
    FileStore(tmp_path / "secrets").put("hooks/webhook-key", SecretMaterial({"k": "v"}))
    return BotConfig(catalog=(CATALOG + WEBHOOK).format(store=tmp_path / "secrets"))


def sqlite_audit_count(bot: Bot) -> int:
    with sqlite3.connect(bot.db_path) as db:
        (n,) = db.execute("select count(*) from audit_events").fetchone()
    return int(n)


def test_serve_on_the_postgres_copy_continues_the_in_flight_rotation(
    bot: Bot, postgres_url: str
) -> None:
    # R-1 in flight (half its consumers distributed), R-2 finished (cancelled).
    parent = start_and_write_new_version(bot)
    click_step(bot, "U0BOB", "retriever", "Distributed")
    bot.slack.command("U0ADMIN", "C0ROTATE", "start webhook-key")
    wait_ephemeral(bot, "U0ADMIN", "Started R-2")
    bot.slack.command("U0ADMIN", "C0ROTATE", "cancel R-2")
    wait_ephemeral(bot, "U0ADMIN", "R-2: cancelled")
    bot.server.stop()
    copied_events = sqlite_audit_count(bot)

    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "copy", "--from", f"sqlite:///{bot.db_path}",
         "--to", postgres_url],
        env=process_env({}), capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"^audit_events +{copied_events} rows copied, +{copied_events} in the "
                     "target$", done.stdout, re.M), done.stdout
    # A second copy into the same database is refused: it holds rows now.
    again = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "copy", "--from", f"sqlite:///{bot.db_path}",
         "--to", postgres_url],
        env=process_env({}), capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 2 and "is not empty" in again.stderr

    bot.server.env["DATABASE_URL"] = postgres_url
    bot.server.start()
    for consumer, owner in OWNERS:  # lane by lane; retriever had distributed before
        if consumer != "retriever":
            click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    switch_when_ready(bot)
    for consumer, owner in OWNERS:
        click_step(bot, owner, consumer, "Sign off")
    bot.state.wait_for(lambda s: "ready to revoke" in parent_message(bot).text, 15)
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent.ts,
                    action_id=Action.REVOKE.value)
    bot.state.wait_for(lambda s: "revoked" in parent_message(bot).text, 10)

    # The rotation message posted before the copy was the one updated after it.
    assert parent_message(bot).ts == parent.ts
    assert len([m for m in bot.state.channel_messages("C0ROTATE")
                if m.thread_ts in (None, m.ts) and "R-1" in m.text]) == 1
    assert bot.store.describe("ai/model-api-key").current == "2"
    # It all happened in PostgreSQL: the SQLite file is as it was copied, and the new audit
    # events follow the copied ones (the sequence continued past them).
    assert sqlite_audit_count(bot) == copied_events
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        phases = conn.execute(text(
            "select id, after from audit_events where rotation_id = 1 and action = 'phase' "
            "order by id")).all()
        finished = conn.execute(text("select phase from rotations where id = 2")).scalar_one()
    engine.dispose()
    assert finished == "cancelled"
    assert phases[-1][1] == "revoked" and phases[-1][0] > copied_events
    assert bot.state.violations == []
