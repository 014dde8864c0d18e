"""The ``env-file`` distribution target: one ``KEY=value`` line in a dotenv file.

What a write does to the file
-----------------------------
* Every line assigning the key (``KEY=...`` or ``export KEY=...``, a quoted value possibly
  spanning lines) is replaced by ``KEY=<value>``, keeping its indentation and ``export``; an
  inline comment after the old value goes with it. All other bytes (comments, blank lines,
  other keys, their order, CRLF line ends, a byte-order mark) stay exactly as they were. A key
  that is not there yet is appended as the last line. Every assignment of the key is replaced,
  not only the last one readers honour, so no stale credential is left in the file.
* The file is replaced atomically: a temporary file in the same folder (0600 from creation),
  fsync, ``os.replace``, fsync of the folder. A reader sees the old file or the new one, never a
  partial or missing file. The result is mode 0600 whatever the old file's mode (it holds a
  credential now); run as root, the old owner and group are kept.
* Writers take an flock on ``.<name>.lock`` beside the file (left in place, like the file
  store's), so two writers, in one process or several, never lose each other's keys.
* A symbolic link as the file is refused (the catalog should name the real file), and so is a
  missing folder: rotabot creates the file, never folders.
* If the key already holds exactly the value as rotabot would write it, nothing is touched.

How the value is written
------------------------
The file is read by python-dotenv, docker compose (compose-go) and systemd ``EnvironmentFile=``,
which agree on few things, so the value gets the one form all three read back unchanged:

* plain when it only has ``[A-Za-z0-9_./:+=@-]`` (the empty value too: ``KEY=``);
* else in single quotes when it has no ``'`` and no ``\\`` (literal for all three);
* else in double quotes with ``\\`` and ``"`` escaped (the only escapes all three decode).

Values no form serves are refused with a StoreError naming the key, and nothing is written:
line breaks, NUL and other control characters except tab (they cannot sit on a dotenv line, and
systemd drops such assignments); text that is not valid Unicode; ``${...}`` anywhere
(python-dotenv expands it in any quoting); and, when double quotes are needed, ``$`` before a
letter, ``_``, ``{`` or ``$`` (compose expands those and reads ``\\$`` as ``$``, python-dotenv
keeps ``\\$`` as two characters). Issuers that mint URL-safe tokens never hit any of this.

``read`` decodes the key's last assignment as python-dotenv does, without variable expansion.
Error messages name the file and the key, never a value.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adapters.file_store import fsync_dir
from bot.domain.credentials import StoreError, select_field, single_value
from bot.domain.secret_material import SecretMaterial

_FILE_MODE = 0o600
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLAIN = re.compile(r"[A-Za-z0-9_./:+=@-]*")
# C0 controls except tab, and DEL: systemd refuses them in values; \n, \r, NUL break the line.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_BRACED_VARIABLE = re.compile(r"\$\{[^}]*\}")
_DOLLAR_EXPANDED_IN_DOUBLE_QUOTES = re.compile(r"\$[A-Za-z_{$]")
# The start of an assignment: indentation, optional `export`, the key, `=` and blanks.
_HEAD = re.compile(r"[ \t]*(?:export[ \t]+)?([^\s=#'\"]+)[ \t]*=[ \t]*")
_INLINE_COMMENT = re.compile(r"\s#")
_SINGLE_QUOTE_ESCAPE = re.compile(r"\\([\\'])")
_DOUBLE_QUOTE_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
# python-dotenv's escapes in double quotes; any other backslash stays as written.
_DOUBLE_QUOTE_DECODED = dict(zip("\\'\"abfnrtv", "\\'\"\a\b\f\n\r\t\v", strict=True))
_BOM = "\ufeff"


class TargetUnwritable(StoreError):
    """The dotenv file or its folder failed at the OS level (the message has the cause)."""


@dataclass(frozen=True)
class _Assignment:
    """One ``KEY=value`` statement in the file, as offsets into its text."""

    key: str
    start: int  # start of its first line
    key_start: int  # indentation and `export ` lie between start and key_start
    value_start: int
    value_end: int  # the value as written: quotes included, inline comment and blanks not
    quote: str  # "'", '"' or "" (unquoted)
    end: int  # after the line end of its last line
    line_end: str  # "\n", "\r\n" or "" (last line without one)


class EnvFileTarget:
    """A :class:`bot.services.ports.Target`: the line ``key=...`` in the dotenv file ``path``,
    holding the credential's ``field`` (or its only field)."""

    kind: str = "env-file"

    def __init__(self, path: Path, key: str, field: str | None = None) -> None:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            # Not echoed: a credential pasted where the name belongs is the likeliest mistake.
            raise StoreError(
                f"env-file {path}: the key must be an environment variable name "
                "(letters, digits and _, not starting with a digit)"
            )
        self.path = Path(path)
        self.key = key
        self.field = field

    def __repr__(self) -> str:
        return f"EnvFileTarget(path={str(self.path)!r}, key={self.key!r}, field={self.field!r})"

    @property
    def where(self) -> str:
        return f"env-file {self.path} {self.key}"

    def write(self, material: SecretMaterial) -> str:
        where = self.where
        encoded = _encode(single_value(select_field(material, self.field, where), where), where)
        self._check_folder(where)
        with self._locked(where):
            loaded = self._load(where)
            text = loaded[0] if loaded is not None else ""
            new_text = _with_value(text, self.key, encoded)
            if new_text is not None:
                old_stat = loaded[1] if loaded is not None else None
                self._replace(where, new_text.encode("utf-8", "surrogateescape"), old_stat)
        return ""  # a dotenv file keeps no versions

    def read(self) -> SecretMaterial | None:
        loaded = self._load(self.where)
        if loaded is None:
            return None
        text = loaded[0]
        mine = [a for a in _assignments(text) if a.key == self.key]
        if not mine:
            return None
        # Readers let the last assignment win.
        return SecretMaterial({self.field or self.key: _decode(text, mine[-1])})

    # --- internals ------------------------------------------------------------------------

    def _check_folder(self, where: str) -> None:
        folder = self.path.parent
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            raise TargetUnwritable(
                f"{where}: cannot write: the folder {folder} does not exist; create it "
                "(rotabot creates the file, never folders)"
            ) from None
        except OSError as exc:
            raise TargetUnwritable(f"{where}: cannot write: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise TargetUnwritable(f"{where}: cannot write: {folder} is not a folder")

    @contextlib.contextmanager
    def _locked(self, where: str) -> Iterator[None]:
        lock = self.path.with_name(f".{self.path.name}.lock")
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
        except OSError as exc:
            raise TargetUnwritable(
                f"{where}: cannot write: lock file {lock.name}: {exc.strerror}"
            ) from None
        try:
            # flock belongs to the open file description: each call opens its own, so this
            # excludes other threads as well as other processes.
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _load(self, where: str) -> tuple[str, os.stat_result] | None:
        """The file's text (undecodable bytes kept as surrogates, so they are written back
        unchanged) and its stat; None when there is no file."""
        if self.path.is_symlink():
            raise self._symlink_refused(where)
        try:
            # O_NOFOLLOW: a symlink swapped in after the check is refused too; O_NONBLOCK: a
            # FIFO in its place does not hang us (it is refused below as not a regular file).
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._symlink_refused(where) from None
            raise TargetUnwritable(f"{where}: cannot read: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):  # a folder, FIFO or device in the file's place
                os.close(fd)
                raise StoreError(f"{where}: refused: {self.path} is not a regular file")
            with os.fdopen(fd, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise TargetUnwritable(f"{where}: cannot read: {exc.strerror}") from None
        return data.decode("utf-8", "surrogateescape"), st

    def _symlink_refused(self, where: str) -> StoreError:
        return StoreError(
            f"{where}: refused: {self.path} is a symbolic link; name the real file in the "
            "catalog (rotabot does not write through links)"
        )

    def _replace(self, where: str, payload: bytes, old: os.stat_result | None) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE
            )
        except OSError as exc:
            raise TargetUnwritable(f"{where}: cannot write: {exc.strerror}") from None
        try:
            try:
                with os.fdopen(fd, "wb") as fh:
                    if old is not None and os.geteuid() == 0:
                        # Keep the consumer's owner and group; best effort (the mode below
                        # keeps the file private either way).
                        with contextlib.suppress(OSError):
                            os.fchown(fh.fileno(), old.st_uid, old.st_gid)
                    # 0600 even if the old file was wider or the umask odd: it now holds a
                    # credential.
                    os.fchmod(fh.fileno(), _FILE_MODE)
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except OSError as exc:
                raise TargetUnwritable(f"{where}: cannot write: {exc.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()  # only left on failure; after os.replace it is gone
        try:
            fsync_dir(self.path.parent)
        except OSError as exc:
            raise TargetUnwritable(
                f"{where}: wrote the file but cannot sync its folder: {exc.strerror}"
            ) from None


def _encode(value: str, where: str) -> str:
    """The value as written after ``KEY=`` (see the module docstring for the rules)."""
    if _CONTROL.search(value):
        raise StoreError(
            f"{where}: refused: the value holds a line break, NUL or other control character, "
            "which a dotenv line cannot carry; nothing was written"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # `from None`: the encoding error quotes the offending character.
        raise StoreError(
            f"{where}: refused: the value is not valid Unicode text; nothing was written"
        ) from None
    if _PLAIN.fullmatch(value):
        return value
    if _BRACED_VARIABLE.search(value):
        raise StoreError(
            f"{where}: refused: the value holds '${{...}}', which python-dotenv expands as a "
            "variable however it is quoted; nothing was written (mint values without '$')"
        )
    if "'" not in value and "\\" not in value:
        return f"'{value}'"
    if _DOLLAR_EXPANDED_IN_DOUBLE_QUOTES.search(value):
        raise StoreError(
            f"{where}: refused: the value needs double quotes (it holds ' or \\) and holds '$' "
            "before a name, '{' or '$', which docker compose and python-dotenv read "
            "differently there; nothing was written (mint values without '$')"
        )
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _decode(text: str, assignment: _Assignment) -> str:
    raw = text[assignment.value_start : assignment.value_end]
    if assignment.quote == "'":
        return _SINGLE_QUOTE_ESCAPE.sub(r"\1", raw[1:-1])
    if assignment.quote == '"':
        return _DOUBLE_QUOTE_ESCAPE.sub(lambda m: _DOUBLE_QUOTE_DECODED.get(m[1], m[0]), raw[1:-1])
    return raw


def _with_value(text: str, key: str, encoded: str) -> str | None:
    """``text`` with ``key`` set to ``encoded``; None when it holds exactly that already."""
    mine = [a for a in _assignments(text) if a.key == key]
    if not mine:
        if text and not text.endswith("\n"):
            text += _newline_of(text)
        return f"{text}{key}={encoded}{_newline_of(text)}"
    if all(text[a.value_start : a.value_end] == encoded for a in mine):
        return None
    parts: list[str] = []
    done = 0
    for a in mine:
        parts += [text[done : a.key_start], f"{key}={encoded}{a.line_end}"]
        done = a.end
    parts.append(text[done:])
    return "".join(parts)


def _newline_of(text: str) -> str:
    # Follow the file's own line ends (its first one) so a CRLF file stays CRLF.
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _assignments(text: str) -> Iterator[_Assignment]:
    """Every assignment in ``text``; comments, blank and unparseable lines are skipped.

    A quoted value ends at its closing quote (a backslash escapes the next character, as
    python-dotenv and compose read it), so a multi-line value of another key is never taken
    for assignments of its own."""
    pos = len(_BOM) if text.startswith(_BOM) else 0
    while pos < len(text):
        head = _HEAD.match(text, pos)
        if head is None:
            pos = _line_bounds(text, pos)[2]
            continue
        value_start = head.end()
        close = _closing_quote(text, value_start)
        if close is not None:
            quote = text[value_start]
            value_end = close + 1
            _, line_end, end = _line_bounds(text, value_end)
        else:
            quote = ""
            content_end, line_end, end = _line_bounds(text, value_start)
            raw = text[value_start:content_end]
            comment = _INLINE_COMMENT.search(raw)
            # As python-dotenv: `#` after a blank starts a comment; trailing blanks dropped.
            value_end = value_start + len((raw[: comment.start()] if comment else raw).rstrip())
        yield _Assignment(
            key=head[1],
            start=pos,
            key_start=head.start(1),
            value_start=value_start,
            value_end=value_end,
            quote=quote,
            end=end,
            line_end=line_end,
        )
        pos = end


def _line_bounds(text: str, pos: int) -> tuple[int, str, int]:
    """For the line holding ``pos``: where its content ends, its line end, where the next
    line starts."""
    newline = text.find("\n", pos)
    if newline == -1:
        return len(text), "", len(text)
    if newline > pos and text[newline - 1] == "\r":
        return newline - 1, "\r\n", newline + 1
    return newline, "\n", newline + 1


def _closing_quote(text: str, start: int) -> int | None:
    if start >= len(text) or text[start] not in "'\"":
        return None
    quote = text[start]
    i = start + 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i
        i += 1
    return None  # unterminated: read as an unquoted value, like the rest of its line

