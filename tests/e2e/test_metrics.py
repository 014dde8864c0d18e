"""GET /metrics: rotations by phase, pending steps by lane, Slack calls and 429s; no values."""

from __future__ import annotations

import httpx
from conftest import CANARY_NEW, CANARY_OLD, Bot
from e2e_helpers import click_step
from test_rotation_flow import start_and_write_new_version


def test_metrics_count_phases_steps_and_slack_rate_limits(bot: Bot) -> None:
    start_and_write_new_version(bot)
    bot.state.fail_next("chat.update", status=429, retry_after=1)
    click_step(bot, "U0BOB", "retriever", "Distributed")
    bot.state.wait_for(lambda s: len(s.calls_to("chat.update")) >= 2, 15)
    text = httpx.get(bot.url + "/metrics", timeout=10).text
    assert 'rotabot_rotations{phase="distributing"} 1' in text
    assert 'rotabot_steps_pending{lane="dev"} 1' in text
    assert 'rotabot_slack_rate_limited_total{method="chat.update"} 1' in text
    assert 'rotabot_slack_api_calls_total{method="chat.postMessage"}' in text
    assert CANARY_OLD not in text and CANARY_NEW not in text
