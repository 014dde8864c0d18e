"""Failure-report intake, pure: signatures, payloads, Alertmanager, flood and replay limits.

Nothing here does I/O or reads a clock of its own: the HTTP route (handlers/alerts_http.py)
hands in the body bytes, the headers and the time, so every rule is tested without a server.

Signature: ``X-Rotabot-Signature: v1=<hex HMAC-SHA256 of timestamp + "." + body>`` keyed with
``ROTABOT_ALERT_SECRET``, ``X-Rotabot-Timestamp`` in unix seconds, accepted within 5 minutes
either way. Several ``v1=`` values separated by commas are accepted (a sender moving to a new
alert secret can sign with both while the bot's setting changes).

Alertmanager cannot compute that HMAC, so it authenticates another way (``verify_authorization``):
``Authorization: Bearer <token>`` (or ``Basic`` with the token as the password), the token one
of ``ROTABOT_ALERTMANAGER_TOKEN``'s, compared in constant time. A request in that mode must carry
an Alertmanager webhook payload, version 4 (``parse_alertmanager_notification``); it is taken
alert by alert, de-duplicated on ``groupKey``, ``fingerprint``, status and ``startsAt``
(``AmAlert.key``) instead of ``X-Rotabot-Delivery``, and its resolved alerts resolve the rotabot
alerts their firing opened.

The signature does not cover ``X-Rotabot-Delivery``; de-duplication on it stops honest
retries from counting twice, the 5-minute tolerance bounds how long a captured request can be
replayed at all. De-duplication is a ``Deliveries`` port: the route uses the database's
(storage/deliveries.py, shared by every replica and kept across restarts); ``DeliveryLog`` is
the in-process one for tests.
"""

from __future__ import annotations

import base64
import binascii
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
from enum import Enum
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


def parse_tokens(raw: str | None) -> tuple[str, ...]:
    """``ROTABOT_ALERTMANAGER_TOKEN``: one or more tokens separated by commas or whitespace
    (several while Alertmanager's own token is being rotated), in order, without repeats."""
    out: list[str] = []
    for token in re.split(r"[\s,]+", raw or ""):
        if token and token not in out:
            out.append(token)
    return tuple(out)


def verify_authorization(tokens: Sequence[str], authorization: str | None) -> str:
    """The configured token that ``authorization`` carries: ``Bearer <token>``, or ``Basic``
    with the token as the password (the user name is not checked). SignatureError otherwise;
    its text never holds what was sent.

    Digests of every configured token are compared with compare_digest, with no early exit,
    so neither a token's length nor which one matched shows in the timing."""
    keys = [t for t in tokens if t]
    if not keys:
        raise SignatureError("Alertmanager intake has no token configured")
    if not authorization or not authorization.strip():
        raise SignatureError("missing Authorization header")
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        offered = credentials
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise SignatureError(
                "Authorization: Basic must carry base64 of user:password") from None
        _, sep, offered = decoded.partition(":")
        if not sep:
            raise SignatureError("Authorization: Basic must carry base64 of user:password")
    else:
        raise SignatureError("Authorization must use the Bearer or Basic scheme")
    if not offered:
        raise SignatureError("Authorization carries no token")
    digest = hashlib.sha256(offered.encode("utf-8", "replace")).digest()
    found: str | None = None
    for key in keys:
        same = hmac.compare_digest(hashlib.sha256(key.encode("utf-8")).digest(), digest)
        if same and found is None:
            found = key
    if found is None:
        raise SignatureError(
            "Authorization does not carry a token rotabot accepts (ROTABOT_ALERTMANAGER_TOKEN)")
    return found


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


def parse_body(body: bytes, labels: Mapping[str, str] | None = None) -> ParsedBody:
    """A rotabot report or an Alertmanager webhook payload (its labels named as ``labels``
    maps them, see DEFAULT_AM_LABELS); SchemaError names the bad field."""
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
        return _parse_alertmanager(data, labels)
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
    fingerprint: str | None = Field(default=None, max_length=64, pattern=r"^[0-9A-Fa-f]+$")


class _AmPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str | None = None
    groupKey: str | None = Field(default=None, max_length=MAX_BODY_BYTES)
    status: str | None = None
    receiver: str | None = None
    alerts: list[_AmAlert] = Field(max_length=MAX_ALERTMANAGER_ALERTS)


_ZERO_TIME_YEAR = 1  # Alertmanager sends 0001-01-01T00:00:00Z for "unset"


# Which Alertmanager labels name the consumer, the secret and the lane; the catalog's
# `defaults.alertmanager.labels` overrides any of them.
DEFAULT_AM_LABELS: Mapping[str, str] = {"consumer": "consumer", "secret": "secret",
                                        "lane": "lane"}


def _am_payload(data: Mapping[str, Any]) -> _AmPayload:
    try:
        return _AmPayload.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise SchemaError(_loc(first.get("loc", ())), _problem(first)) from None


