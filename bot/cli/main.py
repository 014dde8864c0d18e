"""The `rotabot` command line: argument parsing and dispatch to each subcommand."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bot.runtime.settings import Settings, SettingsError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rotabot", description="Coordinated secret rotations from Slack."
    )
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve Slack (HTTP, or Socket Mode with SLACK_APP_TOKEN)")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server binds all interfaces
    serve.add_argument("--port", type=int, default=None, help="default: PORT, else 3000")

    sandbox = sub.add_parser("sandbox", help="the real bot against a local Slack stand-in")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=3000)
    sandbox.add_argument(
        "--data-dir",
        default="./var/sandbox",
        help="where the sandbox keeps its SQLite file and file store",
    )

    catalog = sub.add_parser("catalog", help="check the catalog or print a dependency map")
    csub = catalog.add_subparsers(dest="catalog_command", required=True)
    check = csub.add_parser("check", help="validate a catalog file")
    check.add_argument("file")
    check.add_argument("--strict", action="store_true", help="readiness warnings become errors")
    cmap = csub.add_parser("map", help="print the dependency map of one secret")
    cmap.add_argument("secret")
    cmap.add_argument(
        "--catalog", default=None, help="default: ROTABOT_CATALOG, else ./catalog.yml"
    )

    db = sub.add_parser("db", help="database migrations")
    dsub = db.add_subparsers(dest="db_command", required=True)
    dsub.add_parser("upgrade", help="apply migrations to DATABASE_URL")

    audit = sub.add_parser("audit", help="the audit trail")
    asub = audit.add_subparsers(dest="audit_command", required=True)
    export = asub.add_parser("export", help="every audit event, oldest first")
    export.add_argument("--since", help="YYYY-MM-DD or ISO 8601 time (UTC)")
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()  # the one read of the environment
    except SettingsError as exc:
        print(f"rotabot: {exc}", file=sys.stderr)
        return 2
    if args.command == "catalog":
        from bot.cli import catalog as cli_catalog

        if args.catalog_command == "check":
            return cli_catalog.check(args.file, args.strict, sys.stdout)
        return cli_catalog.show_map(args.catalog or settings.catalog_path, args.secret, sys.stdout)
    if args.command == "db":
        from storage.migrate import upgrade

        upgrade(settings.database_url)
        print("database is at the latest schema")
        return 0
    if args.command == "audit":
        from bot.cli.audit import export_audit

        return export_audit(since=args.since, fmt=args.format, out=sys.stdout, settings=settings)
    if args.command == "serve":
        from bot.runtime.server import serve

        port = args.port if args.port is not None else settings.port
        return serve(host=args.host, port=port, settings=settings)
    if args.command == "sandbox":
        from bot.sandbox.run import run_sandbox

        return run_sandbox(
            host=args.host, port=args.port, data_dir=args.data_dir,
            alert_secret=settings.alert_secret,
        )
    return 2

