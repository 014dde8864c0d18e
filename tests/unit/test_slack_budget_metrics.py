"""/metrics shows the Slack call budget: calls waiting for their turn, merged and delayed."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from adapters.slack_budget import METHOD_RATES, MemoryTokenBuckets, SlackCallBudget
from bot.runtime.metrics import SlackBudgetCollector


def sample(registry: CollectorRegistry, name: str) -> float:
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def test_waiting_merged_and_delayed_calls_are_exposed() -> None:
    now = [1_800_000_000.0]
    budget = SlackCallBudget(MemoryTokenBuckets(), clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(SlackBudgetCollector(budget))
    assert sample(registry, "rotabot_slack_calls_waiting") == 0
    for _ in range(int(METHOD_RATES["chat.update"].burst)):  # Slack's minute is spent
        budget.call("chat.update", {"channel": "C0OTHER", "ts": "1.0"}, lambda: None)
    sent: list[str] = []
    args = {"channel": "C0ROTATE", "ts": "2.0"}
    budget.submit("chat.update", args, lambda: sent.append("first"))
    budget.submit("chat.update", args, lambda: sent.append("second"))  # same message
    assert sample(registry, "rotabot_slack_calls_waiting") == 2
    assert sample(registry, "rotabot_slack_calls_merged_total") == 1
    now[0] += 60.0
    budget.poke()
    assert budget.flush()
    assert sent == ["second"]
    assert sample(registry, "rotabot_slack_calls_waiting") == 0
    assert sample(registry, "rotabot_slack_calls_delayed_total") == 1
