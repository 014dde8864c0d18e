"""`python -m benchmarks`: run every scenario on SQLite and PostgreSQL, write RESULTS.md.

Every scenario it reports is run afresh (nothing is carried over from an earlier run), each
``--repeats`` times (default 3): RESULTS.md shows the median of each figure with its spread
(min-max over the runs), judges every target on every run, and records the machine's load
(os.getloadavg before and after each scenario, and the CPU count).

Slack's tiers bound part of every scenario, and the stand-in enforces them: chat.update is
Tier 3 (about 50 a minute per workspace; the bot's budget keeps 45), chat.postMessage about
one a second per channel. Waiting such traffic out three times per database made a run take
well over an hour, and those minutes measure Slack, not rotabot. So each scenario separates
what is ours from what is Slack's:

- what the bot does (acks, accepted reports, steps applied, queries, memory) is measured on
  every run, as before;
- the time until the bot's last Slack call (a "drain") is reported beside its floor, the least
  time Slack's tiers allow for the calls made (harness.slack_floor_s): a drain near its floor
  is Slack's limit, not the bot's;
- the scenarios are sized so that their Slack traffic is short: few prompts in the first lane
  (scenarios 1 and 4), few consumers in the click storm and the alert burst (each reduced size
  is named in RESULTS.md, report.REDUCED);
- the alert burst waits for its drain, and checks every message's final count, on the first
  run per database only; the other runs end after the intake. Every run still counts 429s.

Options: --smoke (tiny sizes, to prove the machinery works), --only 1,3 (scenario numbers),
--sqlite-only, --repeats N, --out FILE, --json FILE (raw figures too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import ack_latency, alert_burst, click_storm, scale
from benchmarks.harness import postgres

HERE = Path(__file__).resolve().parent

# Sized so that three runs of everything, with the stand-in enforcing Slack's tiers, stay
# near 20 minutes on a 2-core machine; each size below the single-run size it replaced is
# named in RESULTS.md (report.REDUCED). "first_lane": consumers whose prompts are posted at
# the start (one chat.postMessage each, about one a second).
FULL: dict[str, Any] = {
    "ack": {"consumers": 200, "first_lane": 12, "requests": 1000, "concurrencies": (1, 16),
            "issue3": 100, "rounds": 4, "warmup": 100},
    "storm": {"consumers": 10, "clients": 32},
    "burst": {"alerts": 10_000, "consumers": 10, "clients": 32},
    "scale": {"consumers": 300, "first_lane": 9, "click_sizes": (10, 100, 300), "clicks": 3},
}
REPEATS = 3
SMOKE: dict[str, Any] = {
    "ack": {"consumers": 6, "first_lane": 2, "requests": 10, "concurrencies": (1, 2),
            "issue3": 5, "rounds": 2, "warmup": 2},
    "storm": {"consumers": 4, "clients": 4},
    "burst": {"alerts": 60, "consumers": 3, "clients": 4},
    "scale": {"consumers": 12, "first_lane": 3, "click_sizes": (9, 12), "clicks": 2},
}


Database = tuple[str, Callable[[], str | None]]


@contextmanager
def databases(sqlite_only: bool) -> Iterator[list[Database]]:
    """(label, DATABASE_URL factory): SQLite (a file per run, None) and, on a throwaway
    PostgreSQL server, a fresh database per run."""
    if sqlite_only:
        yield [("SQLite", lambda: None)]
        return
    with postgres() as pg:
        yield [("SQLite", lambda: None), ("PostgreSQL", lambda: str(pg.new_database("bench")))]


def run_all(
    sizes: dict[str, Any],
    only: set[int],
    sqlite_only: bool,
    checkpoint: Path | None = None,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    out: dict[str, Any] = {"started": time.time(), "sizes": sizes, "repeats": repeats,
                           "load": {}, "cpus": os.cpu_count()}

    def save() -> None:
        # Figures so far survive a later scenario's failure.
        if checkpoint is not None:
            checkpoint.write_text(json.dumps(out, indent=1, default=str))

    def measured(section: str, label: str, one: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """``one`` run ``repeats`` times (given the run's index), with the load average
        before and after."""
        load = {"before": os.getloadavg(), "started": time.time()}
        runs = []
        for i in range(repeats):
            _log(f"{section} on {label}, run {i + 1} of {repeats}")
            started = time.monotonic()
            runs.append(one(i))
            _log(f"{section} on {label}, run {i + 1} took {time.monotonic() - started:.0f}s")
        load.update(after=os.getloadavg(), finished=time.time())
        out["load"].setdefault(section, {})[label] = load
        return aggregate(runs)

    with databases(sqlite_only) as dbs:
        for label, url in dbs:
            # Bound now: each lambda below runs within this iteration (measured calls it).
            def ack(i: int, label: str = label, url: Callable[[], str | None] = url,
                    front: bool = False) -> dict[str, Any]:
                a = sizes["ack"]
                return ack_latency.as_dict(ack_latency.run(
                    label, url(), consumers=a["consumers"], requests=a["requests"],
                    concurrencies=tuple(a["concurrencies"]),
                    issue3_commands=0 if front else a["issue3"],
                    first_lane=a["first_lane"], front=front, rounds=a["rounds"],
                    warmup=a["warmup"]))

            def ack_front(i: int) -> dict[str, Any]:
                return ack(i, front=True)

            def storm(i: int, label: str = label,
                      url: Callable[[], str | None] = url) -> dict[str, Any]:
                s = sizes["storm"]
                return click_storm.as_dict(click_storm.run(
                    label, url(), consumers=s["consumers"], clients=s["clients"]))

            def burst(i: int, label: str = label,
                      url: Callable[[], str | None] = url) -> dict[str, Any]:
                b = sizes["burst"]
                # The drain and the messages' final state: once per database (module doc).
                return alert_burst.as_dict(alert_burst.run(
                    label, url(), alerts=b["alerts"], consumers=b["consumers"],
                    clients=b["clients"], drain=i == 0))

            def start(i: int, label: str = label,
                      url: Callable[[], str | None] = url) -> dict[str, Any]:
                sc = sizes["scale"]
                return dict(scale.run_process(
                    label, url(), sc["consumers"], first_lane=sc["first_lane"]).__dict__)

            # The ack never touches the database (Bolt answers before the listener's work),
            # so scenario 1 runs on SQLite only; that keeps `make bench` near 20 minutes.
            # Each deployment: `serve` alone, and behind `rotabot front` (the bare app too).
            if 1 in only and label == dbs[0][0]:
                out.setdefault("ack", []).append(measured("1. ack latency", label, ack))
                out["ack"].append(measured("1. ack latency, front", label, ack_front))
                save()
            if 2 in only:
                out.setdefault("storm", []).append(measured("2. click storm", label, storm))
                save()
            if 3 in only:
                out.setdefault("burst", []).append(measured("3. alert burst", label, burst))
                save()
            if 4 in only:
                out.setdefault("scale_process", []).append(
                    measured("4. scale (start)", label, start))
                for n in sizes["scale"]["click_sizes"]:
                    def clicks(i: int, label: str = label,
                               url: Callable[[], str | None] = url,
                               n: int = n) -> dict[str, Any]:
                        return scale.click_summary(scale.run_clicks(
                            label, url(), n, clicks=sizes["scale"]["clicks"]))

                    out.setdefault("scale_clicks", []).append(
                        measured(f"4. scale (clicks, {n} consumers)", label, clicks))
                    save()
    out["finished"] = time.time()
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One figure set from several runs of a scenario: every number is the median of the
    runs, with ``spread`` holding its (min, max) under the same path, and ``each`` the raw
    figures (targets are judged on each). Lists of figure sets (an ack table's rows) are
    aggregated row by row; everything else is the first run's."""
    first = runs[0]
    out: dict[str, Any] = {}
    spread: dict[str, Any] = {}
    for key, value in first.items():
        values = [r.get(key) for r in runs]
        if isinstance(value, bool) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            if isinstance(value, dict) and all(isinstance(v, dict) for v in values):
                inner = aggregate(values)  # type: ignore[arg-type]
                spread[key] = inner.pop("spread")
                inner.pop("each")
                out[key] = inner
            elif isinstance(value, list) and value and all(
                    isinstance(v, list) and len(v) == len(value)
                    and all(isinstance(x, dict) for x in v) for v in values):
                rows = [aggregate([v[i] for v in values]) for i in range(len(value))]  # type: ignore[index]
                for row in rows:
                    row.pop("each")
                out[key] = rows
            else:
                out[key] = value
            continue
        numbers = [float(v) for v in values]  # type: ignore[arg-type]
        out[key] = statistics.median(numbers)
        spread[key] = (min(numbers), max(numbers))
    out["spread"] = spread
    out["each"] = runs
    return out


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; no timing meaning")
    parser.add_argument("--only", default="1,2,3,4", help="scenario numbers, e.g. 1,3")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"runs of each scenario (default {REPEATS}; 1 with --smoke)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures")
    parser.add_argument("--before", type=Path, default=None,
                        help="raw figures (--json) of an earlier run, shown as 'before'")
    args = parser.parse_args(argv)
    only = {int(x) for x in args.only.split(",") if x.strip()}
    sizes = SMOKE if args.smoke else FULL
    repeats = args.repeats or (1 if args.smoke else REPEATS)
    results = run_all(sizes, only, args.sqlite_only, args.json, repeats=repeats)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    before = json.loads(args.before.read_text()) if args.before else None
    from benchmarks import report

    args.out.write_text(report.render(results, smoke=args.smoke, before=before))
    _log(f"wrote {args.out} in {results['finished'] - results['started']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
