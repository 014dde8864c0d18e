"""`rotabot catalog check` and `rotabot catalog map`: the catalog commands, minus argv parsing."""

from __future__ import annotations

from typing import TextIO

from bot.catalog import CatalogInvalid, UnknownSecret, load_catalog
from bot.catalog.dependency_map import render_map
from bot.catalog.loader import CatalogUnreadable
from bot.catalog.readiness import NOTE, readiness_findings


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def print_problems(exc: CatalogInvalid, err: TextIO, hint: str = "") -> None:
    """One ``file:line: field: message`` line per problem. A file that could not be read at
    all gets ``hint`` (how to name another file) on its line: a wrong path is the usual cause
    and the reader may not know the path came from a default or the environment."""
    for error in exc.errors:
        line = str(error)
        if hint and isinstance(exc, CatalogUnreadable):
            line += f"; {hint}"
        print(line, file=err)


def check(path: str, strict: bool, out: TextIO, err: TextIO | None = None,
          hint: str = "") -> int:
    """Print every error, then every readiness warning, then a summary line.

    Exit status: 0 valid, 1 invalid (with ``strict`` any warning too): the verdict a CI job
    acts on. 2 when the file cannot be read at all (to ``err``, default ``out``): there was
    nothing to check.
    """
    try:
        catalog = load_catalog(path)
    except CatalogUnreadable as exc:
        print_problems(exc, err or out, hint)
        return 2
    except CatalogInvalid as exc:
        for error in exc.errors:
            print(error, file=out)
        print(f"{path}: INVALID, {_plural(len(exc.errors), 'error')}", file=out)
        return 1
    findings = readiness_findings(catalog)
    for finding in findings:
        print(finding.format(path), file=out)
    # Notes (a hard cutover) say what a secret is; only warnings are something to fix.
    warnings = [f for f in findings if f.severity != NOTE]
    notes = len(findings) - len(warnings)
    failed = strict and bool(warnings)
    status = "FAILED (--strict: warnings count as errors)" if failed else "OK"
    print(
        f"{path}: {status}, {_plural(len(catalog.secrets), 'secret')}, "
        f"{_plural(catalog.consumer_count(), 'consumer')}, {_plural(len(warnings), 'warning')}"
        + (f", {_plural(notes, 'note')}" if notes else ""),
        file=out,
    )
    return 1 if failed else 0


def show_map(path: str, secret: str, out: TextIO, err: TextIO | None = None,
             hint: str = "") -> int:
    """Print the dependency map of ``secret``; 2, with the reason on ``err`` (default
    ``out``), when the catalog or the name is wrong."""
    err = err or out
    try:
        catalog = load_catalog(path)
    except CatalogUnreadable as exc:
        print_problems(exc, err, hint)
        return 2
    except CatalogInvalid as exc:
        print_problems(exc, err)
        print(f"{path}: INVALID, {_plural(len(exc.errors), 'error')}; fix it first "
              f"(rotabot catalog check {path})", file=err)
        return 2
    try:
        out.write(render_map(catalog, secret))
    except UnknownSecret as exc:
        print(f"{path}: {exc}", file=err)
        return 2
    return 0
