"""`rotabot catalog check` and `rotabot catalog map`: the catalog commands, minus argv parsing."""

from __future__ import annotations

from typing import TextIO

from bot.catalog import CatalogInvalid, UnknownSecret, load_catalog
from bot.catalog.dependency_map import render_map
from bot.catalog.readiness import readiness_findings


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def check(path: str, strict: bool, out: TextIO) -> int:
    """Print every error, then every readiness warning, then a summary line.

    Exit status: 0 valid, 1 invalid; with ``strict`` any warning also makes it 1.
    """
    try:
        catalog = load_catalog(path)
    except CatalogInvalid as exc:
        for error in exc.errors:
            print(error, file=out)
        print(f"{path}: INVALID, {_plural(len(exc.errors), 'error')}", file=out)
        return 1
    findings = readiness_findings(catalog)
    for finding in findings:
        print(finding.format(path), file=out)
    failed = strict and bool(findings)
    status = "FAILED (--strict: warnings count as errors)" if failed else "OK"
    print(
        f"{path}: {status}, {_plural(len(catalog.secrets), 'secret')}, "
        f"{_plural(catalog.consumer_count(), 'consumer')}, {_plural(len(findings), 'warning')}",
        file=out,
    )
    return 1 if failed else 0


def show_map(path: str, secret: str, out: TextIO) -> int:
    """Print the dependency map of ``secret``; 1 when the catalog or the name is wrong."""
    try:
        catalog = load_catalog(path)
    except CatalogInvalid as exc:
        for error in exc.errors:
            print(error, file=out)
        print(f"{path}: INVALID, {_plural(len(exc.errors), 'error')}; fix it first "
              f"(rotabot catalog check {path})", file=out)
        return 1
    try:
        out.write(render_map(catalog, secret))
    except UnknownSecret as exc:
        print(f"{path}: {exc}", file=out)
        return 1
    return 0
