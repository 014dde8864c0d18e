"""Failure classification: exception type, HTTP status and provider error text to a failure class.

Principle 4 (fail loudly and usefully): every failure a consumer, store or issuer reports gets
one of five classes and a short reason a person can act on. This is domain code: it imports no
HTTP, Vault, Redis or SQL library. Exceptions are recognised by the *names* in their MRO
(``module.QualName`` strings), so a library that is not installed simply never matches.

Order of evidence, first hit wins:

1. Exception type: the exception, then its ``__cause__``/``__context__`` chain, outermost first
   (the outermost typed error is what the library chose to report; an inner ``__context__`` may
   be an unrelated error that happened to be handled nearby). Within one exception the MRO is
   walked most-derived first, so ``redis.exceptions.AuthenticationError`` wins over its base
   ``redis.exceptions.ConnectionError``. Some types (``psycopg.OperationalError``) say nothing
   by themselves; their row lets the error text decide.
2. HTTP status (given, or found on ``exc.response.status_code`` as on ``httpx.HTTPStatusError``).
   Two statuses yield to a matching provider text: 400 to authentication or rate-limit text
   (Google reports ``API_KEY_INVALID`` as 400) and 403 to rate-limit text (GitHub's secondary
   rate limit is a 403).
3. Provider error text patterns over ``error``, ``message`` and the exceptions' text.

502, 503 and 504 are classed as ``network``: a gateway or the service itself could not serve the
request right now, so neither the credential nor the request was judged; for the person on call
that is reachability, not authentication or payload. Vault/OpenBao answer 503 while sealed
(``hvac.exceptions.VaultDown``); that is reported the same way, and the reason says
``Vault sealed`` when the body says so. 500 stays ``unknown``: it says the server broke, not why.

A reason is built only from table labels, status numbers and exception class names, never from
the text it was given, so a secret inside a message cannot reach a Slack message or a log line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum


class FailureClass(StrEnum):
    AUTHENTICATION = "authentication"
    RATE_LIMIT = "rate-limit"
    PAYLOAD = "payload"
    NETWORK = "network"
    UNKNOWN = "unknown"
    # From consumers' own reports (bot/domain/evidence.py), never from classifying an error:
    DRIFT = "drift"  # the old credential after the consumer's lane moved, or the switch
    SILENT = "silent"  # a consumer on a heartbeat stopped reporting while a rotation runs


@dataclass(frozen=True)
class Classification:
    failure_class: FailureClass
    reason: str  # short words, e.g. "HTTP 401 invalid_api_key"; never a secret value
    retry_after_seconds: float | None = None


@dataclass(frozen=True)
class TextRule:
    pattern: re.Pattern[str]
    failure_class: FailureClass
    label: str  # what the reason says; never the matched text itself


@dataclass(frozen=True)
class ExceptionRule:
    failure_class: FailureClass
    text_decides: bool = False  # the type is too broad; a text rule's class wins when one matches


@dataclass(frozen=True)
class StatusRule:
    failure_class: FailureClass
    # Providers overload some statuses; a matching text rule of one of these classes wins.
    overridden_by: frozenset[FailureClass] = frozenset()


_A = FailureClass.AUTHENTICATION
_R = FailureClass.RATE_LIMIT
_P = FailureClass.PAYLOAD
_N = FailureClass.NETWORK
_U = FailureClass.UNKNOWN


def _rule(pattern: str, failure_class: FailureClass, label: str | None = None) -> TextRule:
    return TextRule(re.compile(pattern, re.IGNORECASE), failure_class, label or pattern)


# Provider error text. Table order is priority: credential codes first, so OpenAI's 401 body
# (type invalid_request_error, code invalid_api_key) reads as invalid_api_key; the generic
# invalid_request_error comes last.
TEXT_RULES: tuple[TextRule, ...] = (
    # authentication / authorization
    _rule(r"invalid_api_key", _A),
    _rule(r"incorrect api key", _A, "incorrect API key"),
    _rule(r"API_KEY_INVALID", _A),  # Google APIs, under HTTP 400
    _rule(r"api key not valid", _A, "API key not valid"),
    _rule(r"authentication_error", _A),  # Anthropic
    _rule(r"password authentication failed", _A),  # PostgreSQL
    _rule(r"\bWRONGPASS\b", _A, "WRONGPASS"),  # Redis ACL
    _rule(r"\bNOAUTH\b", _A, "NOAUTH"),  # Redis, AUTH required
    _rule(r"\bNOPERM\b", _A, "NOPERM"),  # Redis ACL, command or key not allowed
    _rule(r"invalid username-password pair", _A),  # Redis WRONGPASS, code stripped
    _rule(r"authentication required", _A),  # Redis NOAUTH, code stripped
    _rule(r"permission denied", _A),  # Vault/OpenBao 403, PostgreSQL grants
    _rule(
        r"\b(invalid_auth|not_authed|token_revoked|token_expired|account_inactive)\b",
        _A,
        "Slack token rejected",
    ),
    _rule(r"\binvalid token\b", _A, "invalid token"),
    # rate limits and quotas (insufficient_quota: billing, so waiting alone will not fix it)
    _rule(r"insufficient_quota", _R),
    _rule(r"rate_limit_exceeded", _R),
    _rule(r"secondary rate limit", _R),  # GitHub, under HTTP 403
    _rule(r"\bratelimited\b", _R, "ratelimited"),  # Slack Web API
    _rule(r"rate[ _-]?limit", _R, "rate limit"),
    _rule(r"too many requests", _R),
    # payload problems with a specific name
    _rule(r"context_length_exceeded", _P),
    _rule(r"request[_ ]too[_ ]large", _P, "request too large"),
    _rule(r"\b(invalid_blocks|msg_too_long|invalid_arguments)\b", _P, "Slack rejected payload"),
    # network
    _rule(r"Vault is sealed", _N, "Vault sealed"),
    _rule(r"Name or service not known", _N),
    _rule(r"Temporary failure in name resolution", _N),
    _rule(r"nodename nor servname provided", _N, "name resolution failed"),
    _rule(r"getaddrinfo failed", _N, "name resolution failed"),
    _rule(r"Failed to resolve", _N, "name resolution failed"),
    _rule(r"Connection refused", _N),
    _rule(r"certificate verify failed", _N, "TLS certificate verify failed"),
    _rule(r"\[SSL(: [A-Z0-9_]+)?\]", _N, "TLS failure"),
    _rule(r"\btimed out\b", _N, "timed out"),
    _rule(r"timeout expired", _N, "timed out"),  # libpq connect_timeout
    _rule(r"Connection reset", _N),
    _rule(r"Network is unreachable", _N),
    _rule(r"No route to host", _N),
    _rule(r"server closed the connection unexpectedly", _N),
    _rule(r"Server disconnected", _N),
    # generic payload last
    _rule(r"invalid_request_error", _P),
)

# Keyed by ``module.QualName`` as found in an exception's MRO; one row per library type.
EXCEPTION_RULES: Mapping[str, ExceptionRule] = {
    # httpx (NetworkError covers ConnectError, ReadError, WriteError, CloseError)
    "httpx.NetworkError": ExceptionRule(_N),
    "httpx.TimeoutException": ExceptionRule(_N),
    "httpx.RemoteProtocolError": ExceptionRule(_N),
    "httpx.ProxyError": ExceptionRule(_N),
    "httpx.DecodingError": ExceptionRule(_P),
    # requests (what hvac raises underneath) and aiohttp (the async Slack client)
    "requests.exceptions.ConnectionError": ExceptionRule(_N),
    "requests.exceptions.Timeout": ExceptionRule(_N),
    "aiohttp.client_exceptions.ClientConnectionError": ExceptionRule(_N),
    # hvac: VaultDown is 503, sealed or standby; see the module docstring
    "hvac.exceptions.Unauthorized": ExceptionRule(_A),
    "hvac.exceptions.Forbidden": ExceptionRule(_A),
    "hvac.exceptions.RateLimitExceeded": ExceptionRule(_R),
    "hvac.exceptions.InvalidRequest": ExceptionRule(_P),
    "hvac.exceptions.VaultDown": ExceptionRule(_N),
    "hvac.exceptions.BadGateway": ExceptionRule(_N),
    # redis-py
    "redis.exceptions.AuthenticationError": ExceptionRule(_A),
    "redis.exceptions.AuthenticationWrongNumberOfArgsError": ExceptionRule(_A),
    "redis.exceptions.AuthorizationError": ExceptionRule(_A),
    "redis.exceptions.NoPermissionError": ExceptionRule(_A),
    "redis.exceptions.TimeoutError": ExceptionRule(_N),
    "redis.exceptions.ConnectionError": ExceptionRule(_N),
    "redis.exceptions.DataError": ExceptionRule(_P),
    # psycopg: OperationalError is a bad password, a refused connection, a timeout...
    "psycopg.OperationalError": ExceptionRule(_U, text_decides=True),
    "psycopg.errors.InvalidPassword": ExceptionRule(_A),
    "psycopg.errors.InvalidAuthorizationSpecification": ExceptionRule(_A),
    "psycopg.errors.InsufficientPrivilege": ExceptionRule(_A),
    "psycopg.DataError": ExceptionRule(_P),
    # standard library
    "ssl.SSLCertVerificationError": ExceptionRule(_N),
    "ssl.SSLError": ExceptionRule(_N),
    "socket.gaierror": ExceptionRule(_N),
    "builtins.ConnectionError": ExceptionRule(_N),  # refused, reset, aborted, broken pipe
    "builtins.TimeoutError": ExceptionRule(_N),
}

STATUS_RULES: Mapping[int, StatusRule] = {
    400: StatusRule(_P, overridden_by=frozenset({_A, _R})),
    401: StatusRule(_A),
    403: StatusRule(_A, overridden_by=frozenset({_R})),
    407: StatusRule(_A),  # proxy authentication
    408: StatusRule(_N),
    413: StatusRule(_P),
    414: StatusRule(_P),
    415: StatusRule(_P),
    422: StatusRule(_P),
    429: StatusRule(_R),
    502: StatusRule(_N),
    503: StatusRule(_N),
    504: StatusRule(_N),
}

_MAX_CHAIN = 16  # a cause chain this deep is a loop or a bug; stop rather than spin


def classify(
    *,
    status_code: int | None = None,
    error: str | None = None,
    message: str | None = None,
    exception: BaseException | None = None,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Classification:
    """Classify one failure from whatever evidence the caller has.

    ``error`` is a provider's error code (``invalid_api_key``, Slack's ``ratelimited``),
    ``message`` its free text; both are only pattern-matched, never echoed. ``now`` is used to
    turn an HTTP-date ``Retry-After`` into seconds (default: the system clock).
    """
    chain = list(_exception_chain(exception))
    carried = _response_of(chain)
    if status_code is None:
        status_code = carried.status_code
    if headers is None:
        headers = carried.headers
    retry_after = _retry_after(headers, now)

    texts = [t for t in (error, message, carried.body) if t]
    for exc in chain:
        texts.append(_safe_str(exc))
        # redis-py strips the error code (WRONGPASS, NOAUTH) from the message and keeps it here.
        code = getattr(exc, "status_code", None)
        if isinstance(code, str):
            texts.append(code)

    for exc in chain:
        rule = _exception_rule(exc)
        if rule is None:
            continue
        name = _type_name(type(exc))
        if rule.text_decides:
            text_rule = _first_text_rule(texts)
            if text_rule is not None:
                return Classification(
                    text_rule.failure_class, f"{name}: {text_rule.label}", retry_after
                )
            return Classification(rule.failure_class, name, retry_after)
        detail = _first_text_rule(texts, among=frozenset({rule.failure_class}))
        reason = f"{name}: {detail.label}" if detail else name
        return Classification(rule.failure_class, reason, retry_after)

    text_rule = _first_text_rule(texts)
    if status_code is not None:
        status_rule = STATUS_RULES.get(status_code)
        if status_rule is not None:
            override = _first_text_rule(texts, among=status_rule.overridden_by)
            if override is not None:
                return Classification(
                    override.failure_class, f"HTTP {status_code} {override.label}", retry_after
                )
            detail = _first_text_rule(texts, among=frozenset({status_rule.failure_class}))
            reason = f"HTTP {status_code} {detail.label}" if detail else f"HTTP {status_code}"
            return Classification(status_rule.failure_class, reason, retry_after)

    if text_rule is not None:
        prefix = f"HTTP {status_code} " if status_code is not None else ""
        return Classification(text_rule.failure_class, prefix + text_rule.label, retry_after)

    # Unknown, but still say what was seen: a status number or an exception type is safe.
    if status_code is not None:
        return Classification(_U, f"HTTP {status_code}", retry_after)
    if chain:
        return Classification(_U, _type_name(type(chain[0])), retry_after)
    return Classification(_U, "no details", retry_after)


def _exception_chain(exc: BaseException | None) -> Iterator[BaseException]:
    """The exception, then what caused it: ``__cause__`` when set, else ``__context__``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen and len(seen) < _MAX_CHAIN:
        seen.add(id(exc))
        yield exc
        # `raise X from None` sets __suppress_context__: the author said the context is noise
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def _type_name(cls: type) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _exception_rule(exc: BaseException) -> ExceptionRule | None:
    for cls in type(exc).__mro__:
        rule = EXCEPTION_RULES.get(f"{cls.__module__}.{cls.__qualname__}")
        if rule is not None:
            return rule
    return None


