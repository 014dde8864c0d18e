"""`rotabot front` (bot/runtime/slack_front.py) as a real process in front of a real
`rotabot serve`: Slack talks to the front only. Commands and clicks are answered by the front
and done by serve; a modal's validation errors come back through it; a forged request stops
at it; a click sent while serve is down is done once serve is back."""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from conftest import Bot
from e2e_helpers import click_step, parent_message, prompt_for, wait_ephemeral
from harness.metric_text import metric_sum
from harness.serve import free_port, process_env, spawn, stop_process, wait_healthy
from test_rotation_flow import start_and_write_new_version
from test_thread_receipts import open_modal

from bot.sandbox.slack_standin.slack_side import SlackSide
from handlers.ids import Action


@dataclass
class Front:
    url: str
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metric(self, sample: str, **labels: str) -> float:
        return metric_sum(httpx.get(self.url + "/metrics", timeout=5).text, sample, **labels)


@pytest.fixture
def front(bot: Bot, tmp_path: Path) -> Iterator[Front]:
    """The front on its own port, serve behind it; ``bot.slack`` now talks to the front."""
    port = free_port()
    log_path = tmp_path / "front.log"
    env = process_env({"SLACK_SIGNING_SECRET": bot.signing_secret})
    process = spawn([sys.executable, "-m", "bot.cli", "front", "--host", "127.0.0.1",
                     "--port", str(port), "--upstream", bot.url],
                    env=env, cwd=tmp_path, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url, log_path, what="rotabot front")
        bot.slack = SlackSide(bot.state, url + "/slack/events", bot.signing_secret)
        yield Front(url, log_path)
    finally:
        stop_process(process, timeout=10)


def test_a_rotation_runs_through_the_front_and_each_click_is_acked_by_it(
    bot: Bot, front: Front
) -> None:
    parent = start_and_write_new_version(bot)  # a command and a click, through the front
    click_step(bot, "U0BOB", "retriever", "Distributed")
    click_step(bot, "U0BOB", "retriever", "Validated")
    # The front answered those itself (empty 200s) and serve did the work.
    assert front.metric("rotabot_front_acked_total") == 4
    assert front.metric("rotabot_front_proxied_total") == 0
    assert front.metric("rotabot_front_forwarded_total", status="200") == 4
    assert "distributing" in parent_message(bot).text
    assert parent.ts == parent_message(bot).ts

    # One request sent twice, byte for byte (a replay): both acked by the front, and serve,
    # which verifies again, does it once.
    body = urlencode({"command": "/rotate", "text": "status R-1", "user_id": "U0ADMIN",
                      "user_name": "ada", "channel_id": "C0ROTATE", "channel_name": "rotations",
                      "team_id": bot.state.team_id, "api_app_id": "A0ROTABOT",
                      "response_url": bot.state.new_response_url("C0ROTATE", "U0ADMIN"),
                      "trigger_id": bot.state.new_trigger_id("U0ADMIN")})
    headers = {"Content-Type": "application/x-www-form-urlencoded", **bot.slack.sign(body)}
    for _ in range(2):
        assert httpx.post(front.url + "/slack/events", content=body, headers=headers,
                          timeout=10).status_code == 200
    wait_ephemeral(bot, "U0ADMIN", "R-1 model-api-key")
    bot.state.wait_for(lambda s: "ignored a replayed Slack request" in bot.log_text(), 10)
    assert len([e for e in bot.state.ephemerals_for("U0ADMIN")
                if "R-1 model-api-key" in e.text]) == 1
    with sqlite3.connect(bot.db_path) as db:
        steps = db.execute("SELECT count(*) FROM audit_events WHERE action = 'step'"
                           ).fetchone()
    assert steps == (2,)


def test_a_modal_s_errors_come_back_through_the_front(bot: Bot, front: Front) -> None:
    start_and_write_new_version(bot)
    prompt = prompt_for(bot, "retriever", "Distributed")
    bot.slack.click("U0BOB", channel="C0ROTATE", message_ts=prompt.ts,
                    action_id=Action.REPORT_PROBLEM.value)
    modal = open_modal(bot, "U0BOB")  # opened by serve with the click's trigger id

    blank = bot.slack.submit_view("U0BOB", modal.id, {"what": "   "})
    assert blank.json == {"response_action": "errors",
                          "errors": {"what": "Say what fails, in a sentence"}}
    assert front.metric("rotabot_front_proxied_total") == 1
    ok = bot.slack.submit_view("U0BOB", modal.id, {"what": "401 from the provider"})
    assert ok.status == 200 and ok.body == ""
    bot.state.wait_for(lambda s: any("reported a problem with" in m.text for m in s.thread(
        "C0ROTATE", parent_message(bot).ts)), 15)


def test_a_forged_request_stops_at_the_front(bot: Bot, front: Front) -> None:
    forged = SlackSide(bot.state, front.url + "/slack/events", "not-the-signing-secret")
    reply = forged.command("U0MALLORY", "C0ROTATE", "start model-api-key")
    assert reply.status == 401
    assert "signature or timestamp did not verify" in front.log_text()
    assert front.metric("rotabot_front_forwarded_total") == 0
    assert "slack request refused" not in bot.log_text()  # serve never saw it
    with sqlite3.connect(bot.db_path) as db:
        assert db.execute("SELECT count(*) FROM rotations").fetchone() == (0,)


def test_a_command_sent_while_serve_is_down_is_done_when_it_is_back(
    bot: Bot, front: Front
) -> None:
    bot.kill9()
    reply = bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    assert reply.status == 200 and reply.body == ""  # acked: the front holds it
    bot.state.wait_for(lambda s: front.metric("rotabot_front_retries_total") >= 1, 10)
    bot.server.start()
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    assert "waiting for the new credential" in parent_message(bot).text
    assert front.metric("rotabot_front_waiting") == 0
