"""`rotabot audit export`: every audit event, oldest first, as JSON lines or CSV."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TextIO

from bot.runtime.settings import Settings

FIELDS = ("at", "actor", "action", "secret", "rotation_id", "consumer", "before", "after",
          "reason", "detail")


def parse_since(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def export_audit(*, since: str | None, fmt: str, out: TextIO, err: TextIO | None = None,
                 settings: Settings | None = None) -> int:
    """Write the trail to ``out``; 2, with the reason on ``err`` (default ``out``), for a
    bad --since or a database without rotabot's tables (StoreUnavailable propagates: the
    command line shows its text)."""
    from storage.engine import make_engine
    from storage.migrate import schema_problem
    from storage.unit_of_work import sql_unit_of_work_factory

    err = err or out
    settings = settings or Settings.from_env()
    try:
        start = parse_since(since)
    except ValueError:
        print(f"rotabot: --since {since!r} is not a date: use YYYY-MM-DD or ISO 8601", file=err)
        return 2
    # An empty or older database would fail on the first query with a driver error; say
    # what to run instead.
    problem = schema_problem(settings.database_url)
    if problem is not None:
        print(f"rotabot: DATABASE_URL: {problem}", file=err)
        return 2
    uow_factory = sql_unit_of_work_factory(make_engine(settings.database_url))
    writer = csv.DictWriter(out, fieldnames=FIELDS) if fmt == "csv" else None
    if writer:
        writer.writeheader()
    with uow_factory() as uow:
        for event in uow.audit.export(start):
            row = asdict(event)
            row["at"] = event.at.isoformat()
            if writer:
                row["detail"] = json.dumps(event.detail, sort_keys=True)
                writer.writerow(row)
            else:
                out.write(json.dumps(row, sort_keys=True) + "\n")
    return 0
