"""What a user sees from `rotabot` when something is theirs to fix: exit status 2, one line per
problem on stderr (``file:line: field: message`` for the catalog), never a traceback; and
`--help` saying where the catalog and the database are found."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli.main import main
from bot.runtime.logs import LIBRARY_LOGGERS, PER_RUN_LOGGERS, configure_logging
from bot.runtime.settings import ENV_NAMES

ROOT = Path(__file__).resolve().parents[2]
SIGNING = "0123456789abcdef0123456789abcdef"
PROBLEM_LINE = re.compile(r"^[^:\n]+:\d+: (?:[\w.\-\[\]]+: )?\S.*$")

YAML_ERROR = """\
version: 1
defaults:
  channel: C0ROTATE: oops
"""
INVALID = """\
version: 2
defaults: {channel: C0ROTATE}
secrets:
  api-key:
    issuer: {kind: manual}
    store: {name: nowhere, path: api}
    consumers:
      web: {owner: U0ALICE, lane: prod, reload: restrat}
"""


def bot_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The environment `rotabot serve` needs, minus any rotabot setting of the caller's."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES.values()}
    env.update({
        "SLACK_BOT_TOKEN": "xoxb-123-456-cli",
        "SLACK_SIGNING_SECRET": SIGNING,
        "SLACK_API_URL": "http://127.0.0.1:9/api/",  # never reached: it stops before
        "DATABASE_URL": f"sqlite:///{tmp_path / 'rotabot.db'}",
        **values,
    })
    return env


def rotabot(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], cwd=tmp_path, env=bot_env(tmp_path, **env),
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """In-process runs of main(): no rotabot setting from the caller, cwd a fresh folder."""
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    loggers = {name: logging.getLogger(name).level
               for name in (*LIBRARY_LOGGERS, *PER_RUN_LOGGERS)}
    yield
    root.handlers[:], root.level = handlers, level
    for name, saved in loggers.items():
        logging.getLogger(name).setLevel(saved)


# --- rotabot serve ------------------------------------------------------------------------


def test_serve_without_a_catalog_says_how_to_name_one(tmp_path: Path) -> None:
    done = rotabot(tmp_path, "serve", "--port", "0")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "./catalog.yml: cannot read the catalog: No such file or directory; "
        "set ROTABOT_CATALOG or pass --catalog FILE"
    ]
    assert not (tmp_path / "rotabot.db").exists()  # stopped before touching the database


@pytest.mark.parametrize(("text", "expected"), [
    (YAML_ERROR, ["{path}:3: invalid YAML: mapping values are not allowed here"]),
    (INVALID, [
        "{path}:1: version: unsupported catalog version 2; this rotabot reads version: 1",
        "{path}:6: secrets.api-key.store.name: store 'nowhere' is not defined under stores "
        "(none are defined)",
        "{path}:8: secrets.api-key.consumers.web.reload: expected one of hot, restart, "
        "staged, got 'restrat'",
    ]),
], ids=["yaml-syntax", "validation"])
def test_serve_on_a_broken_catalog_prints_one_line_per_problem(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    path = tmp_path / "catalog.yml"
    path.write_text(text)
    done = rotabot(tmp_path, "serve", "--port", "0", ROTABOT_CATALOG=str(path))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines == [line.format(path=path) for line in expected]
    assert all(PROBLEM_LINE.match(line) for line in lines)


@pytest.mark.usefixtures("restore_logging")
def test_serve_catalog_option_names_the_file(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in bot_env(clean_env).items():
        monkeypatch.setenv(name, value)
    path = clean_env / "elsewhere.yml"
    assert main(["serve", "--port", "0", "--catalog", str(path)]) == 2
    # The user typed the path: no pointer to ROTABOT_CATALOG.
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: cannot read the catalog: No such file or directory"
    ]


def test_serve_on_a_port_in_use_says_so(tmp_path: Path) -> None:
    (tmp_path / "catalog.yml").write_text(INVALID)  # never read: the port is checked first
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = rotabot(tmp_path, "serve", "--host", "127.0.0.1", "--port", str(port))
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"rotabot: cannot listen on 127.0.0.1:{port} (Address already in use); pass --port P "
        "or set PORT to a free port"
    ]


# --- rotabot catalog ------------------------------------------------------------------------


def test_catalog_map_without_a_catalog_names_both_ways_to_give_one(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["catalog", "map", "api-key"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        "./catalog.yml: cannot read the catalog: No such file or directory; "
        "set ROTABOT_CATALOG or pass --catalog FILE"
    ]


def test_catalog_map_on_an_invalid_catalog_from_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = clean_env / "catalog.yml"
    path.write_text(YAML_ERROR)
    monkeypatch.setenv("ROTABOT_CATALOG", str(path))
    assert main(["catalog", "map", "api-key"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{path}:3: invalid YAML: mapping values are not allowed here",
        f"{path}: INVALID, 1 error; fix it first (rotabot catalog check {path})",
    ]


def test_catalog_check_defaults_to_the_configured_catalog(
    clean_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["catalog", "check"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "./catalog.yml: cannot read the catalog: No such file or directory; "
        "set ROTABOT_CATALOG or pass FILE"
    ]


# --- rotabot db and audit -----------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "bogus",
    "postgresql+psycopg://rotabot:pw-not-shown@127.0.0.1:1/rotabot",  # nothing listens on 1
])
@pytest.mark.parametrize("command", [["db", "upgrade"], ["audit", "export"]])
def test_database_problems_are_one_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    url: str, command: list[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    assert main(command) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("rotabot: ")
    assert "DATABASE_URL" in err and "pw-not-shown" not in err


def test_audit_export_on_an_empty_database_says_to_migrate(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{clean_env / 'empty.db'}")
    assert main(["audit", "export"]) == 2
    assert capsys.readouterr().err == (
        "rotabot: DATABASE_URL: the database has no rotabot tables yet: run `rotabot db "
        "upgrade` first\n"
    )


# --- --help -------------------------------------------------------------------------------


def help_text(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    # argparse wraps to the terminal's width: compare words, not line breaks.
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("args", [(), ("serve",), ("catalog",), ("catalog", "check"),
                                  ("catalog", "map")])
def test_help_says_how_the_catalog_is_found(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    text = help_text(capsys, *args)
    assert "ROTABOT_CATALOG" in text and "./catalog.yml" in text
    if args in ((), ("serve",), ("catalog", "map")):
        assert "--catalog FILE" in text


@pytest.mark.parametrize("args", [(), ("serve",), ("db",), ("db", "upgrade"), ("audit",),
                                  ("audit", "export")])
def test_help_says_how_the_database_is_found(
    capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    text = help_text(capsys, *args)
    assert "DATABASE_URL" in text and "sqlite:///./rotabot.db" in text


def test_sandbox_help_says_it_keeps_its_own_catalog_and_database(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = help_text(capsys, "sandbox")
    assert "own sample catalog and SQLite database into --data-dir" in text
    assert "ROTABOT_CATALOG, DATABASE_URL" in text


# --- library log levels -------------------------------------------------------------------


@pytest.mark.parametrize(("library_level", "per_run_shown"), [
    ("WARNING", False), ("INFO", False), ("DEBUG", True),
])
@pytest.mark.usefixtures("restore_logging")
def test_apscheduler_per_run_lines_only_with_library_debug(
    library_level: str, per_run_shown: bool
) -> None:
    configure_logging("DEBUG", library_level)
    # The logger APScheduler's default executor writes "Running job ..." to, at INFO.
    executor = logging.getLogger("apscheduler.executors.default")
    assert executor.isEnabledFor(logging.INFO) is per_run_shown
    assert executor.isEnabledFor(logging.WARNING)
    assert logging.getLogger("apscheduler.scheduler").isEnabledFor(logging.INFO) is (
        library_level != "WARNING")

