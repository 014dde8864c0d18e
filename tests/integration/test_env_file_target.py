"""EnvFileTarget against real files: line rewriting, quoting for three dotenv readers, modes,
refusals, leaks, and atomicity under concurrent readers and writers."""

from __future__ import annotations

import io
import multiprocessing
import os
import re
import stat
import threading
import traceback
import uuid
from collections.abc import Callable
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import pytest

from adapters.env_file import EnvFileTarget, TargetUnwritable
from bot.domain.credentials import StoreError
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Target

KEY = "OPENAI_API_KEY"

# A file with every kind of line the target must leave alone.
ORIGINAL = (
    "# app settings\n"
    "\n"
    "APP_NAME=demo\n"
    "export OPENAI_API_KEY=old-key\n"
    "  # an indented comment mentioning OPENAI_API_KEY=not-this-one\n"
    "DATABASE_URL='postgres://app@db/app'\n"
    'GREETING="hello world" # inline comment\n'
    "export TRAILING=yes\n"
    "\n"
)

# Values that need quoting, each read back unchanged by read(), python-dotenv and the models of
# compose-go and systemd below.
ROUND_TRIP = [
    "plain-Value_1.2/3:4+5=6@7",
    "",
    "with space",
    " leading and trailing ",
    "it's",
    'say "hi"',
    "back\\slash",
    "ends with a backslash\\",
    "\\",
    "'",
    '"',
    "both ' and \" and \\ at once",
    "\\n is not a newline",
    "#not-a-comment",
    "a #b",
    "cost $5, $HOME and $$ stay literal",  # single quotes: only python-dotenv expands, ${..}
    "it's $5 or $",  # double quotes: '$' before a digit or at the end is literal everywhere
    "tab\there",
    "back`tick`",
    "pässwörd ✓ 🔑",
    "semi;colon&amp|pipe<>*?~!%^()[]{}",
    "trailing=equals==",
]

REFUSED = [
    "line\nbreak",
    "carriage\rreturn",
    "nul\x00byte",
    "bell\x07",
    "escape\x1b[0m",
    "del\x7f",
    "${HOME}",
    "x'${A}",
    "it's $HOME",
    "it's $$",
    "back\\slash ${X}",
    "it's ${",
    "lone surrogate \udc80",
]


def material(value: str) -> SecretMaterial:
    return SecretMaterial({"api_key": value})