def _am_report(
    am: _AmAlert, i: int, source: str, labels: Mapping[str, str] | None
) -> AlertReport:
    """One Alertmanager alert as a report: the mapped labels give consumer (required), secret
    and lane; labels ``status_code`` and ``error`` those fields; annotations ``summary``,
    ``description`` and ``message`` (after ``alertname``) the message."""
    names = {**DEFAULT_AM_LABELS, **(labels or {})}
    prefix = f"alerts[{i}]."
    if names["consumer"] not in am.labels:
        raise SchemaError(f"{prefix}labels.{names['consumer']}", "is required")
    texts = [am.annotations.get(k) for k in ("summary", "description", "message")]
    alertname = am.labels.get("alertname")
    message = " ".join(t for t in (alertname, *texts) if t)[:8000] or None
    starts = am.startsAt if am.startsAt and am.startsAt.year > _ZERO_TIME_YEAR else None
    fields: dict[str, Any] = {
        "consumer": am.labels[names["consumer"]],
        "secret": am.labels.get(names["secret"]),
        "lane": am.labels.get(names["lane"]),
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
        label = names.get(name, name) if where == "labels" else name
        raise SchemaError(f"{prefix}{where}.{label}", _problem(first)) from None
    return AlertReport.from_payload(checked)


def _parse_alertmanager(
    data: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> ParsedBody:
    """A signed Alertmanager payload (a connector forwarding one): each firing alert becomes
    one report (see _am_report); resolved ones are only counted."""
    payload = _am_payload(data)
    source = f"alertmanager/{payload.receiver}" if payload.receiver else "alertmanager"
    reports: list[AlertReport] = []
    resolved = 0
    for i, am in enumerate(payload.alerts):
        status = (am.status or payload.status or "firing").lower()
        if status != "firing":
            resolved += 1
            continue
        reports.append(_am_report(am, i, source, labels))
    return ParsedBody(tuple(reports), alertmanager=True, resolved_ignored=resolved)


# --- Alertmanager as the sender (Authorization header) -------------------------------------

AM_STATUSES = ("firing", "resolved")


@dataclass(frozen=True)
class AmAlert:
    """One alert of an Alertmanager notification. ``report.source`` is
    ``alertmanager/<receiver>#<fingerprint>``: the stored alert keeps it, so the alert's
    resolution finds the rotabot alert its firing opened."""

    index: int
    status: str  # "firing" or "resolved"
    fingerprint: str
    report: AlertReport
    key: str  # the de-duplication key (see alertmanager_key)

    @property
    def firing(self) -> bool:
        return self.status == "firing"


@dataclass(frozen=True)
class AmNotification:
    group_key: str
    receiver: str | None
    alerts: tuple[AmAlert, ...]


def alertmanager_key(group_key: str, fingerprint: str, status: str, starts_at: str) -> str:
    """The Deliveries key of one alert of a notification: its group, fingerprint, status and
    start. Alertmanager sends a group again on every change and every repeat_interval, and
    retries a notification after a 5xx: an alert already taken is then a duplicate, while
    the same alert firing again (a new start) or resolving is new. A digest: the key holds no
    label value, and any group key fits the column."""
    raw = "\x00".join((group_key, fingerprint.lower(), status, starts_at))
    return "am:" + hashlib.sha256(raw.encode("utf-8")).hexdigest()


def alertmanager_source(receiver: str | None, fingerprint: str) -> str:
    """The stored ``source`` of an alert from Alertmanager; the fingerprint is never cut."""
    tail = "#" + fingerprint.lower()
    head = f"alertmanager/{receiver}" if receiver else "alertmanager"
    return head[: 100 - len(tail)] + tail


def parse_alertmanager_notification(
    body: bytes, labels: Mapping[str, str] | None = None
) -> AmNotification:
    """An Alertmanager webhook notification (version 4), alert by alert, firing and resolved
    alike: each needs ``fingerprint`` and the consumer label (``labels`` maps the names, see
    DEFAULT_AM_LABELS). SchemaError names the bad field; a body that is not such a payload is
    refused as a whole."""
    if json_depth_exceeds(body, MAX_JSON_DEPTH):
        raise SchemaError(
            "body", f"nests objects and arrays deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise SchemaError("body", "not valid JSON") from None
    if not isinstance(data, dict) or not is_alertmanager(data):
        raise SchemaError(
            "body", "must be an Alertmanager webhook payload (version 4) when the request is "
                    "authenticated with Authorization; connectors sign with X-Rotabot-Signature")
    payload = _am_payload(data)
    if payload.version != "4":
        raise SchemaError("version", "must be \"4\" (Alertmanager's webhook payload version)")
    if not payload.groupKey:
        raise SchemaError("groupKey", "is required")
    alerts: list[AmAlert] = []
    for i, am in enumerate(payload.alerts):
        status = (am.status or payload.status or "").lower()
        if status not in AM_STATUSES:
            raise SchemaError(f"alerts[{i}].status", "must be firing or resolved")
        if not am.fingerprint:
            raise SchemaError(f"alerts[{i}].fingerprint", "is required")
        source = alertmanager_source(payload.receiver, am.fingerprint)
        report = _am_report(am, i, source, labels)
        starts = am.startsAt.isoformat() if am.startsAt is not None else ""
        key = alertmanager_key(payload.groupKey, am.fingerprint, status, starts)
        alerts.append(AmAlert(i, status, am.fingerprint.lower(), report, key))
    return AmNotification(payload.groupKey, payload.receiver, tuple(alerts))


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


class KeyState(Enum):
    """What a group-committed batch found for one de-duplication key (a delivery id or an
    Alertmanager alert's key), inside the batch's transaction."""

    TAKEN = "taken"  # held by this transaction; kept for the ttl once it commits
    DUPLICATE = "duplicate"  # taken and finished before: answered, not counted
    IN_FLIGHT = "in-flight"  # held by a request not finished yet: the sender retries


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
