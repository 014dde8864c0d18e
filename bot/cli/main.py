"""The `rotabot` command line: argument parsing and dispatch to each subcommand.

A mistake the user can fix (a setting, the catalog, the database) ends the command with exit
status 2 and one line per problem on stderr, never a traceback: the texts of SettingsError,
CatalogInvalid and every other RotabotError are written for the person reading them.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence

from bot.catalog import CatalogInvalid
from bot.domain.errors import RotabotError
from bot.runtime.settings import ENV_NAMES, Settings, SettingsError

CATALOG_ENV = ENV_NAMES["catalog_path"]
DATABASE_ENV = ENV_NAMES["database_url"]
DEFAULT_CATALOG = str(Settings.model_fields["catalog_path"].default)
DEFAULT_DATABASE = str(Settings.model_fields["database_url"].default)

CATALOG_FOUND = f"default: {CATALOG_ENV}, else {DEFAULT_CATALOG}"
DATABASE_FOUND = (
    f"The database is {DATABASE_ENV} (default {DEFAULT_DATABASE}; PostgreSQL: "
    "postgresql+psycopg://user:password@host/db)."
)

OVERVIEW = f"""\
where things are found:
  catalog   --catalog FILE (or FILE) where a command takes one, else {CATALOG_ENV},
            else {DEFAULT_CATALOG}
  database  {DATABASE_ENV}, else {DEFAULT_DATABASE}; SQLite is migrated on start, PostgreSQL
            needs `rotabot db upgrade` before the first start and each new version
  Slack     SLACK_BOT_TOKEN, and SLACK_SIGNING_SECRET (HTTP) or SLACK_APP_TOKEN (Socket Mode)
  Every setting is an environment variable; README.md, Configuration, lists them.
  `rotabot sandbox` needs none of them: it keeps its own catalog and database.

