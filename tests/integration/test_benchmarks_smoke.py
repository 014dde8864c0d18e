"""Each benchmark scenario at a tiny size: the machinery works and the behaviour it checks
holds. No timing is asserted; `make bench` measures."""

from __future__ import annotations

import json
import statistics
from typing import Any

import pytest

from benchmarks import __main__ as bench
from benchmarks import ack_latency, alert_burst, click_storm, report, scale
from benchmarks.harness import SecretSpec, slack_floor_s
from bot.sandbox.slack_standin.model import Call


def test_ack_latency_reaches_bot_and_bare_app_with_signed_requests() -> None:
    r = ack_latency.run("SQLite", None, consumers=6, requests=8, concurrencies=(1, 2),
                        issue3_commands=3, first_lane=2, rounds=3, warmup=2)
    assert [(x.payload, x.concurrency) for x in r.runs] == [
        ("status", 1), ("status", 2), ("click", 1), ("click", 2)]
    for x in r.runs:
        # Every request, each round's warmup too, was verified and acked by both apps (a bad
        # signature would be 401); only the measured ones are timed.
        assert x.bot_statuses == {"200": 8 + 3 * 2}
        assert x.bare_statuses == {"200": 8 + 3 * 2}
        assert x.bot["n"] == x.bare["n"] == 8
    assert r.issue3 is not None and r.issue3["n"] == 3
    assert r.violations == 0


@pytest.mark.postgres
def test_click_storm_applies_every_step_once(postgres_url: str) -> None:
    r = click_storm.run("PostgreSQL", postgres_url, consumers=5, clients=4, duplicates=0.4)
    assert r.duplicates_sent == 3 * 2
    assert (r.lost, r.doubled, r.switch_refused) == (0, 0, False)
    assert r.parent_updates >= 1
    assert (r.violations, r.slack_429, r.stale_prompts) == (0, 0, 0)
    assert r.accept_s > 0 and r.wall_s >= r.floor_s > 0


def test_alert_burst_stores_every_accepted_report() -> None:
    r = alert_burst.run("SQLite", None, alerts=40, consumers=4, clients=4)
    assert r.pending is None
    assert r.accepted == 40 and r.rejected == {}
    assert (r.stored_alert_rows, r.stored_count_sum) == (4, 40)
    assert r.posted_per_consumer_max <= 2
    assert r.violations == 0 and r.slack_429 == 0
    # Drained: both messages of every consumer (incident channel, rotation thread) were
    # posted and show the count stored for it.
    assert (r.messages, r.stale_messages) == (8, 0)
    assert r.drain_s is not None and r.floor_s is not None and r.drain_s >= r.floor_s


def test_slack_floor_spends_each_bucket_at_the_budgets_rate() -> None:
    def call(seq: int, method: str, at: float, **args: str) -> Call:
        return Call(seq, method, dict(args), at, "POST")

    # 60 chat.update calls ready at once: a burst of 50, then Tier 3 at 45 a minute.
    updates = [call(i, "chat.update", 100.0, channel="C1", ts=str(i)) for i in range(60)]
    assert slack_floor_s(updates, since=100.0) == pytest.approx(10 / 0.75)
    # Ten spent 10 s earlier left 40 + 7.5 tokens: the same 60 take longer.
    earlier = [call(100 + i, "chat.update", 90.0, channel="C1", ts="x") for i in range(10)]
    assert slack_floor_s(earlier + updates, since=100.0) == pytest.approx(12.5 / 0.75)
    # chat.postMessage counts per channel (burst 10, then 54 a minute): two channels drain
    # side by side; response_url posts and 429s spend nothing.
    posts = [call(i, "chat.postMessage", 5.0, channel=f"C{i % 2}") for i in range(24)]
    other = [call(50, "response_url", 5.0), Call(51, "chat.update", {}, 5.0, "POST", status=429)]
    assert slack_floor_s(posts + other, since=5.0) == pytest.approx(2 / 0.9)


