"""The audit trail as a user meets it: `rotabot audit export` run as a process against a real
SQLite file, `/rotate history` through the Bolt app, and proof that the log is append-only
(no code path updates or deletes it; the database refuses both, see also test_storage.py)."""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness.backends import LocalBackends
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.testclient import TestClient

from bot.domain.audit import AuditEvent
from bot.domain.clock import FixedClock
from bot.domain.lifecycle import StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.runtime.bootstrap import Container, build
from bot.runtime.server import bolt_app, create_web_app
from bot.runtime.settings import Settings
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.sandbox.slack_standin.slack_side import SlackSide
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.unit_of_work import SqlUnitOfWork

ROOT = Path(__file__).resolve().parents[2]
SIGNING_SECRET = "0123456789abcdef0123456789abcdef"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


# --- rotabot audit export, as a process -------------------------------------------------


@pytest.fixture
def audit_db(tmp_path: Path) -> str:
    """A migrated SQLite file holding a rotation's events and a few stand-alone events."""
    url = f"sqlite:///{tmp_path / 'rotabot.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        with SqlUnitOfWork(engine) as uow:
            r = uow.rotations.add(Rotation.begin(
                secret="model-api-key",
                lanes=["dev"],
                consumers=[ConsumerPlan(name="retriever", lane="dev", owner="U0BOB",
                                        reload="hot")],
                overlap=timedelta(hours=24),
                observe=timedelta(hours=2),
                store_path="ai/model-api-key",
                actor="U0SECOPS",
                now=T0,
            ))
            r.prepared(old_version="3", new_version="4", old_key_id=None, new_key_id=None,
                       actor="U0SECOPS", now=T0 + timedelta(minutes=1))
            uow.commit()
        with SqlUnitOfWork(engine) as uow:
            r = uow.rotations.get(1)
            r.mark_step("retriever", StepState.DISTRIBUTED, actor="U0BOB",
                        now=T0 + timedelta(days=1), note="rolled out, \"quoted\", comma")
            uow.commit()
        with SqlUnitOfWork(engine) as uow:
            uow.audit.append(AuditEvent(
                at=T0 + timedelta(days=2), actor="U0SECOPS", action="revoke.override",
                secret="cache-password", reason="vendor outage,\nbreak glass",
                detail={"ticket": "INC-7"},
            ))
            uow.commit()
    finally:
        engine.dispose()
    return url


def export(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "audit", "export", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_export_jsonl_has_every_event_oldest_first_with_every_field(audit_db: str) -> None:
    done = export(audit_db)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(e["action"], e["actor"], e["after"]) for e in events] == [
        ("rotation.started", "U0SECOPS", "ready-check"),
        ("phase", "U0SECOPS", "prepared"),
        ("credential.prepared", "U0SECOPS", "4"),
        ("phase", "U0SECOPS", "distributing"),
        ("step", "U0BOB", "distributed"),
        ("phase", "U0BOB", "validating"),
        ("revoke.override", "U0SECOPS", None),
    ]
    assert set(events[0]) == {"at", "actor", "action", "secret", "rotation_id", "consumer",
                              "before", "after", "reason", "detail"}
    prepared, step, override = events[3], events[4], events[6]
    assert (prepared["rotation_id"], prepared["before"], prepared["after"]) == (
        1, "prepared", "distributing"
    )
    assert (step["consumer"], step["before"], step["after"], step["reason"]) == (
        "retriever", "waiting", "distributed", 'rolled out, "quoted", comma'
    )
    assert step["at"] == "2026-03-02T09:00:00+00:00"
    assert (override["rotation_id"], override["reason"], override["detail"]) == (
        None, "vendor outage,\nbreak glass", {"ticket": "INC-7"}
    )


