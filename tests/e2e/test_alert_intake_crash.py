"""kill -9 of `rotabot serve` in the middle of an alert burst: no acknowledged report is lost.

Reports are group-committed (bot/services/alert_batches.py) and answered only after their
batch committed; Slack follows the commit. Here Slack refuses the first post of each new
alert, the process is killed mid-burst, restarted, and every sender retries what it sent with
the same delivery id: each report ends up counted exactly once, every report acknowledged
before the kill is answered as a duplicate, and each alert's incident message, which the dead
process never managed to post, is posted once by the restarted one.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from conftest import BotConfig
from harness.serve import alert_headers, eventually

Bot = Any  # conftest.Bot, under the name the fixture gives it

ALERT_SECRET = "alert-key-" + secrets.token_hex(16)
CONSUMERS = ("retriever", "nightly-ingest", "inference-api")
REPORTS = 30


@pytest.fixture
def bot_config() -> BotConfig:
    return BotConfig(env={"ROTABOT_ALERT_SECRET": ALERT_SECRET,
                          "ROTABOT_ALERT_FLOOD_LIMIT": "1000/1000"})


def report(i: int) -> tuple[bytes, str]:
    consumer = CONSUMERS[i % len(CONSUMERS)]
    body = json.dumps({"consumer": consumer, "secret": "model-api-key", "status_code": 401,
                       "source": f"{consumer}-sidecar"}).encode()
    return body, f"crash-delivery-{i}"


def send(bot: Bot, i: int) -> httpx.Response | None:
    body, delivery = report(i)
    try:
        return httpx.post(bot.url + "/alerts", content=body, timeout=30,
                          headers=alert_headers(ALERT_SECRET, body, delivery=delivery))
    except httpx.HTTPError:
        return None  # the process died under the request: never acknowledged


def stored(bot: Bot) -> list[tuple[str, int, str | None]]:
    with sqlite3.connect(bot.db_path) as db:
        return db.execute("select consumer, count, message_ts from alerts "
                          "order by consumer").fetchall()


def incident_posts(bot: Bot) -> list[Any]:
    return [c for c in bot.state.calls_to("chat.postMessage")
            if c.args.get("channel") == "C0INCIDENT" and c.fault is None]


def test_kill_9_mid_burst_loses_no_acknowledged_report_and_posts_each_alert_once(
    bot: Bot,
) -> None:
    # The first post of each new alert fails: the alerts are stored, their posts are owed.
    bot.state.fail_next("chat.postMessage", error="fatal_error", times=len(CONSUMERS))
    acked: set[int] = set()
    lock = threading.Lock()

    def one(i: int) -> None:
        resp = send(bot, i)
        if resp is not None and resp.status_code == 200:
            with lock:
                acked.add(i)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(REPORTS)]
        eventually(lambda: len(acked) >= 6, 30, "the first acknowledgements")
        bot.kill9()  # mid-burst: some requests queued, some in a batch, some not sent yet
        for f in futures:
            f.result()
    before_restart = sum(count for _, count, _ in stored(bot))
    assert before_restart >= len(acked)  # everything acknowledged was on disk already

    bot.server.start()
    with ThreadPoolExecutor(8) as pool:  # every sender retries its delivery
        retried = dict(zip(range(REPORTS), pool.map(lambda i: send(bot, i), range(REPORTS)),
                           strict=True))
    for i, resp in retried.items():
        assert resp is not None and resp.status_code == 200, (i, resp)
        if i in acked:
            assert resp.json() == {"ok": True, "duplicate": True}
    assert {(c, n) for c, n, _ in stored(bot)} == {(c, REPORTS // len(CONSUMERS))
                                                   for c in CONSUMERS}

    # The restarted process's catch-up posts what the dead one owed, once per alert.
    eventually(lambda: all(ts for _, _, ts in stored(bot)), 30, "every alert posted")
    posts = incident_posts(bot)
    assert sorted(next(c for c in CONSUMERS if c in str(p.args.get("text"))) for p in posts) \
        == sorted(CONSUMERS)