@pytest.fixture
def env(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text(ORIGINAL)
    return path


# --- small reference readers --------------------------------------------------------------
# Models of how the other readers decode a value, written from their sources: compose-go
# (dotenv/parser.go extractVarValue, expandEscapes; template's `$` patterns) and systemd
# (env-file.c). Only the value after `KEY=` on one line; variables are unset.

_COMPOSE_ESCAPE = re.compile(r'\\(?:[abcfnrtv$"\\]|0\d{0,3})')
_COMPOSE_DECODED = dict(zip('abfnrtv"\\', '\a\b\f\n\r\t\v"\\', strict=True))
_COMPOSE_VARIABLE = re.compile(r"\$(?:(\$)|[_a-z][_a-z0-9]*|\{[^}]*\}?)", re.IGNORECASE)


def compose_reads(raw: str) -> str:
    def interpolate(value: str) -> str:
        return _COMPOSE_VARIABLE.sub(lambda m: "$" if m[1] else "", value)

    if raw[:1] not in ("'", '"'):
        return interpolate(raw.split(" #")[0].rstrip())
    quote, chars, escaped = raw[0], [], False
    for i, char in enumerate(raw[1:], start=1):
        if char != quote:
            if not escaped and char == "\\":
                escaped = True
                continue
            if escaped:
                escaped = False
                chars.append("\\")
            chars.append(char)
            continue
        if escaped:
            escaped = False
            chars.append(char)
            continue
        assert raw[i + 1 :].strip() == "", "text after the closing quote"
        value = "".join(chars)
        if quote == '"':
            value = _COMPOSE_ESCAPE.sub(
                lambda m: "$$" if m[0] == "\\$" else _COMPOSE_DECODED.get(m[0][1], m[0]), value
            )
            value = interpolate(value)
        return value
    raise AssertionError("unterminated quoted value")


def systemd_reads(raw: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "'":  # literal up to the next quote
            end = raw.index("'", i + 1)
            out.append(raw[i + 1 : end])
            i = end + 1
        elif char == '"':  # \ escapes only " \ ` $; any other backslash is kept
            i += 1
            while raw[i] != '"':
                if raw[i] == "\\":
                    nxt = raw[i + 1]
                    out.append(nxt if nxt in '"\\`$' else "\\" + nxt)
                    i += 2
                else:
                    out.append(raw[i])
                    i += 1
            i += 1
        elif char == "\\":
            out.append(raw[i + 1])
            i += 2
        else:
            out.append(char)
            i += 1
    value = "".join(out)
    # systemd drops assignments whose value holds control characters other than tab/newline.
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", value), "systemd would drop this line"
    return value


def raw_value_in(text: str, key: str) -> str:
    """The text after `key=` on the key's (last) line, as written."""
    lines = [ln for ln in text.splitlines() if re.match(rf"(export )?{key}=", ln)]
    assert lines, f"no line for {key}"
    return lines[-1].split("=", 1)[1]


def raw_value(path: Path, key: str) -> str:
    return raw_value_in(path.read_text(), key)


def python_dotenv(text: str) -> dict[str, str | None] | None:
    try:
        from dotenv import dotenv_values
    except ImportError:  # only this reader is skipped; read() and the models above still run
        return None
    return dict(dotenv_values(stream=io.StringIO(text)))


def leaks(exc: BaseException, value: str) -> bool:
    """Whether ``value`` shows anywhere a log of ``exc`` would show (chained causes too)."""
    text = "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)
    return value in text


# --- the Target port ------------------------------------------------------------------------


def test_is_a_target_with_kind_and_where(env: Path) -> None:
    target = EnvFileTarget(env, KEY)
    assert isinstance(target, Target)
    assert target.kind == "env-file"
    assert target.where == f"env-file {env} {KEY}"
    assert EnvFileTarget(Path("/srv/app/.env"), "K").where == "env-file /srv/app/.env K"


def test_write_returns_empty_version_and_read_returns_the_value(env: Path) -> None:
    target = EnvFileTarget(env, KEY)
    assert target.read() == SecretMaterial({KEY: "old-key"})
    assert target.write(material("new-key")) == ""
    assert target.read() == SecretMaterial({KEY: "new-key"})


def test_read_is_none_without_file_or_key(tmp_path: Path, env: Path) -> None:
    assert EnvFileTarget(tmp_path / "missing.env", KEY).read() is None
    assert EnvFileTarget(env, "NOT_THERE").read() is None
    # A key only mentioned in a comment is not assigned.
    assert EnvFileTarget(env, "NOT_THIS").read() is None


def test_invalid_key_is_refused_without_echoing_it(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        EnvFileTarget(tmp_path / ".env", "sk-live-0123456789")
    assert "sk-live-0123456789" not in str(info.value)


# --- what the file looks like afterwards ---------------------------------------------------


def test_only_the_keys_line_changes_every_other_byte_is_kept(env: Path) -> None:
    EnvFileTarget(env, KEY).write(material("new-key"))
    expected = ORIGINAL.replace(
        "export OPENAI_API_KEY=old-key\n", "export OPENAI_API_KEY=new-key\n"
    )
    assert env.read_bytes() == expected.encode()
    values = python_dotenv(env.read_text())
    if values is not None:
        assert values == {
            "APP_NAME": "demo",
            KEY: "new-key",
            "DATABASE_URL": "postgres://app@db/app",
            "GREETING": "hello world",
            "TRAILING": "yes",
        }


def test_a_lookalike_line_inside_another_keys_multiline_value_is_not_touched(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".env"
    before = f'PEM="-----BEGIN-----\n{KEY}=decoy\n-----END-----"\n{KEY}=old\nLAST=1\n'
    path.write_text(before)
    target = EnvFileTarget(path, KEY)
    assert target.read() == SecretMaterial({KEY: "old"})
    target.write(material("new"))
    assert path.read_text() == before.replace(f"\n{KEY}=old\n", f"\n{KEY}=new\n")


def test_every_assignment_of_the_key_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(f"{KEY}=first\nA=1\n  export {KEY} = 'second' # old\nB=2\n")
    EnvFileTarget(path, KEY).write(material("new"))
    # Indentation and `export` stay; the old value and its inline comment go.
    assert path.read_text() == f"{KEY}=new\nA=1\n  export {KEY}=new\nB=2\n"


def test_crlf_file_stays_crlf_and_bom_is_kept(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_bytes(f"\ufeffA=1\r\n{KEY}=old\r\nB=2\r\n".encode())
    target = EnvFileTarget(path, KEY)
    target.write(material("new"))
    assert path.read_bytes() == f"\ufeffA=1\r\n{KEY}=new\r\nB=2\r\n".encode()
    EnvFileTarget(path, "ADDED").write(material("x"))
    assert path.read_bytes().endswith(b"B=2\r\nADDED=x\r\n")
    assert target.read() == SecretMaterial({KEY: "new"})


def test_undecodable_bytes_elsewhere_in_the_file_are_written_back_unchanged(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".env"
    before = b"LATIN1=caf\xe9\n" + f"{KEY}=old\n".encode()
    path.write_bytes(before)
    EnvFileTarget(path, KEY).write(material("new"))
    assert path.read_bytes() == b"LATIN1=caf\xe9\n" + f"{KEY}=new\n".encode()


def test_missing_key_is_appended_as_the_last_line(env: Path) -> None:
    EnvFileTarget(env, "NEW_KEY").write(material("v1"))
    assert env.read_text() == ORIGINAL + "NEW_KEY=v1\n"


def test_appending_to_a_file_without_a_final_newline_adds_one(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("A=1\n# last line, no newline")
    EnvFileTarget(path, KEY).write(material("v"))
    assert path.read_text() == f"A=1\n# last line, no newline\n{KEY}=v\n"


def test_missing_file_is_created_0600(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    target = EnvFileTarget(path, KEY)
    target.write(material("first"))
    assert path.read_text() == f"{KEY}=first\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert target.read() == SecretMaterial({KEY: "first"})


def test_a_0644_file_is_0600_after_the_write_and_no_temp_file_is_left(env: Path) -> None:
    env.chmod(0o644)
    EnvFileTarget(env, KEY).write(material("new-key"))
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert sorted(p.name for p in env.parent.iterdir()) == [f".{env.name}.lock", env.name]
    assert stat.S_IMODE((env.parent / f".{env.name}.lock").stat().st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_as_root_the_files_owner_and_group_are_kept(env: Path) -> None:
    os.chown(env, 65534, 65534)
    EnvFileTarget(env, KEY).write(material("new-key"))
    st = env.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_same_value_again_does_not_rewrite_the_file(env: Path) -> None:
    target = EnvFileTarget(env, KEY)
    target.write(material("it's new"))
    before = env.stat()
    assert target.write(material("it's new")) == ""
    after = env.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    target.write(material("newer"))
    assert env.stat().st_ino != before.st_ino  # a real change is a new file, swapped in


# --- quoting ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ROUND_TRIP, ids=range(len(ROUND_TRIP)))
def test_value_round_trips_through_every_reader(env: Path, value: str) -> None:
    target = EnvFileTarget(env, KEY)
    target.write(material(value))
    assert target.read() == SecretMaterial({KEY: value})
    raw = raw_value(env, KEY)
    if re.fullmatch(r"[A-Za-z0-9_./:+=@-]*", value):
        assert raw == value  # plain when that is safe
    assert compose_reads(raw) == value
    assert systemd_reads(raw) == value
    values = python_dotenv(env.read_text())
    if values is not None:
        assert values[KEY] == value
        assert values["GREETING"] == "hello world"  # the neighbours still parse


@pytest.mark.parametrize("value", REFUSED, ids=range(len(REFUSED)))
def test_value_no_reader_agrees_on_is_refused_naming_the_key_not_the_value(
    env: Path, value: str
) -> None:
    with pytest.raises(StoreError) as info:
        EnvFileTarget(env, KEY).write(material(value))
    message = str(info.value)
    assert KEY in message
    assert str(env) in message
    assert "nothing was written" in message
    assert not leaks(info.value, value)
    assert env.read_text() == ORIGINAL


# --- refusals and errors ------------------------------------------------------------------


def test_symlinked_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    real = tmp_path / "real.env"
    real.write_text(f"{KEY}=old\n")
    link = tmp_path / ".env"
    link.symlink_to(real)
    target = EnvFileTarget(link, KEY)
    with pytest.raises(StoreError, match="symbolic link"):
        target.write(material("new"))
    with pytest.raises(StoreError, match="symbolic link"):
        target.read()
    assert real.read_text() == f"{KEY}=old\n"
    assert link.is_symlink()


def test_dangling_symlink_is_refused_not_created_through(tmp_path: Path) -> None:
    link = tmp_path / ".env"
    link.symlink_to(tmp_path / "elsewhere.env")
    with pytest.raises(StoreError, match="symbolic link"):
        EnvFileTarget(link, KEY).write(material("new"))
    assert not (tmp_path / "elsewhere.env").exists()


def test_directory_in_place_of_the_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".env").mkdir()
    with pytest.raises(StoreError, match="not a regular file"):
        EnvFileTarget(tmp_path / ".env", KEY).write(material("new"))


def test_missing_folder_says_to_create_it(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / ".env"
    with pytest.raises(TargetUnwritable) as info:
        EnvFileTarget(path, KEY).write(material("new"))
    assert str(info.value).startswith(f"env-file {path} {KEY}: cannot write:")
    assert f"{path.parent} does not exist; create it" in str(info.value)
    assert not path.parent.exists()


def _write_as_nobody(path: str, value: str, results: multiprocessing.Queue[str]) -> None:
    try:
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        EnvFileTarget(Path(path), KEY).write(material(value))
        results.put("written")
    except TargetUnwritable as exc:
        results.put(f"TargetUnwritable:{exc}")
    except BaseException as exc:
        results.put(f"other:{type(exc).__name__}")


def test_permission_denied_is_target_unwritable_with_the_cause(tmp_path: Path) -> None:
    # Run in a child that drops root (root may write anywhere), into a folder it cannot write.
    folder = tmp_path / "locked"
    folder.mkdir()
    path = folder / ".env"
    path.write_text(f"{KEY}=old\n")
    folder.chmod(0o755 if os.geteuid() == 0 else 0o555)
    tmp_path.chmod(0o755)
    value = f"CANARY-{uuid.uuid4().hex}"
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.Queue[str] = ctx.Queue()
    child = ctx.Process(target=_write_as_nobody, args=(str(path), value, results))
    child.start()
    outcome = results.get(timeout=60)
    child.join(timeout=60)
    folder.chmod(0o755)
    # (Which step is denied depends on the folders above: pytest keeps tmp_path's parents 0700.)
    assert outcome.startswith(f"TargetUnwritable:env-file {path} {KEY}: cannot write: ")
    assert outcome.endswith(": Permission denied")
    assert value not in outcome
    assert path.read_text() == f"{KEY}=old\n"


def test_two_fields_and_no_field_named_is_refused_naming_the_fields(env: Path) -> None:
    user, password = f"U-{uuid.uuid4().hex}", f"P-{uuid.uuid4().hex}"
    both = SecretMaterial({"username": user, "password": password})
    with pytest.raises(StoreError) as info:
        EnvFileTarget(env, KEY).write(both)
    assert "password, username" in str(info.value)
    assert f"env-file {env} {KEY}" in str(info.value)
    assert not leaks(info.value, user) and not leaks(info.value, password)
    assert env.read_text() == ORIGINAL

    with pytest.raises(StoreError, match="no field 'token'"):
        EnvFileTarget(env, KEY, field="token").write(both)

    target = EnvFileTarget(env, KEY, field="password")
    target.write(both)
    assert target.read() == SecretMaterial({"password": password})
    assert raw_value(env, KEY) == password


def test_a_canary_value_never_shows_in_errors_where_or_repr(tmp_path: Path) -> None:
    canary = f"CANARY-{uuid.uuid4().hex}-it's\\q"
    path = tmp_path / ".env"
    target = EnvFileTarget(path, KEY)
    target.write(material(canary))
    assert target.read() == SecretMaterial({KEY: canary})
    values = python_dotenv(path.read_text())
    if values is not None:
        assert values[KEY] == canary

    failures: list[Callable[[], Any]] = [
        lambda: target.write(material(canary + "\n")),
        lambda: target.write(material(canary + "\x00")),
        lambda: target.write(material(canary + "\udc80")),
        lambda: target.write(material(canary + "$HOME")),
        lambda: target.write(material(canary + "${HOME}")),
        lambda: target.write(SecretMaterial({"a": canary, "b": canary})),
        lambda: EnvFileTarget(path, KEY, field="nope").write(material(canary)),
        lambda: EnvFileTarget(tmp_path / "missing" / ".env", KEY).write(material(canary)),
    ]
    for fail in failures:
        with pytest.raises(StoreError) as info:
            fail()
        assert not leaks(info.value, canary), info.value

    # The file holds the canary now; errors about the file still do not show its contents.
    path.rename(tmp_path / "real.env")
    path.symlink_to(tmp_path / "real.env")
    for fail in (lambda: target.write(material("other")), target.read):
        with pytest.raises(StoreError) as info:
            fail()
        assert not leaks(info.value, canary)

    assert canary not in target.where
    assert canary not in repr(target) and canary not in str(target)


# --- concurrency ------------------------------------------------------------------------------

READS_WANTED = 300
WRITES_WANTED = 200
WRITES_MAX = 20_000  # a stuck reader fails the test instead of hanging it


def _read_in_a_loop(
    path: str,
    allowed: dict[bytes, str],
    stop: Event,
    reads: Synchronized[int],
    problems: multiprocessing.Queue[str],
) -> None:
    """Read the file until told to stop; report anything but a complete old or new file."""
    done = reported = 0

    def report(problem: str) -> None:
        nonlocal reported
        reported += 1
        if reported <= 10:  # a few are enough, and a full queue would block the child's exit
            problems.put(problem)

    while not stop.is_set():
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            report("file missing")
            continue
        if data not in allowed:
            report(f"partial or unknown file of {len(data)} bytes")
        text = data.decode(errors="replace")
        expected = allowed.get(data)
        try:
            if compose_reads(raw_value_in(text, KEY)) != expected:
                report("parsed value is neither the old nor the new one")
        except AssertionError:
            report(f"no parseable {KEY} line in a file of {len(data)} bytes")
        values = python_dotenv(text)
        if values is not None and (values.get(KEY) != expected or values.get("TRAILING") != "yes"):
            report("python-dotenv: value neither old nor new, or a neighbour lost")
        done += 1
        reads.value = done


@pytest.mark.parametrize("reader", ["thread", "process"])
def test_concurrent_reader_sees_a_complete_old_or_new_file_never_partial_or_missing(
    tmp_path: Path, reader: str
) -> None:
    path = tmp_path / ".env"
    # Neighbours over a few pages, so a non-atomic write would be caught half-way.
    path.write_text(ORIGINAL + "".join(f"PAD_{i}={'x' * 1000}\n" for i in range(12)))
    target = EnvFileTarget(path, KEY)
    values = ["value-a", "value b with 'quotes' and \\"]
    allowed: dict[bytes, str] = {}
    for value in values:
        target.write(material(value))
        allowed[path.read_bytes()] = value
    assert len(allowed) == 2

    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    reads: Synchronized[int] = ctx.Value("l", 0)
    problems: multiprocessing.Queue[str] = ctx.Queue()
    args = (str(path), allowed, stop, reads, problems)
    worker: threading.Thread | multiprocessing.process.BaseProcess = (
        threading.Thread(target=_read_in_a_loop, args=args)
        if reader == "thread"
        else ctx.Process(target=_read_in_a_loop, args=args)
    )
    worker.start()
    writes = 0
    try:
        # Keep writing until the reader has read many times while writes went on.
        while (reads.value < READS_WANTED or writes < WRITES_WANTED) and writes < WRITES_MAX:
            target.write(material(values[writes % 2]))
            writes += 1
    finally:
        stop.set()
        worker.join(timeout=60)
    assert reads.value >= READS_WANTED, f"reader managed only {reads.value} reads"
    found = []
    while not problems.empty():
        found.append(problems.get())
    assert found == []
    assert target.read() == SecretMaterial({KEY: values[(writes - 1) % 2]})


WRITER_ROUNDS = 100


def _write_own_key(
    path: str, key: str, rounds: int, barrier: Barrier | threading.Barrier, problems: Any
) -> None:
    """Write ``key`` ``rounds`` times; a lost update by the other writer would show as this
    key holding an older value than the one just written."""
    target = EnvFileTarget(Path(path), key)
    barrier.wait()
    try:
        last = "start"
        for i in range(rounds):
            seen = target.read()
            if seen != SecretMaterial({key: last}):
                problems.put(f"{key}: before round {i}, not the value written last")
            last = f"{key.lower()}-{i}"
            target.write(material(last))
    except Exception as exc:
        problems.put(f"{key}: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("writers", ["threads", "processes"])
def test_concurrent_writers_of_different_keys_lose_nothing(tmp_path: Path, writers: str) -> None:
    path = tmp_path / ".env"
    path.write_text(ORIGINAL + "WRITER_A=start\nWRITER_B=start\n")
    if writers == "processes":
        ctx = multiprocessing.get_context("fork")
        barrier: Barrier | threading.Barrier = ctx.Barrier(2)
        problems: Any = ctx.Queue()
        workers: list[threading.Thread | multiprocessing.process.BaseProcess] = [
            ctx.Process(
                target=_write_own_key, args=(str(path), k, WRITER_ROUNDS, barrier, problems)
            )
            for k in ("WRITER_A", "WRITER_B")
        ]
    else:
        import queue

        barrier = threading.Barrier(2)
        problems = queue.Queue()
        workers = [
            threading.Thread(
                target=_write_own_key, args=(str(path), k, WRITER_ROUNDS, barrier, problems)
            )
            for k in ("WRITER_A", "WRITER_B")
        ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    found = []
    while not problems.empty():
        found.append(problems.get())
    assert found == []
    last = WRITER_ROUNDS - 1
    assert path.read_text() == ORIGINAL + f"WRITER_A=writer_a-{last}\nWRITER_B=writer_b-{last}\n"
