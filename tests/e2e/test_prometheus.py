"""The monitoring docs against a real Prometheus: Debian's `prometheus` scrapes a real
`rotabot serve` every second while a rotation switches, a connector reports a failure and Slack
answers one call with 429; the alerting rules load (and pass `promtool check rules`) and every
query of the Grafana dashboard, annotations included, returns series."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import CANARY_NEW, CANARY_OLD, Bot, BotConfig
from e2e_helpers import click_step, switch_when_ready
from harness.prometheus import PrometheusServer, promtool
from harness.serve import alert_headers
from test_rotation_flow import start_and_write_new_version

pytestmark = pytest.mark.prometheus

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
RULES = DOCS / "rotabot-rules.yml"
DASHBOARD = DOCS / "rotabot-dashboard.json"
ALERT_SECRET = "alert-key-" + secrets.token_hex(16)
# Grafana's variables as a dashboard over the last few minutes would fill them in.
GRAFANA_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "5m",
    "__range_s": "300",
    "secret": ".*",
}
RULE_NAMES = {"RotabotRotationStuck", "RotabotTimersNotRunning", "RotabotSlackRateLimited"}


@pytest.fixture
def bot_config() -> BotConfig:
    return BotConfig(env={"ROTABOT_ALERT_SECRET": ALERT_SECRET})


@pytest.fixture
def prometheus(bot: Bot) -> Iterator[PrometheusServer]:
    server = PrometheusServer.start([urlsplit(bot.url).netloc], rule_files=[RULES])
    try:
        yield server
    finally:
        server.stop()


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, expr) of every query in the dashboard: panel targets and annotations."""
    found: list[tuple[str, str]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            here = str(node.get("title") or node.get("name") or where)
            if isinstance(node.get("expr"), str):
                found.append((here, node["expr"]))
            for value in node.values():
                walk(value, here)
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(json.loads(DASHBOARD.read_text()), "dashboard")
    return found


def substitute(expr: str) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in GRAFANA_VARIABLES, f"no test value for Grafana variable ${name}"
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def poll(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, f"timed out after {timeout:.0f}s waiting for {what}"
            return value
        time.sleep(0.25)


def test_rules_check_with_promtool() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 3 rules found" in result.stdout


def test_dashboard_queries_return_series_from_a_scraped_rotation(
    bot: Bot, prometheus: PrometheusServer
) -> None:
    def target_up() -> bool:
        active = prometheus.api("/api/v1/targets")["activeTargets"]
        return any(t["health"] == "up" for t in active)

    poll(target_up, 15, "Prometheus to scrape rotabot serve")

    # A rotation to switched, with Slack rate-limiting one message update on the way.
    start_and_write_new_version(bot)
    bot.state.fail_next("chat.update", status=429, retry_after=1)
    for consumer, owner in [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"),
                            ("inference-api", "U0ALICE")]:
        click_step(bot, owner, consumer, "Distributed")
        click_step(bot, owner, consumer, "Validated")
    switch_when_ready(bot)
    # A connector reports a failure, signed as the README says.
    body = json.dumps({"consumer": "inference-api", "status_code": 401}).encode()
    reply = httpx.post(bot.url + "/alerts", content=body, timeout=10,
                       headers=alert_headers(ALERT_SECRET, body))
    assert reply.status_code in (200, 201, 202), reply.text

    queries = dashboard_queries()
    assert len(queries) >= 10
    assert any("rotabot_rotation_last_switch_timestamp_seconds" in q for _, q in queries)
    pending = {where + ": " + expr: substitute(expr) for where, expr in queries}
    empty: dict[str, str] = {}

    def all_return_series() -> bool:
        for key in list(pending):
            if prometheus.query(pending[key]):
                del pending[key]
        empty.clear()
        empty.update(pending)
        return not pending

    try:
        poll(all_return_series, 25, "every dashboard query to return series")
    except AssertionError:
        raise AssertionError(f"queries without series: {sorted(empty)}") from None

    # Spot checks of what the series say.
    [phase] = prometheus.query('rotabot_rotation_phase{secret="model-api-key"}')
    assert (phase["metric"]["phase"], phase["metric"]["rotation"]) == ("observing", "R-1")
    open_auth = prometheus.query('rotabot_alerts_open{class="authentication", lane="prod"}')
    assert [s["value"][1] for s in open_auth] == ["1"]

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = prometheus.api("/api/v1/rules")["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    rules = poll(rules_evaluated, 10, "the rules to be evaluated without errors")
    assert {r["name"] for r in rules} == RULE_NAMES
    assert all(not r.get("lastError") for r in rules)
    # The 429 is seen by the rule (it has no `for`: firing at once), though it was the
    # first of its method (increase() alone would miss it).
    limited = poll(lambda: [a for r in rules_now(prometheus) for a in r.get("alerts", [])
                            if r["name"] == "RotabotSlackRateLimited"], 10, "the 429 rule")
    assert limited[0]["labels"]["method"] == "chat.update"
    firing = {r["name"] for r in rules_now(prometheus) if r.get("alerts")}
    assert "RotabotTimersNotRunning" not in firing
    assert "RotabotRotationStuck" not in firing

    text = httpx.get(bot.url + "/metrics", timeout=10).text
    assert CANARY_OLD not in text and CANARY_NEW not in text


def rules_now(prometheus: PrometheusServer) -> list[dict[str, Any]]:
    return [r for g in prometheus.api("/api/v1/rules")["groups"] for r in g["rules"]]
