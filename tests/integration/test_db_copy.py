"""`rotabot db copy` between SQLite and a real PostgreSQL: ids, revisions and the audit log
arrive as they were, sequences continue past them, the audit log stays append-only, and a
non-empty target is refused with nothing written."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from bot.cli.main import main
from storage.copy import CopyRefused, audit_checksum, copy_database
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.sql_common import AUDIT, ROTATIONS, STEPS

pytestmark = [pytest.mark.postgres]

T0 = datetime(2026, 11, 30, 9, 0, 0, 123456, tzinfo=UTC)


def seed(engine: Engine) -> None:
    """Two rotations with ids that have gaps (7 finished, 9 in flight) and their audit log."""
    rotation = dict(secret="", phase="", lanes='["dev"]', overlap_seconds=60.0,
                    observe_seconds=5.0, created_at=T0, started_by="U0ADMIN",
                    store_path="ai/key", urgent=False, auto_revoke=False, finished_at=None,
                    new_version=None, old_version=None)
    with engine.begin() as conn:
        conn.execute(insert(ROTATIONS), [
            {**rotation, "id": 7, "secret": "old-key", "phase": "revoked", "revision": 12,
             "finished_at": T0 + timedelta(hours=1)},
            {**rotation, "id": 9, "secret": "model-api-key", "phase": "validating",
             "revision": 4, "new_version": "2", "old_version": "1"},
        ])
        conn.execute(insert(STEPS), [
            dict(id=3, rotation_id=7, name="retriever", lane="dev", owner="U0BOB",
                 reload="hot", state="signed-off"),
            dict(id=5, rotation_id=9, name="retriever", lane="dev", owner="U0BOB",
                 reload="hot", state="distributed"),
        ])
        conn.execute(insert(AUDIT), [
            dict(id=i * 2, at=T0 + timedelta(seconds=i), actor="U0ADMIN", action="phase",
                 secret="model-api-key", rotation_id=9, before=None, after=f"p{i}",
                 reason=None, detail=json.dumps({"n": str(i), "é": "ü"}))
            for i in range(1, 6)
        ])


@pytest.fixture
def sqlite_source(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    upgrade(url)
    engine = make_engine(url)
    seed(engine)
    engine.dispose()
    return url


def test_sqlite_to_postgres_keeps_ids_revisions_and_the_audit_log(
    sqlite_source: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["db", "copy", "--from", sqlite_source, "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    source, target = make_engine(sqlite_source), make_engine(postgres_url)
    with source.connect() as src, target.connect() as dst:
        checksum = audit_checksum(src)
        assert audit_checksum(dst) == checksum
        assert f"audit log sha256: {checksum}" in out
        assert re.search(r"^audit_events +5 rows copied, +5 in the target$", out, re.M)
        rows = dst.execute(select(ROTATIONS.c.id, ROTATIONS.c.phase, ROTATIONS.c.revision)
                           .order_by(ROTATIONS.c.id)).all()
        assert [tuple(r) for r in rows] == [(7, "revoked", 12), (9, "validating", 4)]
        assert dst.execute(select(AUDIT.c.at).where(AUDIT.c.id == 2)).scalar_one() == (
            T0 + timedelta(seconds=1))
    # New rows continue after the copied ids: the sequences were moved past them.
    with target.begin() as conn:
        new_rotation = conn.execute(insert(ROTATIONS).values(
            secret="other", phase="prepared", lanes="[]", overlap_seconds=1.0,
            observe_seconds=1.0, created_at=T0, started_by="U0ADMIN", store_path="x",
            urgent=False, auto_revoke=False, revision=0)).inserted_primary_key
        new_event = conn.execute(insert(AUDIT).values(
            at=T0, actor="rotabot", action="phase", secret="other",
            detail="{}")).inserted_primary_key
    assert new_rotation is not None and new_rotation[0] == 10
    assert new_event is not None and new_event[0] == 11
    # The append-only trigger still refuses a change on the copy.
    with pytest.raises(DBAPIError, match="append-only"), target.begin() as conn:
        conn.execute(update(AUDIT).where(AUDIT.c.id == 2).values(actor="mallory"))
    source.dispose()
    target.dispose()


def test_a_non_empty_target_is_refused_and_left_as_it_was(
    sqlite_source: str, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade(postgres_url)
    target = make_engine(postgres_url)
    with target.begin() as conn:
        conn.execute(insert(AUDIT).values(at=T0, actor="U0X", action="note", secret="s",
                                          detail="{}"))
    code = main(["db", "copy", "--from", sqlite_source, "--to", postgres_url])
    err = capsys.readouterr().err
    assert code == 2
    assert "is not empty: audit_events (1 rows)" in err
    assert "Traceback" not in err and "password" not in err  # the URL is shown masked
    with target.connect() as conn:
        assert conn.execute(select(func.count()).select_from(ROTATIONS)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(AUDIT)).scalar_one() == 1
    target.dispose()


def test_a_missing_source_file_is_refused_without_creating_it(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo.db"
    assert main(["db", "copy", "--from", f"sqlite:///{missing}", "--to", postgres_url]) == 2
    assert f"--from: there is no SQLite file at {missing}" in capsys.readouterr().err
    assert not missing.exists()


def test_an_unreachable_target_is_named_without_its_password(
    sqlite_source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    to = "postgresql+psycopg://rotabot:hunter2-pw@127.0.0.1:1/rotabot"
    assert main(["db", "copy", "--from", sqlite_source, "--to", to]) == 2
    err = capsys.readouterr().err
    assert "--to: the rotabot database at 127.0.0.1:1 cannot be reached" in err
    assert "hunter2-pw" not in err and "DATABASE_URL" not in err


def test_postgres_back_to_sqlite(sqlite_source: str, postgres_url: str, tmp_path: Path) -> None:
    copy_database(sqlite_source, postgres_url)
    back = f"sqlite:///{tmp_path / 'back.db'}"
    report = copy_database(postgres_url, back)
    source = make_engine(sqlite_source)
    with source.connect() as src:
        assert report.audit_sha256_target == audit_checksum(src)
    assert {c.table: c.target for c in report.tables}["consumer_steps"] == 2
    assert report.audit_triggers == ("audit_events_no_delete", "audit_events_no_update")
    source.dispose()


def test_a_target_whose_audit_log_accepts_changes_gets_nothing(
    sqlite_source: str, tmp_path: Path
) -> None:
    """The check before commit: a target whose append-only triggers were dropped is refused,
    and the copy is rolled back (the same command runs again once the schema is repaired)."""
    tampered = f"sqlite:///{tmp_path / 'tampered.db'}"
    upgrade(tampered)
    engine = make_engine(tampered)
    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_events_no_update"))
    with pytest.raises(CopyRefused, match=r"does not refuse changes.*audit_events_no_update"):
        copy_database(sqlite_source, tampered)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(AUDIT)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(ROTATIONS)).scalar_one() == 0
    engine.dispose()
