"""`rotabot db copy`: every table of one rotabot database into another, empty one (SQLite to
PostgreSQL or back), with ids, revisions and the audit log as they were, checked at the end.

The target's schema comes from the normal migrations, so its audit triggers are the ones the
migration installs; rows are only inserted, which those triggers allow, and the copy checks
they are there and refuse an UPDATE before it commits. Everything is written in one
transaction on the target: a copy that fails, or whose counts or audit checksum differ, leaves
the target empty (at the latest schema), ready for the same command again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, func, insert, inspect, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from bot.domain.errors import RotabotError, StoreUnavailable
from storage.engine import is_sqlite, make_engine, normalize_url, safe_url, unavailable
from storage.migrate import current_revision, schema_problem, upgrade
from storage.tables import AuditEventRow, metadata

AUDIT_TABLE = AuditEventRow.__tablename__
# Rows read and inserted per round trip: a large audit log never sits in memory whole.
BATCH = 1000
# The triggers migration 0001 installs on audit_events, per back end.
AUDIT_TRIGGERS = {
    "postgresql": frozenset({"audit_events_no_update_delete", "audit_events_no_truncate"}),
    "sqlite": frozenset({"audit_events_no_update", "audit_events_no_delete"}),
}


class CopyRefused(RotabotError):
    """The copy did not start, or was rolled back: the text says why and what to do."""


@dataclass(frozen=True)
class TableCount:
    table: str
    source: int
    target: int


@dataclass(frozen=True)
class CopyReport:
    tables: tuple[TableCount, ...]
    # sha256 over the audit log's rows in id order, read back from each side.
    audit_sha256_source: str
    audit_sha256_target: str
    audit_triggers: tuple[str, ...]


def copy_database(from_url: str | URL, to_url: str | URL) -> CopyReport:
    """Copy every rotabot table from ``from_url`` into the empty database at ``to_url``.

    Raises CopyRefused (nothing written) for a source that is not a rotabot database at this
    version, a target holding any rotabot row, or a copy that does not verify."""
    source_url, target_url = normalize_url(from_url), normalize_url(to_url)
    if source_url.render_as_string(hide_password=False) == target_url.render_as_string(
            hide_password=False):
        raise CopyRefused("--from and --to name the same database: nothing to copy")
    with _named("--from"):
        _check_source(source_url)
    with _named("--to"):
        _check_target(target_url)
        upgrade(target_url)  # the normal migrations: schema, indexes and audit triggers
    source, target = make_engine(source_url), make_engine(target_url)
    try:
        with source.connect() as src, target.connect() as dst, _snapshot(src), dst.begin():
            # Again inside the transaction: a replica may have started on it meanwhile.
            _refuse_rows(dst, target_url)
            for table in metadata.sorted_tables:  # parents before children (foreign keys)
                _copy_table(src, dst, table)
            if dst.dialect.name == "postgresql":
                _reset_sequences(dst)
            report = _verify(src, dst)
        return report
    except (OperationalError, InterfaceError) as exc:
        # Either side may have gone away; the driver's first line says which and why.
        raise CopyRefused(
            f"the copy stopped, nothing was committed to --to ({safe_url(target_url)}): "
            f"{_reason(exc, source_url, target_url)}; check that both databases are reachable "
            "and run it again"
        ) from None
    finally:
        source.dispose()
        target.dispose()


@contextlib.contextmanager
def _named(option: str) -> Iterator[None]:
    """A database that cannot be reached is named by the option that gave its URL (the
    engine's message speaks of DATABASE_URL, which the copy does not read)."""
    try:
        yield
    except StoreUnavailable as exc:
        raise CopyRefused(f"{option}: " + str(exc).replace("DATABASE_URL", option)) from None


def _reason(exc: DBAPIError, *urls: URL) -> str:
    lines = str(exc.orig if exc.orig is not None else exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    for url in urls:  # a driver may echo its connection string
        if url.password:
            reason = reason.replace(str(url.password), "***")
    return reason[:300]


def _check_source(url: URL) -> None:
    if is_sqlite(url):
        path = url.database
        # make_engine would create an empty file for a mistyped path.
        if path and path != ":memory:" and not os.path.exists(path):
            raise CopyRefused(f"--from: there is no SQLite file at {path}")
    problem = schema_problem(url)
    if problem is not None:
        raise CopyRefused(f"--from ({safe_url(url)}): {problem}")


def _check_target(url: URL) -> None:
    if current_revision(url) is not None:
        problem = schema_problem(url)
        if problem is not None and "newer than this rotabot" in problem:
            raise CopyRefused(f"--to ({safe_url(url)}): {problem}")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            _refuse_rows(conn, url)
    except (OperationalError, InterfaceError) as exc:
        raise unavailable(engine.url, exc) from None
    finally:
        engine.dispose()


def _refuse_rows(conn: Connection, url: URL) -> None:
    present = set(inspect(conn).get_table_names())
    held = [f"{t.name} ({n} rows)" for t in metadata.sorted_tables if t.name in present
            and (n := int(conn.execute(select(func.count()).select_from(t)).scalar_one()))]
    if held:
        raise CopyRefused(
            f"--to ({safe_url(url)}) is not empty: {', '.join(held)}. rotabot copies only into "
            "an empty database, so nothing is overwritten; create a new database (or drop "
            "this one) and run the copy again"
        )


@contextlib.contextmanager
def _snapshot(conn: Connection) -> Iterator[None]:
    """Read the source in one transaction, REPEATABLE READ on PostgreSQL: one snapshot for
    every table. SQLite's driver starts no transaction for reads, so there the snapshot holds
    only while nothing writes (stop `rotabot serve` first); the verification at the end reads
    the source again, and a source that changed meanwhile fails it, committing nothing."""
    if conn.dialect.name == "postgresql":
        conn.execution_options(isolation_level="REPEATABLE READ")
    with conn.begin() as tx:
        yield
        tx.rollback()  # only read: nothing to keep


def _ordered(table: Table) -> list[Any]:
    return list(table.primary_key.columns)


def _copy_table(src: Connection, dst: Connection, table: Table) -> None:
    rows = src.execute(select(table).order_by(*_ordered(table)),
                       execution_options={"yield_per": BATCH})
    for batch in rows.mappings().partitions(BATCH):
        dst.execute(insert(table), [dict(r) for r in batch])


def _reset_sequences(dst: Connection) -> None:
    """Inserted ids do not advance PostgreSQL's sequences: set each one past the largest id,
    or the next row the bot writes would collide with a copied one."""
    for table in metadata.sorted_tables:
        keys = _ordered(table)
        if len(keys) != 1 or not keys[0].autoincrement or keys[0].type.python_type is not int:
            continue
        column = keys[0].name
        dst.execute(
            text(f"SELECT setval(pg_get_serial_sequence(:t, :c), "  # noqa: S608 - our names
                 f"COALESCE((SELECT MAX({column}) FROM {table.name}), 0) + 1, false)"),
            {"t": table.name, "c": column},
        )


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def audit_checksum(conn: Connection) -> str:
    """sha256 of the audit log: every column of every row, in id order, one JSON line each,
    with times as ISO 8601 UTC (the table type reads both back ends' times the same)."""
    table = metadata.tables[AUDIT_TABLE]
    digest = hashlib.sha256()
    rows = conn.execute(select(table).order_by(table.c.id), execution_options={"yield_per": BATCH})
    for row in rows.mappings():
        digest.update(json.dumps([_plain(row[c.name]) for c in table.c]).encode() + b"\n")
    return digest.hexdigest()


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


def audit_triggers(conn: Connection) -> tuple[str, ...]:
    """The enabled triggers on the audit table, by name."""
    if conn.dialect.name == "postgresql":
        query = ("SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_events'::regclass "
                 "AND NOT tgisinternal AND tgenabled <> 'D'")
    else:
        query = ("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                 "AND tbl_name = 'audit_events'")
    return tuple(sorted(str(name) for (name,) in conn.execute(text(query))))


def _update_refused(dst: Connection) -> bool:
    """True when the target refuses to change an audit row (tried inside a savepoint)."""
    table = metadata.tables[AUDIT_TABLE]
    first = dst.execute(select(func.min(table.c.id))).scalar_one()
    if first is None:
        return True  # no row to try; the triggers' presence was checked by name
    try:
        with dst.begin_nested():
            dst.execute(update(table).where(table.c.id == first).values(actor=table.c.actor))
    except DBAPIError:
        return True
    return False


def _verify(src: Connection, dst: Connection) -> CopyReport:
    counts = tuple(TableCount(t.name, _count(src, t), _count(dst, t))
                   for t in metadata.sorted_tables)
    problems = [f"{c.table}: {c.source} rows in --from, {c.target} in --to"
                for c in counts if c.source != c.target]
    want, have = audit_checksum(src), audit_checksum(dst)
    if want != have:
        problems.append(f"audit log checksum differs ({want[:12]} in --from, {have[:12]} in --to)")
    triggers = audit_triggers(dst)
    missing = AUDIT_TRIGGERS[dst.dialect.name] - set(triggers)
    if missing or not _update_refused(dst):
        problems.append("the audit log of --to does not refuse changes (append-only triggers "
                        f"missing: {', '.join(sorted(missing)) or 'none by name, yet UPDATE ran'})")
    if problems:
        raise CopyRefused("the copy did not verify, so nothing was committed to --to:\n"
                          + "\n".join(f"  {p}" for p in problems))
    return CopyReport(counts, want, have, triggers)


def print_report(report: CopyReport, write: Callable[[str], object]) -> None:
    """What `rotabot db copy` prints: rows per table on both sides, then the audit checksum."""
    width = max(len(c.table) for c in report.tables)
    for c in report.tables:
        write(f"{c.table:<{width}}  {c.source:>8} rows copied, {c.target:>8} in the target")
    write(f"audit log sha256: {report.audit_sha256_target} (same in --from and --to)")
    write(f"audit log append-only triggers on the target: {', '.join(report.audit_triggers)}")

