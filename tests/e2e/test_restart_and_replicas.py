"""Timers survive `kill -9`: a restarted `rotabot serve` opens the gate once, at its time."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import CATALOG, Bot, BotConfig
from e2e_helpers import click_step, parent_message, switch_when_ready
from test_rotation_flow import start_and_write_new_version

from handlers.ids import Action

OBSERVE_SECONDS = 5
OWNERS = [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"), ("inference-api", "U0ALICE")]


@pytest.fixture
def bot_config(tmp_path: Path) -> BotConfig:
    catalog = CATALOG.replace("observe: 3s", f"observe: {OBSERVE_SECONDS}s")
    return BotConfig(catalog=catalog.format(store=tmp_path / "secrets"))


def audit_rows(bot: Bot, where: str) -> list[tuple[str, ...]]:
    with sqlite3.connect(bot.db_path) as db:
        query = f"select actor, action, before, after, at from audit_events {where}"
        return db.execute(query).fetchall()


def observe_until(bot: Bot) -> datetime:
    with sqlite3.connect(bot.db_path) as db:
        (raw,) = db.execute("select observe_until from rotations where id = 1").fetchone()
    return datetime.fromisoformat(str(raw)).replace(tzinfo=UTC)


def switch_and_sign_off(bot: Bot) -> None:
    start_and_write_new_version(bot)
    for consumer, owner in OWNERS:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    switch_when_ready(bot)
    for consumer, owner in OWNERS:
        click_step(bot, owner, consumer, "Sign off")


@pytest.mark.parametrize("downtime", ["restart-mid-window", "down-past-the-deadline"])
def test_killed_during_observation_the_restarted_bot_opens_the_gate_once(
    bot: Bot, downtime: str
) -> None:
    switch_and_sign_off(bot)
    deadline = observe_until(bot)
    bot.kill9()
    # The point of the test: the process died while the window was still open.
    assert datetime.now(UTC) < deadline, "signing off took longer than the window"
    assert "ready to revoke" not in parent_message(bot).text
    if downtime == "down-past-the-deadline":
        while datetime.now(UTC) < deadline:
            time.sleep(0.1)
    bot.restart()
    restarted = time.monotonic()

    bot.state.wait_for(lambda s: "ready to revoke" in parent_message(bot).text,
                       OBSERVE_SECONDS + 15)
    print(f"{downtime}: ready to revoke {time.monotonic() - restarted:.2f}s after restart")
    parent = parent_message(bot)
    assert any(e.get("action_id") == Action.REVOKE.value for b in parent.blocks
               for e in b.get("elements", []))
    # The admins are told in the thread, once.
    bot.state.wait_for(lambda s: [m for m in s.thread("C0ROTATE", parent.ts)
                                  if "is ready to revoke" in m.text] or None, 10)
    time.sleep(2.5)  # a few more timer ticks of the restarted process: nothing fires again
    ready = [m for m in bot.state.thread("C0ROTATE", parent.ts) if "is ready to revoke" in m.text]
    assert len(ready) == 1 and "<@U0ADMIN>" in ready[0].text

    (row,) = audit_rows(bot, "where action = 'phase' and after = 'revocable'")
    actor, _, before, _, at = row
    assert (actor, before) == ("rotabot", "observing")
    # It fired at its time or later (never early), by the restarted process.
    assert datetime.fromisoformat(str(at)).replace(tzinfo=UTC) >= deadline
    assert bot.state.violations == []
