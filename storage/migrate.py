"""Apply rotabot's Alembic migrations programmatically (`rotabot db upgrade`, start on SQLite)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import InterfaceError, OperationalError

from storage.engine import make_engine, unavailable

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Any constant will do; it only has to be the same for every rotabot process.
_UPGRADE_LOCK_KEY = 0x524F5441  # "ROTA"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config without an ini file; the URL never passes through configparser."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``; running it again changes nothing."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two replicas starting together must not both create the tables.
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK_KEY})
            command.upgrade(alembic_config(conn), revision)
    except (OperationalError, InterfaceError) as exc:
        raise unavailable(engine.url, exc) from None
    finally:
        engine.dispose()


def current_revision(url: str | URL) -> str | None:
    """The revision the database is at; None for an empty (never migrated) database."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except (OperationalError, InterfaceError) as exc:
        raise unavailable(engine.url, exc) from None
    finally:
        engine.dispose()


def schema_problem(url: str | URL) -> str | None:
    """None when the database is at this rotabot's schema; otherwise what to do, in words.
    A replica started before `rotabot db upgrade` would fail request by request instead."""
    have, want = current_revision(url), head_revision()
    if have == want:
        return None
    if have is None:
        return "the database has no rotabot tables yet: run `rotabot db upgrade` first"
    known = {r.revision for r in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if have not in known:
        return (
            f"the database schema ({have}) is newer than this rotabot ({want}): "
            "run the rotabot version that migrated it"
        )
    return (
        f"the database schema is at {have}, this rotabot needs {want}: "
        "run `rotabot db upgrade` (from this version) first"
    )