exit status: 0 done; 2 a setting, the catalog or the database needs fixing (one line per
problem on stderr); `catalog check` exits 1 for an invalid catalog."""


def _sub(
    subs: argparse._SubParsersAction[argparse.ArgumentParser], name: str, help_text: str,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    # Raw, so the top level's table keeps its layout; each paragraph here is wrapped by hand.
    text = "\n".join(textwrap.fill(par, 79) for par in epilog.split("\n")) if epilog else None
    return subs.add_parser(name, help=help_text, description=help_text[:1].upper()
                           + help_text[1:] + ".", epilog=text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def _catalog_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", metavar="FILE", default=None,
                   help=f"the catalog file ({CATALOG_FOUND})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rotabot", description="Coordinated secret rotations from Slack.",
        epilog=OVERVIEW, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    serve = _sub(sub, "serve", "serve Slack (HTTP, or Socket Mode with SLACK_APP_TOKEN)",
                 f"{DATABASE_FOUND} SQLite is migrated on start; for PostgreSQL run `rotabot "
                 "db upgrade` first.\nSlack: SLACK_BOT_TOKEN, and SLACK_SIGNING_SECRET (HTTP) "
                 "or SLACK_APP_TOKEN (Socket Mode).")
    serve.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server binds all interfaces
    serve.add_argument("--port", type=int, default=None, help="default: PORT, else 3000")
    _catalog_option(serve)

    front = _sub(sub, "front", "ack Slack at once in a process of its own; serve does the work",
                 "Point Slack's Request URL at the front; it verifies each request with "
                 "SLACK_SIGNING_SECRET, answers at once, and posts the request to serve's "
                 "/slack/events (--upstream). Modal submissions and other answers that carry "
                 "data wait for serve. README: Acks under load.")
    front.add_argument("--host", default="0.0.0.0")  # noqa: S104 - a server binds all interfaces
    front.add_argument("--port", type=int, default=None, help="default: PORT, else 3000")
    front.add_argument("--upstream", required=True, metavar="URL",
                       help="serve's base URL, e.g. http://127.0.0.1:3001")

    sandbox = _sub(sub, "sandbox", "the real bot against a local Slack stand-in",
                   f"The sandbox writes its own sample catalog and SQLite database into "
                   f"--data-dir (reset on every start); {CATALOG_ENV}, {DATABASE_ENV} and the "
                   "Slack variables are not used.")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=3000)
    sandbox.add_argument(
        "--data-dir",
        default="./var/sandbox",
        help="where the sandbox keeps its catalog, SQLite file and file store",
    )

    catalog = _sub(sub, "catalog", "check the catalog or print a dependency map",
                   f"The catalog is FILE (check) or --catalog FILE (map), else {CATALOG_ENV}, "
                   f"else {DEFAULT_CATALOG}.")
    csub = catalog.add_subparsers(dest="catalog_command", required=True)
    check = _sub(csub, "check", "validate a catalog file",
                 "Every error as file:line: field: message, then readiness warnings.\nExit "
                 "status: 0 valid, 1 invalid (or any warning with --strict), 2 FILE cannot be "
                 "read.")
    check.add_argument("file", metavar="FILE", nargs="?", default=None,
                       help=f"the catalog file ({CATALOG_FOUND})")
    check.add_argument("--strict", action="store_true", help="readiness warnings become errors")
    cmap = _sub(csub, "map", "print the dependency map of one secret")
    cmap.add_argument("secret", metavar="SECRET")
    _catalog_option(cmap)

    db_only = f"{DATABASE_FOUND} The catalog is not read."
    db = _sub(sub, "db", "database migrations, and copying a database to another", db_only)
    dsub = db.add_subparsers(dest="db_command", required=True)
    _sub(dsub, "upgrade", f"apply migrations to the database in {DATABASE_ENV}", db_only)
    copy = _sub(dsub, "copy", "copy every table of one rotabot database into an empty one",
                "SQLite to PostgreSQL or back: ids, revisions and the audit log as they were. "
                "--to must hold no rotabot row; its schema is created by the migrations. "
                "Stop every `rotabot serve` on --from first, so nothing changes under the "
                "copy. At the end it prints the rows per table on both sides and the audit "
                "log's sha256; a copy that does not verify commits nothing. "
                f"{DATABASE_ENV} and the catalog are not read.")
    copy.add_argument("--from", dest="from_url", required=True, metavar="URL",
                      help="the database to copy, e.g. sqlite:///./rotabot.db")
    copy.add_argument("--to", dest="to_url", required=True, metavar="URL",
                      help="an empty database, e.g. postgresql+psycopg://user:pw@host/rotabot")

    audit = _sub(sub, "audit", "the audit trail", db_only)
    asub = audit.add_subparsers(dest="audit_command", required=True)
    export = _sub(asub, "export", "every audit event, oldest first", db_only)
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
    hint = ""
    if args.command in ("serve", "catalog"):  # the commands that read the catalog
        typed = args.file if getattr(args, "catalog_command", None) == "check" else args.catalog
        if typed:
            settings = settings.model_copy(update={"catalog_path": typed})
        else:  # a path the user typed needs no pointer to where paths come from
            option = "FILE" if getattr(args, "catalog_command", None) == "check" else (
                "--catalog FILE")
            hint = f"set {CATALOG_ENV} or pass {option}"
    try:
        return _run(args, settings, hint)
    except CatalogInvalid as exc:
        from bot.cli.catalog import print_problems

        print_problems(exc, sys.stderr, hint)
        return 2
    except RotabotError as exc:  # the database cannot be reached or used, and the like
        print(f"rotabot: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings, hint: str) -> int:
    if args.command == "catalog":
        from bot.cli import catalog as cli_catalog

        if args.catalog_command == "check":
            return cli_catalog.check(settings.catalog_path, args.strict, sys.stdout,
                                     sys.stderr, hint)
        return cli_catalog.show_map(settings.catalog_path, args.secret, sys.stdout,
                                    sys.stderr, hint)
    if args.command == "db" and args.db_command == "copy":
        from storage.copy import copy_database, print_report

        print_report(copy_database(args.from_url, args.to_url), print)
        return 0
    if args.command == "db":
        from storage.migrate import upgrade

        upgrade(settings.database_url)
        print("database is at the latest schema")
        return 0
    if args.command == "audit":
        from bot.cli.audit import export_audit

        return export_audit(since=args.since, fmt=args.format, out=sys.stdout, err=sys.stderr,
                            settings=settings)
    if args.command == "serve":
        from bot.runtime.server import serve

        port = args.port if args.port is not None else settings.port
        return serve(host=args.host, port=port, settings=settings)
    if args.command == "front":
        from bot.runtime.slack_front import serve_front

        port = args.port if args.port is not None else settings.port
        return serve_front(host=args.host, port=port, upstream=args.upstream, settings=settings)
    if args.command == "sandbox":
        from bot.sandbox.run import run_sandbox

        return run_sandbox(
            host=args.host, port=args.port, data_dir=args.data_dir,
            alert_secret=settings.alert_secret,
        )
    return 2
