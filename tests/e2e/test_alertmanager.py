"""Debian's real `prometheus-alertmanager` notifying a real `rotabot serve`.

Alertmanager's configuration is the README's receiver snippet (docs/alertmanager/receiver.yml,
which the README quotes), with only the URL, the token file and the timings changed for a test.
Alerts are fired through Alertmanager's own API, as Prometheus sends them; the test checks the
incident message, that a second alert of the same failure coalesces into it while the group's
repeats count once, and that resolving the alert in Alertmanager resolves it in rotabot.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CATALOG, BotConfig
from harness.alertmanager import AlertmanagerServer

from bot.sandbox.slack_standin.state import Message

Bot = Any  # conftest.Bot, under the name the fixture gives it

pytestmark = pytest.mark.alertmanager

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = ROOT / "docs" / "alertmanager" / "receiver.yml"
TOKEN = secrets.token_hex(32)
OLD_TOKEN = secrets.token_hex(32)  # a token being rotated out: both are accepted


@pytest.fixture
def bot_config() -> BotConfig:
    return BotConfig(env={"ROTABOT_ALERTMANAGER_TOKEN": f"{OLD_TOKEN} {TOKEN}"},
                     forbid=(TOKEN, OLD_TOKEN))


def alertmanager_config(rotabot_url: str, token_file: Path) -> str:
    """The README's snippet, pointed at this bot and made fast; nothing else changed."""
    config = yaml.safe_load(SNIPPET.read_text())
    route = config["route"]
    route.update(group_wait="0s", group_interval="1s", repeat_interval="2s")
    (receiver,) = config["receivers"]
    (webhook,) = receiver["webhook_configs"]
    webhook["url"] = rotabot_url + "/alerts"
    webhook["http_config"]["authorization"]["credentials_file"] = str(token_file)
    return yaml.safe_dump(config)


@pytest.fixture
def alertmanager(bot: Bot, tmp_path: Path) -> Iterator[AlertmanagerServer]:
    token_file = tmp_path / "rotabot-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    server = AlertmanagerServer.start(alertmanager_config(bot.url, token_file))
    try:
        yield server
    finally:
        server.stop()


def am_alert(alertname: str, *, ends: datetime | None = None) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "labels": {"alertname": alertname, "consumer": "inference-api",
                   "secret": "model-api-key", "lane": "prod", "status_code": "401"},
        "annotations": {"summary": "401 from the model provider"},
        "generatorURL": "http://prometheus.example/graph",
    }
    if ends is not None:
        alert["endsAt"] = ends.isoformat()
    return alert


def incident(bot: Bot, *needles: str, timeout: float = 30) -> Message:
    """The incident message once its text and blocks hold every needle."""
    def find(_: object) -> Message | None:
        for m in bot.state.channel_messages("C0INCIDENT"):
            text = m.text + json.dumps(m.blocks)
            if all(n in text for n in needles):
                return m
        return None
    return bot.state.wait_for(find, timeout)


def stored_alerts(bot: Bot) -> list[tuple[Any, ...]]:
    with sqlite3.connect(bot.db_path) as db:
        return db.execute("select id, consumer, count, status, resolved_by, source from alerts "
                          "order by id").fetchall()


def test_the_readme_quotes_the_receiver_snippet_the_test_uses() -> None:
    readme = (ROOT / "README.md").read_text()
    assert SNIPPET.read_text().strip() in readme
    config = yaml.safe_load(SNIPPET.read_text())
    (webhook,) = config["receivers"][0]["webhook_configs"]
    assert webhook["send_resolved"] is True
    assert webhook["http_config"]["authorization"]["type"] == "Bearer"


def test_alertmanager_fires_coalesces_and_resolves_a_rotabot_alert(
    bot: Bot, alertmanager: AlertmanagerServer
) -> None:
    assert CATALOG  # the e2e catalog: inference-api is a prod consumer of model-api-key
    alertmanager.post_alerts([am_alert("ConsumerAuthFailing")])
    first = incident(bot, "inference-api (prod) is failing authentication", "seen 1x")
    assert first.text.startswith("inference-api (prod) is failing authentication")
    assert "<@U0ALICE>" in first.text

    # A second alert of the same failure: Alertmanager sends the group with both, the first
    # again (a duplicate of what was taken) and the new one, which coalesces into the alert.
    alertmanager.post_alerts([am_alert("ConsumerAuthFailingCanary")])
    incident(bot, "seen 2x")
    (row,) = stored_alerts(bot)
    ref_id, consumer, _, status, _, source = row
    assert (consumer, status) == ("inference-api", "open")
    assert source.startswith("alertmanager/rotabot#")

    # Resolved in Alertmanager (endsAt in the past): the alert its firing opened resolves.
    past = datetime.now(UTC) - timedelta(seconds=5)
    alertmanager.post_alerts([am_alert("ConsumerAuthFailing", ends=past),
                              am_alert("ConsumerAuthFailingCanary", ends=past)])
    resolved = incident(bot, "resolved by Alertmanager")
    assert resolved.ts == first.ts  # the incident message itself, updated
    assert "Acknowledge" not in json.dumps(resolved.blocks)
    (row,) = stored_alerts(bot)
    # Every repeat of the group (every 2s while it fired) was answered as a duplicate.
    assert row[0] == ref_id and row[2:5] == (2, "resolved", "Alertmanager")
    assert len(bot.state.calls_to("chat.postMessage")) == 1  # one incident, then updates
    log = bot.log_text()
    assert TOKEN not in log and OLD_TOKEN not in log
    assert "alert refused" not in log
