"""Failure-report intake, pure: signatures, payloads, Alertmanager, flood and replay limits.

Nothing here does I/O or reads a clock of its own: the HTTP route (handlers/alerts_http.py)
hands in the body bytes, the headers and the time, so every rule is tested without a server.

Signature: ``X-Rotabot-Signature: v1=<hex HMAC-SHA256 of timestamp + "." + body>`` keyed with
``ROTABOT_ALERT_SECRET``, ``X-Rotabot-Timestamp`` in unix seconds, accepted within 5 minutes
either way. Several ``v1=`` values separated by commas are accepted (a sender moving to a new
alert secret can sign with both while the bot's setting changes).

The signature does not cover ``X-Rotabot-Delivery``; de-duplication on it stops honest
retries from counting twice, the 5-minute tolerance bounds how long a captured request can be
replayed at all. De-duplication is a ``Deliveries`` port: the route uses the database's
(storage/deliveries.py, shared by every replica and kept across restarts); ``DeliveryLog`` is
the in-process one for tests.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_BODY_BYTES = 64 * 1024
TOLERANCE_SECONDS = 300
SIGNATURE_VERSION = "v1"
MAX_DELIVERY_ID = 200
MAX_ALERTMANAGER_ALERTS = 500  # one Alertmanager group; a bigger one is a misconfiguration
# Objects and arrays inside each other; the deepest valid body (Alertmanager's) needs 4.
MAX_JSON_DEPTH = 32

# Catalog names: letters, digits, '.', '_' and '-' (see the catalog rules).
_NAME_PATTERN = r"^[A-Za-z0-9._-]+$"


# --- signatures ---------------------------------------------------------------------------


class SignatureError(Exception):
    """Why a request is not authentic; the text names headers, never their values."""


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The ``X-Rotabot-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def verify_signature(
    secrets: str | Sequence[str],
    *,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance: float = TOLERANCE_SECONDS,
) -> str:
    """The key whose ``v1=`` signature matches within the time tolerance; SignatureError
    unless one does."""
    keys = [secrets] if isinstance(secrets, str) else list(secrets)
    keys = [k for k in keys if k]
    if not keys:
        raise SignatureError("alert intake has no secret configured")
    if not timestamp:
        raise SignatureError("missing X-Rotabot-Timestamp header")
    ts = timestamp.strip()
    if not (ts.isascii() and ts.isdigit() and len(ts) <= 12):
        raise SignatureError("X-Rotabot-Timestamp must be unix seconds")
    if abs(now - int(ts)) > tolerance:
        raise SignatureError(
            f"X-Rotabot-Timestamp is more than {int(tolerance // 60)} minutes away from the "
            "bot's clock (stale, replayed, or a clock that needs NTP)"
        )
    if not signature:
        raise SignatureError("missing X-Rotabot-Signature header")
    offered = [
        part.strip()[len(SIGNATURE_VERSION) + 1 :]
        for part in signature.split(",")
        if part.strip().startswith(f"{SIGNATURE_VERSION}=")
    ]
    if not offered:
        raise SignatureError("X-Rotabot-Signature must look like v1=<hex>")
    for key in keys:
        expected = sign(key, ts, body)[len(SIGNATURE_VERSION) + 1 :]
        # compare_digest on every candidate: no early exit that leaks timing.
        if any(hmac.compare_digest(expected.encode(), o.encode("ascii", "replace"))
               for o in offered):
            return key
    raise SignatureError("X-Rotabot-Signature does not match the body and timestamp")


# --- payloads -----------------------------------------------------------------------------


class SchemaError(Exception):
    """The body does not match the schema; ``field`` names where (e.g. ``status_code``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class AlertPayload(BaseModel):
    """The JSON body of ``POST /alerts``. Unknown fields are refused so a typo is named."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    consumer: str = Field(min_length=1, max_length=100, pattern=_NAME_PATTERN)
    secret: str | None = Field(default=None, min_length=1, max_length=100, pattern=_NAME_PATTERN)
    lane: str | None = Field(default=None, min_length=1, max_length=50)
    status_code: int | None = Field(default=None, ge=100, le=599)
    error: str | None = Field(default=None, max_length=1000)
    message: str | None = Field(default=None, max_length=8000)
    occurred_at: datetime | None = None  # ISO 8601 or unix seconds
    source: str | None = Field(default=None, min_length=1, max_length=100)


@dataclass(frozen=True)
class AlertReport:
    """One failure report, whichever format it came in."""

    consumer: str
    secret: str | None = None
    lane: str | None = None
    status_code: int | None = None
    error: str | None = None
    message: str | None = None
    occurred_at: datetime | None = None
    source: str | None = None

    @classmethod
    def from_payload(cls, p: AlertPayload) -> AlertReport:
        occurred = p.occurred_at
        if occurred is not None and occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=UTC)  # a timestamp without zone is taken as UTC
        return cls(
            consumer=p.consumer,
            secret=p.secret,
            lane=p.lane,
            status_code=p.status_code,
            error=p.error,
            message=p.message,
            occurred_at=occurred,
            source=p.source,
        )


@dataclass(frozen=True)
class ParsedBody:
    reports: tuple[AlertReport, ...]
    alertmanager: bool = False
    resolved_ignored: int = 0  # Alertmanager "resolved" alerts: they resolve nothing by themselves

    @property
    def source(self) -> str | None:
        return next((r.source for r in self.reports if r.source), None)


def parse_body(body: bytes) -> ParsedBody:
    """A rotabot report or an Alertmanager webhook payload; SchemaError names the bad field."""
    if json_depth_exceeds(body, MAX_JSON_DEPTH):
        # Checked before json.loads, whose recursion a deeply nested body would exhaust.
        raise SchemaError(
            "body", f"nests objects and arrays deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise SchemaError("body", "not valid JSON") from None
    if not isinstance(data, dict):
        raise SchemaError("body", "must be a JSON object")
    if is_alertmanager(data):
        return _parse_alertmanager(data)
    return ParsedBody((AlertReport.from_payload(_validate(data)),))


# One token at a time: a string (to its closing quote, or to the end when it has none, so a
# scan never restarts inside one and stays linear), or a bracket.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether ``body``, read as JSON, nests objects and arrays more than ``limit`` deep.

    Brackets inside strings do not count. Works on any bytes (invalid JSON included), without
    recursion, in one pass over the body."""
    depth = 0
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth = max(depth - 1, 0)
    return False


def is_alertmanager(data: Mapping[str, Any]) -> bool:
    return isinstance(data.get("alerts"), list) and ("version" in data or "groupKey" in data)


def _validate(data: Mapping[str, Any], prefix: str = "") -> AlertPayload:
    try:
        return AlertPayload.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SchemaError(prefix + _loc(first.get("loc", ())), _problem(first)) from None


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    # A field name comes from the sender's own body (extra="forbid"); keep the answer short.
    return out[:100] or "body"


def _problem(error: Mapping[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field (consumer, secret, lane, status_code, error, message, " \
               "occurred_at, source)"
    if kind == "string_pattern_mismatch":
        return "may only hold letters, digits, '.', '_' and '-'"
    ctx = error.get("ctx") or {}
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number (an HTTP status such as 401)"
    if kind in ("string_type",):
        return "must be text"
    if kind in ("datetime_parsing", "datetime_type", "datetime_from_date_parsing"):
        return "must be a date and time such as 2026-12-01T09:00:00Z"
    if kind in ("string_too_long", "too_long"):
        return f"is too long (at most {ctx.get('max_length', '?')})"
    if kind in ("string_too_short", "too_short"):
        return f"is too short (at least {ctx.get('min_length', '?')})"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bounds = {"greater_than_equal": "at least", "less_than_equal": "at most",
                  "greater_than": "more than", "less_than": "less than"}[kind]
        limit = next(iter(ctx.values()), "?")
        return f"must be {bounds} {limit}"
    if kind in ("list_type", "dict_type", "model_type"):
        return {"list_type": "must be a list", "dict_type": "must be an object",
                "model_type": "must be an object"}[kind]
    # pydantic's own message describes the rule (type, bounds), not the value given.
    return "is invalid: " + str(error.get("msg", "")).lower()


class _AmAlert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: datetime | None = None  # Alertmanager's spelling


class _AmPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str | None = None
    status: str | None = None
    receiver: str | None = None
    alerts: list[_AmAlert] = Field(max_length=MAX_ALERTMANAGER_ALERTS)


_ZERO_TIME_YEAR = 1  # Alertmanager sends 0001-01-01T00:00:00Z for "unset"


def _parse_alertmanager(data: Mapping[str, Any]) -> ParsedBody:
    """Each firing alert becomes one report; labels ``consumer`` (required), ``secret``,
    ``lane``, ``status_code`` and ``error`` map to the fields of the same name, annotations
    ``summary``/``description``/``message`` become the message."""
    try:
        payload = _AmPayload.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SchemaError(_loc(first.get("loc", ())), _problem(first)) from None
    source = f"alertmanager/{payload.receiver}" if payload.receiver else "alertmanager"
    reports: list[AlertReport] = []
    resolved = 0
    for i, am in enumerate(payload.alerts):
        status = (am.status or payload.status or "firing").lower()
        if status != "firing":
            resolved += 1
            continue
        prefix = f"alerts[{i}]."
        if "consumer" not in am.labels:
            raise SchemaError(prefix + "labels.consumer", "is required")
        texts = [am.annotations.get(k) for k in ("summary", "description", "message")]
        alertname = am.labels.get("alertname")
        message = " ".join(t for t in (alertname, *texts) if t)[:8000] or None
        starts = am.startsAt if am.startsAt and am.startsAt.year > _ZERO_TIME_YEAR else None
        fields: dict[str, Any] = {
            "consumer": am.labels["consumer"],
            "secret": am.labels.get("secret"),
            "lane": am.labels.get("lane"),
            "status_code": am.labels.get("status_code") or am.annotations.get("status_code"),
            "error": am.labels.get("error") or am.annotations.get("error"),
            "message": message,
            "occurred_at": starts,
            "source": source[:100],
        }
        try:
            checked = AlertPayload.model_validate({k: v for k, v in fields.items() if v})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = _loc(first.get("loc", ()))
            where = "annotations" if name == "message" else "labels"
            raise SchemaError(f"{prefix}{where}.{name}", _problem(first)) from None
        reports.append(AlertReport.from_payload(checked))
    return ParsedBody(tuple(reports), alertmanager=True, resolved_ignored=resolved)


# --- flood control ------------------------------------------------------------------------


def rate_limit_key(client: str, signing_key: str) -> str:
    """The flood limit's bucket for a request: the sender's address and the key that signed
    it (a digest, so the limiter never holds the key). Never the body's ``source``: a sender
    chooses that, and renaming it would start a fresh bucket."""
    digest = hashlib.sha256(signing_key.encode("utf-8")).hexdigest()[:16]
    return f"{client} key:{digest}"


class RateLimiter:
    """A token bucket per key (``rate_limit_key``): ``burst`` reports at once, then ``rate``
    per second.

    ``take`` answers None (go ahead) or the seconds to wait. ``clock`` is monotonic seconds,
    injectable so tests move time instead of sleeping. At most ``max_sources`` buckets are
    kept; the least recently used is dropped first (it would have refilled anyway).
    """

    def __init__(
        self,
        *,
        rate: float = 20.0,
        burst: float = 1000.0,
        clock: Callable[[], float] = time.monotonic,
        max_sources: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._clock = clock
        self._max = max_sources
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self._lock = threading.Lock()

    def take(self, key: str, cost: float = 1.0) -> float | None:
        # A batch larger than the bucket could never pass; let it through on a full bucket.
        cost = min(max(cost, 0.0), self.burst)
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                self._trim()
                return None
            self._buckets[key] = (tokens, now)
            self._trim()
            return (cost - tokens) / self.rate

    def _trim(self) -> None:
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)


def retry_after_header(seconds: float) -> str:
    """Whole seconds, at least 1 (RFC 9110 delta-seconds)."""
    return str(max(1, math.ceil(seconds)))


class DeliveryInFlight(Exception):
    """The delivery id is reserved by a request still being processed (here or on another
    replica): whether it will be counted is not known yet, so the sender should retry."""


class Deliveries(Protocol):
    """De-duplication of ``X-Rotabot-Delivery`` ids: a retried delivery is answered, not counted.

    The route ``reserve``\\s an id before it processes a request (False: that delivery was
    taken already, a duplicate), then marks it ``done`` when the alert was taken, or
    ``release``\\s it when the request failed, so the sender's retry is processed. A shared
    implementation may raise DeliveryInFlight while another request holds the id and lets an
    unfinished reservation lapse after a short lease (its process died), so a retry is never
    answered as a duplicate of an alert that was not stored.
    """

    def reserve(self, delivery_id: str) -> bool: ...

    def done(self, delivery_id: str) -> None: ...

    def release(self, delivery_id: str) -> None: ...


class DeliveryLog:
    """Deliveries in this process's memory: ids seen within ``ttl`` seconds.

    Holds for one process only (a retry landing on another replica, or after a restart, is
    counted again) and answers False for an unfinished reservation too; the bot uses
    storage/deliveries.py, this one serves unit tests and tools.
    """

    def __init__(
        self,
        *,
        ttl: float = 2 * TOLERANCE_SECONDS,  # outlives the signature tolerance
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 100_000,
    ) -> None:
        self.ttl = ttl
        self._clock = clock
        self._max = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()  # id -> expiry, oldest first
        self._lock = threading.Lock()

    def reserve(self, delivery_id: str) -> bool:
        with self._lock:
            now = self._clock()
            while self._seen:
                oldest, expires = next(iter(self._seen.items()))
                if expires > now:
                    break
                del self._seen[oldest]
            if delivery_id in self._seen:
                return False
            self._seen[delivery_id] = now + self.ttl
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
            return True

    def done(self, delivery_id: str) -> None:
        pass  # the whole ttl was reserved already: a lost process loses its memory anyway

    def release(self, delivery_id: str) -> None:
        with self._lock:
            self._seen.pop(delivery_id, None)

    def __len__(self) -> int:
        return len(self._seen)


def check_delivery_id(value: str | None) -> str | None:
    """The X-Rotabot-Delivery header, or None; SchemaError when it cannot be an id."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if len(value) > MAX_DELIVERY_ID or not value.isprintable() or not value.isascii():
        raise SchemaError(
            "X-Rotabot-Delivery", f"must be printable ASCII of at most {MAX_DELIVERY_ID} chars"
        )
    return value
