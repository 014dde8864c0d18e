"""Slack's rate limits through `rotabot serve`: the stand-in enforces the published tiers (as
it does for every e2e test), and an alert burst stays under them with every message ending
in its final state. The bot's side is adapters/slack_budget.py."""

from __future__ import annotations

import json
import secrets
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import BotConfig
from harness.serve import alert_headers, catalog_head, eventually

from handlers.ids import Action

Bot = Any  # conftest.Bot, under the name the fixture gives it

ALERT_SECRET = "alert-key-" + secrets.token_hex(16)
CONSUMERS = tuple(f"worker-{n:02d}" for n in range(10))
REPORTS = 200

CATALOG = catalog_head(observe="1h") + """\
stores:
  local: {{kind: file, path: "{store}"}}
secrets:
  model-api-key:
    issuer: {{kind: local}}
    store: {{name: local, path: ai/model-api-key}}
    consumers:
""" + "".join(f"      {c}: {{{{owner: U0BOB, lane: dev, reload: hot}}}}\n" for c in CONSUMERS)


@pytest.fixture
def bot_config(tmp_path: Path) -> BotConfig:
    return BotConfig(catalog=CATALOG.format(store=tmp_path / "secrets"),
                     env={"ROTABOT_ALERT_SECRET": ALERT_SECRET})


def send_alert(bot: Bot, consumer: str) -> int:
    body = json.dumps({"consumer": consumer, "status_code": 401,
                       "source": f"{consumer}-sidecar"}).encode()
    return httpx.post(bot.url + "/alerts", content=body, timeout=30, headers=alert_headers(
        ALERT_SECRET, body, delivery=str(uuid.uuid4()))).status_code


def test_an_alert_burst_stays_within_slacks_limits_and_every_message_ends_current(
    bot: Bot,
) -> None:
    assert bot.state.limiter.enabled  # the e2e stand-in enforces Slack's tiers

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda i: send_alert(bot, CONSUMERS[i % 10]), range(REPORTS)))
    assert codes == [200] * REPORTS
    with sqlite3.connect(bot.db_path) as db:
        counts = dict(db.execute("select consumer, count from alerts").fetchall())
    assert counts == {c: REPORTS // 10 for c in CONSUMERS}

    final = f"seen {REPORTS // 10}x"
    for consumer in CONSUMERS:
        bot.state.wait_for(lambda s, c=consumer: next(
            (m for m in s.channel_messages("C0INCIDENT")
             if m.text.startswith(f"{c} (") and final in json.dumps(m.blocks)), None), 30)
    posts = [p for p in bot.state.calls_to("chat.postMessage")
             if p.args.get("channel") == "C0INCIDENT"]
    assert len(posts) == 10  # one message per consumer
    # The last update Slack got for each message is its latest render: no stale one after it.
    last: dict[str, Any] = {}
    for call in bot.state.calls_to("chat.update"):
        if call.ok:
            last[str(call.args["ts"])] = call
    assert len(last) == 10
    assert all(final in json.dumps(c.args.get("blocks")) for c in last.values())

    report = httpx.get(bot.standin.root_url + "standin/rate_limits", timeout=5).json()
    assert report["enforced"] is True
    assert report["rate_limited"] == {}  # not one 429
    assert bot.state.violations == []


def test_a_click_storm_in_a_busy_channel_is_acked_every_time(bot: Bot) -> None:
    """Every click is acked even while the channel's posts wait for Slack's pace: a
    listener queues the next prompt instead of holding one of Bolt's threads until the
    post's turn (Bolt answers 404 to a request no listener acked within 3 s)."""
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    parent = bot.state.wait_for(lambda s: next(
        (m for m in s.channel_messages("C0ROTATE") if "R-1" in m.text), None), 30)

    def step_prompts(s: Any) -> list[Any]:
        return [m for m in s.thread("C0ROTATE", parent.ts)
                if any(e.get("action_id") == Action.STEP.value
                       for b in m.blocks if b.get("type") == "actions"
                       for e in b.get("elements", []))]

    # The parent and ten prompts spend the channel's burst: each next post waits ~1 s.
    def all_prompts(s: Any) -> list[Any] | None:
        found = step_prompts(s)
        return found if len(found) == len(CONSUMERS) else None

    prompts = bot.state.wait_for(all_prompts, 60)
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        replies = list(pool.map(lambda m: bot.slack.click(
            "U0BOB", channel="C0ROTATE", message_ts=m.ts, action_id=Action.STEP.value),
            prompts))
    assert [r.status for r in replies] == [200] * len(prompts)

    def steps() -> dict[str, str]:
        with sqlite3.connect(bot.db_path) as db:
            return dict(db.execute("select name, state from consumer_steps").fetchall())

    eventually(lambda: steps() == {c: "distributed" for c in CONSUMERS}, 30, "every step")
    assert bot.state.rate_limited == {}
