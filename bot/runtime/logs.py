"""Structured JSON logs; rotation context (id, secret, consumer, lane) rides on each line.

Call sites pass the context as ``extra=rotation_context(rotation, consumer=...)``
(``bot.domain.log_context``) or the keys by hand. The formatter never prints an exception's
text: an exception passed as a message argument or carried in ``exc_info`` is shown by its
type name only, because texts from back ends (HTTP bodies, driver errors) may echo a
credential. A
:class:`bot.domain.secret_material.SecretMaterial` renders itself redacted.

Third-party libraries (``LIBRARY_LOGGERS``) are held at WARNING unless
``ROTABOT_LIBRARY_LOG_LEVEL`` says otherwise, whatever ``ROTABOT_LOG_LEVEL`` is: below WARNING
they write request bodies (Bolt logs every request that fails signature verification with its
body, ``response_url`` included). The cap sits on the handler as well as on the loggers, so a
library logger that sets its own level (Bolt copies the root's) cannot get past it. Loggers
that write a line per run of a periodic job (``PER_RUN_LOGGERS``) stay at WARNING unless the
library level is DEBUG.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from bot.domain.log_context import CONTEXT_FIELDS

# Top-level logger names of the libraries whose lines are capped at the library level.
LIBRARY_LOGGERS = (
    "slack_bolt", "slack_sdk", "urllib3", "httpx", "httpcore", "hvac", "apscheduler",
    "uvicorn", "starlette", "sqlalchemy", "psycopg", "redis", "asyncio",
    # botocore's endpoint and parser loggers write request and response bodies at DEBUG,
    # SecretString included.
    "botocore", "boto3",
)
# Library loggers that write a line on every run of a periodic job (APScheduler's executors:
# "Running job ..." and "... executed successfully", for the timer job every 2 s): held at
# WARNING even when the library level is INFO, where they would drown everything else; they
# show only when library DEBUG lines are asked for.
PER_RUN_LOGGERS = ("apscheduler.executors",)


def _safe_arg(value: object) -> object:
    # An exception's text may carry a response body or a DSN with a password: type only.
    if isinstance(value, BaseException):
        return type(value).__name__
    return value


def _safe_message(record: logging.LogRecord) -> str:
    msg = str(record.msg) if not isinstance(record.msg, BaseException) else type(
        record.msg).__name__
    args = record.args
    if not args:
        return msg
    if isinstance(args, Mapping):
        safe: object = {k: _safe_arg(v) for k, v in args.items()}
    else:
        safe = tuple(_safe_arg(a) for a in args)
    try:
        return msg % safe
    except (TypeError, ValueError, KeyError):
        return msg


def _scalar(value: object) -> object:
    # Context fields are ids and names; anything else is shown as its str (which for
    # SecretMaterial is redacted) so json.dumps cannot reach into an object.
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, BaseException):
        return type(value).__name__
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _safe_message(record),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = _scalar(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: exception texts from back ends may echo request bodies.
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, default=str)


class LibraryCap(logging.Filter):
    """Drops lines of ``LIBRARY_LOGGERS`` (and their children) below ``level``."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.level:
            return True
        return record.name.partition(".")[0] not in LIBRARY_LOGGERS


def configure_logging(level: str = "INFO", library_level: str = "WARNING") -> None:
    """JSON lines on stderr: ours from ``level``, the libraries' from ``library_level``."""
    cap = logging.getLevelNamesMapping()[library_level.upper()]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(LibraryCap(cap))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(cap)
    per_run = cap if cap <= logging.DEBUG else max(cap, logging.WARNING)
    for name in PER_RUN_LOGGERS:
        logging.getLogger(name).setLevel(per_run)
