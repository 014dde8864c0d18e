"""Field types shared by the catalog models: durations, env-var names, URLs, the strict base."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic_core import PydanticCustomError

from bot.domain.durations import EXPECTED as DURATION_EXPECTED
from bot.domain.durations import parse_duration

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise _custom(
            "env_name",
            "expected the name of an environment variable (letters, digits and _), not a "
            "value: the catalog never holds credentials",
        )
    return value


def _url(value: Any) -> Any:
    if not isinstance(value, str):
        raise _custom("url", f"expected an http(s) URL, got {_describe(value)}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _custom("url", f"expected an http(s) URL, got {value!r}")
    if parts.password is not None:
        # Do not echo the URL: it carries a password.
        raise _custom(
            "url_credential",
            "this URL carries a password: the catalog never holds credentials; drop it from "
            "the URL and give the bot the credential through an environment variable "
            "(a *_env field)",
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
EnvName = Annotated[str, BeforeValidator(_env_name)]
Url = Annotated[str, BeforeValidator(_url)]


class _Strict(BaseModel):
    # extra="forbid" is what catches typos such as `relaod:` or `helth_check:`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

