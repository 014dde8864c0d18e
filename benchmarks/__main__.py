"""`python -m benchmarks`: run every scenario on SQLite and PostgreSQL, write RESULTS.md.

Options: --smoke (tiny sizes, to prove the machinery works), --only 1,3 (scenario numbers),
--sqlite-only, --out FILE, --json FILE (raw figures too).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks import ack_latency, alert_burst, click_storm, scale
from benchmarks.harness import postgres

HERE = Path(__file__).resolve().parent

FULL: dict[str, Any] = {
    "ack": {"consumers": 200, "requests": 1000, "concurrencies": (1, 16), "issue3": 200},
    "storm": {"consumers": 200, "clients": 32},
    "burst": {"alerts": 10_000, "consumers": 50, "clients": 32},
    "scale": {"consumers": 1000, "click_sizes": (10, 100, 1000), "clicks": 3},
}
SMOKE: dict[str, Any] = {
    "ack": {"consumers": 6, "requests": 10, "concurrencies": (1, 2), "issue3": 5},
    "storm": {"consumers": 6, "clients": 4},
    "burst": {"alerts": 60, "consumers": 3, "clients": 4},
    "scale": {"consumers": 12, "click_sizes": (9, 12), "clicks": 2},
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
    sizes: dict[str, Any], only: set[int], sqlite_only: bool, checkpoint: Path | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"started": time.time(), "sizes": sizes}

    def save() -> None:
        # Figures so far survive a later scenario's failure.
        if checkpoint is not None:
            checkpoint.write_text(json.dumps(out, indent=1, default=str))

    with databases(sqlite_only) as dbs:
        if 1 in only:
            a = sizes["ack"]
            out["ack"] = []
            # The ack never touches the database (Bolt answers before the listener's work),
            # so scenario 1 runs on SQLite only; that keeps `make bench` near 10 minutes.
            for i, (label, url) in enumerate(dbs[:1]):
                _log(f"scenario 1 (ack latency) on {label}")
                r = ack_latency.run(
                    label, url(), consumers=a["consumers"], requests=a["requests"],
                    concurrencies=tuple(a["concurrencies"]),
                    issue3_commands=a["issue3"] if i == 0 else 0,
                )
                out["ack"].append(ack_latency.as_dict(r))
                save()
        if 2 in only:
            s = sizes["storm"]
            out["storm"] = []
            for label, url in dbs:
                _log(f"scenario 2 (click storm) on {label}")
                out["storm"].append(click_storm.as_dict(click_storm.run(
                    label, url(), consumers=s["consumers"], clients=s["clients"])))
                save()
        if 3 in only:
            b = sizes["burst"]
            out["burst"] = []
            for label, url in dbs:
                _log(f"scenario 3 (alert burst) on {label}")
                out["burst"].append(alert_burst.as_dict(alert_burst.run(
                    label, url(), alerts=b["alerts"], consumers=b["consumers"],
                    clients=b["clients"])))
                save()
        if 4 in only:
            sc = sizes["scale"]
            out["scale_process"], out["scale_clicks"] = [], []
            for label, url in dbs:
                _log(f"scenario 4 (scale) on {label}")
                out["scale_process"].append(
                    scale.run_process(label, url(), sc["consumers"]).__dict__)
                for n in sc["click_sizes"]:
                    out["scale_clicks"].append(scale.click_summary(
                        scale.run_clicks(label, url(), n, clicks=sc["clicks"])))
                    save()
    out["finished"] = time.time()
    return out


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; no timing meaning")
    parser.add_argument("--only", default="1,2,3,4", help="scenario numbers, e.g. 1,3")
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures")
    parser.add_argument("--before", type=Path, default=None,
                        help="raw figures (--json) of an earlier run, shown as 'before'")
    args = parser.parse_args(argv)
    only = {int(x) for x in args.only.split(",") if x.strip()}
    sizes = SMOKE if args.smoke else FULL
    results = run_all(sizes, only, args.sqlite_only, args.json)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    before = json.loads(args.before.read_text()) if args.before else None
    from benchmarks import report

    args.out.write_text(report.render(results, smoke=args.smoke, before=before))
    _log(f"wrote {args.out} in {results['finished'] - results['started']:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
