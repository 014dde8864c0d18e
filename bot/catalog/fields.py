"""Field types shared by the catalog models: durations, env-var names, URLs, store paths, the
strict base.

None of them repeats a refused value in its message: a value in the wrong place may well be
a credential (``bot.catalog.shapes`` says what shape it has instead).
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from bot.catalog.shapes import env_name_shape, url_problem
from bot.domain.durations import EXPECTED as DURATION_EXPECTED
from bot.domain.durations import parse_duration

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_MAX = 128
URL_MAX = 2000  # what Slack shows of it, and what a proxy or provider accepts, comfortably
# Schemes worth naming when a URL is refused (the rest is never repeated).
_KNOWN_SCHEMES = frozenset({
    "ftp", "sftp", "ssh", "file", "ws", "wss", "redis", "rediss", "postgres", "postgresql",
    "mysql", "mongodb", "mongodb+srv", "amqp", "amqps", "ldap", "ldaps", "smtp", "s3", "git",
})
NEVER_HOLDS = "the catalog never holds credentials"


def _custom(kind: str, message: str) -> PydanticCustomError:
    # The message goes through the context so braces in user text are never re-formatted.
    return PydanticCustomError(kind, "{message}", {"message": message})


def _describe(value: Any) -> str:
    """What kind of value was given, without echoing it (it might be a credential)."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise _custom("duration", str(exc)) from None
    raise _custom("duration", f"expected {DURATION_EXPECTED}, got {_describe(value)}")


def _env_name(value: Any) -> Any:
    # Never echo the value: if it is not a name it may well be the credential itself.
    if not isinstance(value, str) or not _ENV_NAME.match(value) or len(value) > ENV_NAME_MAX:
        raise _custom(
            "env_name",
            "expected the name of an environment variable (letters, digits and _), not a "
            f"value: {NEVER_HOLDS}",
        )
    shape = env_name_shape(value)
    if shape is not None:
        raise _custom(
            "env_name_credential",
            f"this looks like {shape}, not the name of an environment variable: {NEVER_HOLDS}; "
            "put it in an environment variable and give that variable's name",
        )
    return value


def _url(value: Any) -> Any:
    if not isinstance(value, str):
        raise _custom("url", f"expected an http(s) URL, got {_describe(value)}")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise _custom("url", "expected an http(s) URL, got text that is not a URL") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        # Name the scheme only when it is a known one: the rest of the value (a DSN's
        # password, a pasted token) is never repeated.
        scheme = parts.scheme.lower()
        got = (
            f"not {scheme}://" if scheme in _KNOWN_SCHEMES and parts.netloc
            else "got text that is not one"
        )
        hint = (
            f" (and {NEVER_HOLDS}: name an environment variable instead of a password in it)"
            if parts.netloc and "@" in parts.netloc
            else ""
        )
        raise _custom("url", f"expected an http(s) URL, {got}{hint}")
    if len(value) > URL_MAX:
        raise _custom("url", f"this URL is {len(value)} characters long; at most {URL_MAX}")
    problem = url_problem(value)
    if problem is not None:
        raise _custom(
            "url_credential",
            f"{problem}: {NEVER_HOLDS}; drop it from the URL and name an environment "
            "variable instead (a *_env field)",
        )
    return value


def _store_path(value: Any) -> Any:
    """A secret's path inside its store: relative, no '.' or '..' components, nothing a URL
    or a file system would read as more than a name."""
    if not isinstance(value, str):
        raise _custom("store_path", f"expected text, got {_describe(value)}")
    if not value.strip():
        raise _custom("store_path", "expected a path like team/app-key, got an empty value")
    if value.startswith("/") or "\\" in value:
        raise _custom(
            "store_path",
            "must be relative to the store, like team/app-key (no leading / and no \\)",
        )
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise _custom(
            "store_path",
            "'..', '.' and empty components are refused: a store path names a secret under "
            "the store, like team/app-key, and may not climb out of it",
        )
    if any(ord(c) < 32 or ord(c) == 127 or c in "?#%" for c in value):
        raise _custom(
            "store_path",
            "control characters, '?', '#' and '%' are refused: the path becomes part of a "
            "file name or a URL",
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _overlap(value: Any) -> Any:
    # `overlap: none` says the platform holds one valid value: a hard cutover.
    if isinstance(value, str) and value.strip().lower() == "none":
        return NO_OVERLAP
    return _duration(value)


# What `overlap: none` reads as: no time at all with both credentials valid.
NO_OVERLAP = timedelta(0)
Overlap = Annotated[timedelta, BeforeValidator(_overlap)]
EnvName = Annotated[str, BeforeValidator(_env_name)]
Url = Annotated[str, BeforeValidator(_url)]
StorePath = Annotated[str, BeforeValidator(_store_path)]


class _Strict(BaseModel):
    # extra="forbid" is what catches typos such as `relaod:` or `helth_check:`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