def test_export_csv_round_trips_commas_quotes_and_newlines(audit_db: str) -> None:
    done = export(audit_db, "--format", "csv")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert list(rows[0]) == ["at", "actor", "action", "secret", "rotation_id", "consumer",
                             "before", "after", "reason", "detail"]
    assert [r["action"] for r in rows] == [
        "rotation.started", "phase", "credential.prepared", "phase", "step", "phase",
        "revoke.override",
    ]
    assert rows[4]["reason"] == 'rolled out, "quoted", comma'
    assert rows[6]["reason"] == "vendor outage,\nbreak glass"
    assert json.loads(rows[6]["detail"]) == {"ticket": "INC-7"}
    assert json.loads(rows[2]["detail"]) == {"new_version": "4", "old_version": "3"}
    assert rows[6]["rotation_id"] == "" and rows[1]["rotation_id"] == "1"
    # Same events as the JSON lines, field for field.
    jsonl = [json.loads(line) for line in export(audit_db).stdout.splitlines()]
    assert [(r["at"], r["actor"], r["secret"]) for r in rows] == [
        (e["at"], e["actor"], e["secret"]) for e in jsonl
    ]


def test_export_since_keeps_events_at_or_after_it_in_both_formats(audit_db: str) -> None:
    def actions(fmt: str, since: str) -> list[str]:
        done = export(audit_db, "--format", fmt, "--since", since)
        assert done.returncode == 0, done.stderr
        if fmt == "csv":
            return [r["action"] for r in csv.DictReader(io.StringIO(done.stdout))]
        return [json.loads(line)["action"] for line in done.stdout.splitlines()]

    # A date is midnight UTC; the step happened on 2026-03-02 at 09:00 UTC.
    assert actions("jsonl", "2026-03-02") == ["step", "phase", "revoke.override"]
    # A time with a zone is honoured: 10:00+01:00 is the step's 09:00 UTC, so it is kept...
    assert actions("csv", "2026-03-02T10:00+01:00") == ["step", "phase", "revoke.override"]
    # ...and a second later it is not.
    assert actions("jsonl", "2026-03-02T09:00:01Z") == ["revoke.override"]


def test_export_refuses_a_since_that_is_not_a_date(audit_db: str) -> None:
    done = export(audit_db, "--since", "last tuesday")
    assert done.returncode == 2
    assert "--since 'last tuesday' is not a date: use YYYY-MM-DD or ISO 8601" in (
        done.stdout + done.stderr
    )


# --- /rotate history --------------------------------------------------------------------

CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  admins: [U0SECOPS]
  lanes: [dev]
stores:
  files: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: hot}