def _first_text_rule(
    texts: list[str], among: frozenset[FailureClass] | None = None
) -> TextRule | None:
    """The first text rule in table order (optionally of one of ``among``) matching any text."""
    if among is not None and not among:
        return None
    for rule in TEXT_RULES:
        if among is not None and rule.failure_class not in among:
            continue
        if any(rule.pattern.search(text) for text in texts):
            return rule
    return None


def _safe_str(exc: BaseException) -> str:
    # A library's __str__ can itself fail (half-initialised exception); never let that mask
    # the failure being classified.
    try:
        return str(exc)
    except Exception:
        return ""


@dataclass(frozen=True)
class _CarriedResponse:
    status_code: int | None = None
    headers: Mapping[str, str] | None = None
    body: str | None = None


_MAX_BODY = 64 * 1024  # enough for any error body; bounds the regex work on a runaway response


def _response_of(chain: list[BaseException]) -> _CarriedResponse:
    """Status, headers and body an exception carries, duck-typed (httpx.HTTPStatusError etc.)."""
    for exc in chain:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if not isinstance(status, int):
            continue
        headers = getattr(response, "headers", None)
        try:
            # A streamed httpx response that was never read raises here; the body is optional.
            body = getattr(response, "text", None)
        except Exception:
            body = None
        return _CarriedResponse(
            status,
            headers if isinstance(headers, Mapping) else None,
            body[:_MAX_BODY] if isinstance(body, str) else None,
        )
    return _CarriedResponse()


def _retry_after(headers: Mapping[str, str] | None, now: datetime | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date (RFC 9110 10.2.3)."""
    if not headers:
        return None
    value = next(
        (v for k, v in headers.items() if isinstance(k, str) and k.lower() == "retry-after"),
        None,
    )
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT by definition
        when = when.replace(tzinfo=UTC)
    reference = now if now is not None else datetime.now(UTC)
    return max(0.0, (when - reference).total_seconds())