def test_first_lane_holds_only_the_first_consumers() -> None:
    spec = SecretSpec("s", 10, first_lane=2)
    assert [spec.lane(i) for i in range(5)] == ["dev", "dev", "staging", "prod", "staging"]
    assert spec.in_first_lane() == 2
    assert SecretSpec("s", 10).in_first_lane() == 4  # round-robin over three lanes


def test_scale_posts_within_limits_and_counts_queries_per_click() -> None:
    p = scale.run_process("SQLite", None, consumers=9)
    assert p.first_lane_prompts == 3 and p.violations == 0
    assert p.peak_rss_mib is not None and p.peak_rss_mib > 0
    small = scale.run_clicks("SQLite", None, 9, clicks=2)
    large = scale.run_clicks("SQLite", None, 12, clicks=2)
    assert small.queries_per_click and large.queries_per_click
    assert statistics.median(small.queries_per_click) == statistics.median(
        large.queries_per_click)


def test_report_renders_every_scenario() -> None:
    # Figures shaped as the scenarios return them (no servers: the scenarios run above).
    figures = ack_latency.summary([1.0, 2.0, 3.0])
    ack = ack_latency.AckResult("SQLite", 3, 4, rounds=2, warmup=5, runs=[ack_latency.AckRun(
        "status", 1, figures, ack_latency.summary([2.0, 4.0, 9.0]), {"200": 3}, {"200": 3},
        0.1, 0.2)])
    storm = click_storm.StormResult("SQLite", 3, 2, clicks_sent=9)
    results = {
        "started": 0.0, "finished": 1.0,
        "ack": [ack_latency.as_dict(ack)],
        "storm": [click_storm.as_dict(storm)],
        "burst": [alert_burst.as_dict(alert_burst.BurstResult("SQLite", 1, 1, 1,
                                                              pending="not wired"))],
        "scale_process": [], "scale_clicks": [],
    }
    text = report.render(json.loads(json.dumps(results)), smoke=True)
    for heading in ("## 1. Ack latency", "## 2. Click storm", "## 3. Alert burst", "## 4. Scale"):
        assert heading in text
    assert "**Pending on SQLite**: not wired" in text
    assert "| Ack p99 <= 1.5 x bare, status at 1 client(s) | **missed** |" in text
    assert "4 measured requests per row in 2 rounds of 2, each after 5 unmeasured" in text
    assert "Commit:" in text and "CPUs" in text


def test_repeated_runs_are_reported_as_median_with_spread_and_judged_on_every_run() -> None:
    def burst(rate: float, stored: int) -> dict[str, Any]:
        r = alert_burst.BurstResult("SQLite", 100, 2, 4, accepted=100, rate_per_s=rate,
                                    wall_s=100 / rate, stored_count_sum=stored,
                                    latency={"p50": 1.0, "p99": 2.0})
        return alert_burst.as_dict(r)

    # The middle run is slowest and lost one report: the median hides neither.
    runs = [burst(1200.0, 100), burst(900.0, 99), burst(1500.0, 100)]
    agg = bench.aggregate(json.loads(json.dumps(runs)))
    assert agg["rate_per_s"] == 1200.0 and agg["spread"]["rate_per_s"] == (900.0, 1500.0)
    assert agg["latency"]["p99"] == 2.0 and len(agg["each"]) == 3
    results = {"started": 0.0, "finished": 1.0, "repeats": 3, "cpus": 2, "burst": [agg],
               "load": {"3. alert burst": {"SQLite": {"before": [0.5, 0.4, 0.3],
                                                       "after": [3.0, 1.0, 0.5],
                                                       "started": 0.0, "finished": 1.0}}}}
    text = report.render(json.loads(json.dumps(results)))
    assert "| 1200 (900-1500) |" in text
    judged = {name: met for name, met, _ in report.targets(results)}
    assert judged["Alert burst >= 1,000 accepted/s, SQLite"] is False  # one run was under
    assert judged["Alert burst: 0 lost, SQLite"] is False
    assert judged["Alert burst: <= 2 posts per consumer, SQLite"] is True
    assert "| 3. alert burst | SQLite | 0.50 / 0.40 / 0.30 | 3.00 / 1.00 / 0.50 |" in text
    assert "load average reached 3.0 on 2 CPUs" in text