"""




@pytest.fixture
def slack(
    database_url: str, tmp_path: Path
) -> Iterator[tuple[SlackSide, StandinState, Container]]:
    state = StandinState()
    for user in ("U0SECOPS", "U0BOB"):
        state.add_user(user, user.lower())
    state.add_channel("C0ROTATE", "rotations", members=["U0SECOPS"])
    path = tmp_path / "catalog.yml"
    path.write_text(CATALOG)
    with StandinServer(state) as server:
        settings = Settings(catalog_path=str(path), database_url=database_url,
                            slack_api_url=server.base_url, slack_bot_token="xoxb-test",
                            slack_signing_secret=SIGNING_SECRET)
        c = build(settings, clock=FixedClock(T0), migrate=True,
                  backends=LocalBackends(tmp_path / "secrets"))
        http = TestClient(create_web_app(c, bolt_app(c, process_before_response=True)))
        try:
            yield SlackSide(state, "http://testserver/slack/events", SIGNING_SECRET,
                            http=http), state, c
        finally:
            c.notifier.flush()
            http.close()
            c.engine.dispose()
        assert state.violations == []


def test_history_shows_every_rotation_of_the_secret_newest_first(
    slack: tuple[SlackSide, StandinState, Container],
) -> None:
    side, state, c = slack
    service = c.service
    first = service.start("model-api-key", actor="U0SECOPS")
    assert first.id is not None
    service.cancel(first.id, actor="U0SECOPS", reason="wrong window")
    second = service.start("model-api-key", actor="U0SECOPS")

    reply = side.command("U0BOB", "C0ROTATE", "history model-api-key")
    assert reply.status == 200
    (answer,) = state.ephemerals_for("U0BOB")
    body = json.dumps(answer.blocks)
    assert "History of `model-api-key`" in body
    assert body.index(f"*{second.ref}* distributing") < body.index(f"*{first.ref}* cancelled")
    assert body.count("started <!date^") == 2 and "by <@U0SECOPS>" in body

    side.command("U0BOB", "C0ROTATE", "history model-api-kee")
    unknown = state.ephemerals_for("U0BOB")[-1]
    assert "model-api-key" in unknown.text  # a close name is suggested


# --- append-only ------------------------------------------------------------------------

AUDIT_NAMES = {"AUDIT", "AuditEventRow", "audit_events"}
_RAW_SQL = re.compile(
    r"\b(UPDATE\s+audit_events|DELETE\s+FROM\s+audit_events|TRUNCATE\s+(TABLE\s+)?audit_events)",
    re.IGNORECASE,
)


def _names(node: ast.AST) -> set[str]:
    """Every name, attribute and string constant inside an expression."""
    found: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            found.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            found.add(sub.attr)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            found.add(sub.value)
    return found


def audit_write_paths(source: str, filename: str = "<source>") -> list[str]:
    """Places in ``source`` that could change or remove audit rows."""
    problems: list[str] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else ""
        )
        target = _names(ast.Module(body=[ast.Expr(a) for a in node.args], type_ignores=[]))
        if isinstance(func, ast.Attribute):
            target |= _names(func.value)  # AUDIT.update(), AUDIT.delete()
        where = f"{filename}:{node.lineno}"
        if name in ("update", "delete") and target & AUDIT_NAMES:
            problems.append(f"{where}: {name}() on the audit table")
        if name == "delete" and isinstance(func, ast.Attribute) and _names(func.value) & {
            "session", "Session"
        }:
            problems.append(f"{where}: session.delete()")
    for lineno, line in enumerate(source.splitlines(), 1):
        if _RAW_SQL.search(line):
            problems.append(f"{filename}:{lineno}: raw SQL changing audit_events")
    return problems


def test_the_scanner_finds_every_kind_of_audit_write_path() -> None:
    planted = '''
from sqlalchemy import delete, update
conn.execute(update(AUDIT).values(actor="x"))
conn.execute(delete(AUDIT).where(AUDIT.c.id == 1))
conn.execute(AUDIT.update().values(actor="x"))
session.delete(AuditEventRow(id=1))
conn.execute(text("DELETE FROM audit_events WHERE id = 1"))
conn.exec_driver_sql("update audit_events set actor = 'x'")
conn.execute(update(metadata.tables["audit_events"]).values(actor="x"))
conn.execute(update(ALERTS).values(status="resolved"))  # another table: fine
'''
    found = audit_write_paths(planted)
    flagged = {int(f.split(":")[1]) for f in found}
    assert flagged == {3, 4, 5, 6, 7, 8, 9}, found  # line 10 changes another table


def test_no_code_path_updates_or_deletes_audit_events() -> None:
    problems: list[str] = []
    scanned = 0
    for package in ("bot", "handlers", "adapters", "storage"):
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.parts[:3] == ("storage", "migrations", "versions"):
                # Migrations create the triggers that refuse UPDATE/DELETE (and drop them on
                # downgrade); they are schema, not a code path the bot runs.
                continue
            problems += audit_write_paths(path.read_text(), str(relative))
            scanned += 1
    assert scanned > 40  # the scan really looked at the code
    assert problems == []


def test_single_audit_rows_are_refused_by_id_too(database_url: str) -> None:
    """test_storage.py refuses table-wide UPDATE/DELETE/TRUNCATE; a targeted change of one
    row (what tampering with one event would be) is refused just the same."""
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        with SqlUnitOfWork(engine) as uow:
            uow.audit.append(AuditEvent(at=T0, actor="U0SECOPS", action="phase",
                                        secret="model-api-key", after="revoked"))
            uow.commit()
        for statement in ("UPDATE audit_events SET after = 'rolled-back' WHERE id = 1",
                          "UPDATE audit_events SET detail = '{}', reason = NULL WHERE id = 1",
                          "DELETE FROM audit_events WHERE id = 1"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        with engine.connect() as conn:
            row = conn.execute(text("SELECT actor, after FROM audit_events")).one()
        assert tuple(row) == ("U0SECOPS", "revoked")
    finally:
        engine.dispose()
