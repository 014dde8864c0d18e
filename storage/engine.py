"""Database engines for rotabot: a SQLite file by default, PostgreSQL through DATABASE_URL."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError

from bot.domain.errors import StoreUnavailable

# How long a SQLite writer waits for another one before giving up (milliseconds).
SQLITE_BUSY_TIMEOUT_MS = 15_000
# A PostgreSQL host that does not answer should fail a request, not hang it.
POSTGRES_CONNECT_TIMEOUT_S = 10
# The database file and its -wal/-shm hold the audit trail and who-owns-what: the bot's only.
SQLITE_FILE_MODE = 0o600


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; bare ``postgres://``/``postgresql://`` use psycopg 3."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The text may contain a password: never echo it back.
        raise StoreUnavailable(
            "DATABASE_URL is not a valid database URL; expected e.g. "
            "sqlite:///./rotabot.db or postgresql+psycopg://user:password@host:5432/rotabot"
        ) from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown to people and logs: password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def is_sqlite(url: str | URL) -> bool:
    return normalize_url(url).get_backend_name() == "sqlite"


def make_engine(url: str | URL) -> Engine:
    """An engine for ``url`` (no connection is made until first use)."""
    parsed = normalize_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in parsed.query:
            connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_S
        return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)
    raise StoreUnavailable(
        f"unsupported database {safe_url(parsed)}: rotabot stores its state in SQLite "
        "(sqlite:///path) or PostgreSQL (postgresql+psycopg://...)"
    )


def _sqlite_file(url: URL) -> str | None:
    """The path of a SQLite file database, or None (in memory, or a ``file:`` URI)."""
    database = url.database
    if database in (None, "", ":memory:") or database.startswith("file:") or "uri" in url.query:
        return None
    return database


def _create_private(path: str) -> None:
    """Create ``path`` with mode 0600 (whatever the umask) unless it exists. A failure is left
    for SQLite to report when it opens the file (a folder that does not exist, say)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, SQLITE_FILE_MODE)
    except OSError:
        return
    try:
        os.fchmod(fd, SQLITE_FILE_MODE)  # the umask may have taken bits away
    finally:
        os.close(fd)


def _sqlite_engine(url: URL) -> Engine:
    path = _sqlite_file(url)
    if path is not None:
        # Before SQLAlchemy opens it: SQLite would create it 0644 (umask 022).
        _create_private(path)
    engine = create_engine(
        url,
        # Connections are pooled and handed between threads (scheduler, web workers).
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )
    in_memory = url.database in (None, "", ":memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        try:
            # WAL lets readers proceed while one writer commits; busy_timeout makes a second
            # writer wait for the first instead of failing at once; foreign keys are off in
            # SQLite unless asked for, per connection.
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()
        if path is not None:
            # SQLite gives the WAL and shared-memory files the database's mode, an existing
            # 0644 one's included; make them the bot's only whatever that and the umask are.
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(OSError):  # absent, or not ours to change
                    os.chmod(path + suffix, SQLITE_FILE_MODE)

    return engine


def unavailable(url: str | URL, exc: BaseException) -> StoreUnavailable:
    """A StoreUnavailable naming the host and what to check; never the password."""
    parsed = make_url(url)
    shown = safe_url(parsed)
    reason = _driver_reason(exc, parsed.password)
    if parsed.get_backend_name() == "sqlite":
        where = parsed.database or ":memory:"
        return StoreUnavailable(
            f"the rotabot database {where} cannot be used ({reason}); check that the file's "
            "folder exists and is writable and that no other process holds it locked"
        )
    host = parsed.host or "localhost"
    port = parsed.port or 5432
    return StoreUnavailable(
        f"the rotabot database at {host}:{port} cannot be reached ({reason}); check that "
        f"PostgreSQL is running there and accepts connections, and that DATABASE_URL "
        f"({shown}) names the right host, port, database and user"
    )


def _driver_reason(exc: BaseException, password: str | None) -> str:
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [ln.strip() for ln in str(original).splitlines() if ln.strip()]
    reason = lines[0] if lines else type(original).__name__
    if password:
        reason = reason.replace(password, "***")
    return reason[:300]


def ping(engine: Engine) -> None:
    """Raise StoreUnavailable unless the database answers a trivial query."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError) as exc:
        raise unavailable(engine.url, exc) from None
