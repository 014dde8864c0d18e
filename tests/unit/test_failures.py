"""Failure classification over real error shapes, as providers and libraries produce them."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import hvac.exceptions
import hvac.utils
import psycopg
import pytest
import redis.exceptions
import sqlalchemy.exc
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.failures import (
    EXCEPTION_RULES,
    STATUS_RULES,
    TEXT_RULES,
    Classification,
    FailureClass,
    classify,
)

A = FailureClass.AUTHENTICATION
R = FailureClass.RATE_LIMIT
P = FailureClass.PAYLOAD
N = FailureClass.NETWORK
U = FailureClass.UNKNOWN

NOW = datetime(2026, 10, 21, 7, 27, 0, tzinfo=UTC)
CANARY = "sk-proj-CANARY7f3a9cSECRETVALUE"


def openai_body(message: str, type_: str, code: str | None, param: str | None = None) -> str:
    return json.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def vault_body(*errors: str) -> str:
    return json.dumps({"errors": list(errors)})


def hvac_error(status: int, *errors: str) -> hvac.exceptions.VaultError:
    """The exception hvac itself raises for a Vault error response."""
    try:
        hvac.utils.raise_for_error(
            "get", "http://127.0.0.1:8200/v1/secret/data/ai/model-api-key", status, errors=errors
        )
    except hvac.exceptions.VaultError as exc:
        return exc
    raise AssertionError("hvac did not raise")


def http_status_error(status: int, body: str, headers: dict[str, str]) -> httpx.HTTPStatusError:
    """What httpx's raise_for_status() raises, with a real Request and Response."""
    request = httpx.Request("POST", "https://api.openai.example/v1/chat/completions")
    response = httpx.Response(status, headers=headers, text=body, request=request)
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        return exc
    raise AssertionError("httpx did not raise")


def chained(outer: Exception, cause: BaseException) -> Exception:
    try:
        raise outer from cause
    except Exception as exc:
        return exc


def during(handling: BaseException, then: Exception) -> Exception:
    """``then`` raised while ``handling`` was being handled: the implicit __context__ chain."""
    try:
        try:
            raise handling
        except BaseException:
            raise then  # noqa: B904 - the implicit context is the point of this helper
    except Exception as exc:
        return exc


@dataclass(frozen=True)
class Shape:
    id: str
    expect: FailureClass
    reason: str
    status_code: int | None = None
    error: str | None = None
    message: str | None = None
    exception: Callable[[], BaseException] | None = None
    headers: dict[str, str] | None = None
    retry_after: float | None = None
    kwargs: dict[str, object] = field(default_factory=dict)

    def run(self, *, secret: str = "") -> Classification:
        message = (self.message + secret) if self.message is not None else None
        return classify(
            status_code=self.status_code,
            error=self.error,
            message=message,
            exception=self.exception() if self.exception else None,
            headers=self.headers,
            now=NOW,
        )


PG_PASSWORD = (
    'connection failed: connection to server at "127.0.0.1", port 5432 failed: '
    'FATAL:  password authentication failed for user "app_a"'
)
PG_REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?"
)
REDIS_WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled."

SHAPES: list[Shape] = [
    # --- model provider HTTP responses (OpenAI-style bodies) ---
    Shape(
        "openai-401-invalid_api_key",
        A,
        "HTTP 401 invalid_api_key",
        status_code=401,
        error="invalid_api_key",
        message=openai_body(
            "Incorrect API key provided: sk-proj-abc***xyz. You can find your API key at "
            "https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        ),
    ),
    Shape(
        "openai-401-body-only",
        A,
        "HTTP 401 invalid_api_key",
        status_code=401,
        message=openai_body(
            "Incorrect API key provided: sk-...", "invalid_request_error", "invalid_api_key"
        ),
    ),
    Shape(
        "openai-403-region",
        A,
        "HTTP 403",
        status_code=403,
        message=openai_body(
            "Country, region, or territory not supported",
            "request_forbidden",
            "unsupported_country_region_territory",
        ),
    ),
    Shape(
        "anthropic-401",
        A,
        "HTTP 401 authentication_error",
        status_code=401,
        message=json.dumps(
            {
                "type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            }
        ),
    ),
    Shape(
        "openai-429-retry-after-seconds",
        R,
        "HTTP 429 rate_limit_exceeded",
        status_code=429,
        message=openai_body(
            "Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): "
            "Limit 30000, Used 29000, Requested 2000. Please try again in 2s.",
            "tokens",
            "rate_limit_exceeded",
        ),
        headers={"retry-after": "20", "x-ratelimit-remaining-tokens": "0"},
        retry_after=20.0,
    ),
    Shape(
        "429-retry-after-http-date",
        R,
        "HTTP 429",
        status_code=429,
        headers={"Retry-After": "Wed, 21 Oct 2026 07:28:30 GMT"},
        retry_after=90.0,
    ),
    Shape(
        "429-retry-after-date-in-the-past",
        R,
        "HTTP 429",
        status_code=429,
        headers={"Retry-After": "Wed, 21 Oct 2026 07:00:00 GMT"},
        retry_after=0.0,
    ),
    Shape(
        "429-retry-after-garbage",
        R,
        "HTTP 429",
        status_code=429,
        headers={"Retry-After": "soon"},
        retry_after=None,
    ),
    Shape(
        "openai-429-insufficient_quota",
        R,
        "HTTP 429 insufficient_quota",
        status_code=429,
        message=openai_body(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        ),
    ),
    Shape(
        "openai-400-invalid_request_error",
        P,
        "HTTP 400 invalid_request_error",
        status_code=400,
        message=openai_body(
            "Invalid value for 'temperature': expected a number.",
            "invalid_request_error",
            None,
            "temperature",
        ),
    ),
    Shape(
        "openai-400-context_length_exceeded",
        P,
        "HTTP 400 context_length_exceeded",
        status_code=400,
        message=openai_body(
            "This model's maximum context length is 128000 tokens.",
            "invalid_request_error",
            "context_length_exceeded",
            "messages",
        ),
    ),
    Shape(
        "google-400-api-key-invalid",
        A,
        "HTTP 400 API_KEY_INVALID",
        status_code=400,
        message=json.dumps(
            {
                "error": {
                    "code": 400,
                    "message": "API key not valid. Please pass a valid API key.",
                    "status": "INVALID_ARGUMENT",
                    "details": [{"reason": "API_KEY_INVALID", "domain": "googleapis.com"}],
                }
            }
        ),
    ),
    Shape(
        "nginx-413",
        P,
        "HTTP 413",
        status_code=413,
        message="<html><head><title>413 Request Entity Too Large</title></head></html>",
    ),
    Shape("415", P, "HTTP 415", status_code=415),
    Shape("422", P, "HTTP 422", status_code=422, message='{"detail": [{"msg": "field required"}]}'),
    Shape(
        "github-403-secondary-rate-limit",
        R,
        "HTTP 403 secondary rate limit",
        status_code=403,
        message=json.dumps(
            {"message": "You have exceeded a secondary rate limit. Please wait a few minutes."}
        ),
        headers={"retry-after": "60"},
        retry_after=60.0,
    ),
    Shape("502", N, "HTTP 502", status_code=502, message="<html>502 Bad Gateway</html>"),
    Shape("504", N, "HTTP 504", status_code=504),
    Shape("500-is-unknown", U, "HTTP 500", status_code=500, message="Internal Server Error"),
    Shape("404-is-unknown", U, "HTTP 404", status_code=404),
    # --- Vault / OpenBao ---
    Shape(
        "vault-403-permission-denied",
        A,
        "HTTP 403 permission denied",
        status_code=403,
        message=vault_body("1 error occurred:\n\t* permission denied\n\n"),
    ),
    Shape(
        "vault-503-sealed",
        N,
        "HTTP 503 Vault sealed",
        status_code=503,
        message=vault_body("Vault is sealed"),
    ),
    Shape(
        "hvac-forbidden",
        A,
        "hvac.exceptions.Forbidden: permission denied",
        exception=lambda: hvac_error(403, "permission denied"),
    ),
    Shape(
        "hvac-unauthorized",
        A,
        "hvac.exceptions.Unauthorized",
        exception=lambda: hvac_error(401, "missing client token"),
    ),
    Shape(
        "hvac-vaultdown-sealed",
        N,
        "hvac.exceptions.VaultDown: Vault sealed",
        exception=lambda: hvac_error(503, "Vault is sealed"),
    ),
    Shape(
        "hvac-ratelimit",
        R,
        "hvac.exceptions.RateLimitExceeded: rate limit",
        exception=lambda: hvac_error(
            429, 'request path "secret/data/x": rate limit quota exceeded'
        ),
    ),
    Shape(
        "hvac-invalid-request",
        P,
        "hvac.exceptions.InvalidRequest",
        exception=lambda: hvac_error(400, "no data provided"),
    ),
    # --- PostgreSQL ---
    Shape(
        "postgres-password-text",
        A,
        "password authentication failed",
        message='FATAL:  password authentication failed for user "app_a"',
    ),
    Shape(
        "psycopg-password",
        A,
        "psycopg.OperationalError: password authentication failed",
        exception=lambda: psycopg.OperationalError(PG_PASSWORD),
    ),
    Shape(
        "psycopg-refused",
        N,
        "psycopg.OperationalError: Connection refused",
        exception=lambda: psycopg.OperationalError(PG_REFUSED),
    ),
    Shape(
        "psycopg-operational-other",
        U,
        "psycopg.OperationalError",
        exception=lambda: psycopg.OperationalError('database "nope" does not exist'),
    ),
    Shape(
        "sqlalchemy-wrapping-psycopg",
        A,
        "psycopg.OperationalError: password authentication failed",
        exception=lambda: chained(
            sqlalchemy.exc.OperationalError("SELECT 1", {}, psycopg.OperationalError(PG_PASSWORD)),
            psycopg.OperationalError(PG_PASSWORD),
        ),
    ),
    # --- Redis ---
    Shape("redis-wrongpass-text", A, "WRONGPASS", message=REDIS_WRONGPASS),
    Shape("redis-noauth-text", A, "NOAUTH", message="NOAUTH Authentication required."),
    Shape(
        "redis-authentication-error",
        A,
        "redis.exceptions.AuthenticationError: WRONGPASS",
        # redis-py splits the reply: code into status_code, the rest into the message
        exception=lambda: redis.exceptions.AuthenticationError(
            REDIS_WRONGPASS.removeprefix("WRONGPASS "), status_code="WRONGPASS"
        ),
    ),
    Shape(
        "redis-authentication-error-without-code",
        A,
        "redis.exceptions.AuthenticationError: invalid username-password pair",
        exception=lambda: redis.exceptions.AuthenticationError(
            "invalid username-password pair or user is disabled."
        ),
    ),
    Shape(
        "redis-noauth-error",
        A,
        "redis.exceptions.AuthenticationError: NOAUTH",
        exception=lambda: redis.exceptions.AuthenticationError(
            "Authentication required.", status_code="NOAUTH"
        ),
    ),
    Shape(
        "redis-connection-refused",
        N,
        "redis.exceptions.ConnectionError: Connection refused",
        exception=lambda: redis.exceptions.ConnectionError(
            "Error 111 connecting to 127.0.0.1:6390. Connection refused."
        ),
    ),
    Shape(
        "redis-timeout",
        N,
        "redis.exceptions.TimeoutError: timed out",
        exception=lambda: redis.exceptions.TimeoutError("Timeout reading from socket: timed out"),
    ),
    # --- httpx transport errors, with the texts the OS and ssl module give ---
    Shape(
        "httpx-connection-refused",
        N,
        "httpx.ConnectError: Connection refused",
        exception=lambda: httpx.ConnectError("[Errno 111] Connection refused"),
    ),
    Shape(
        "httpx-dns",
        N,
        "httpx.ConnectError: Name or service not known",
        exception=lambda: httpx.ConnectError("[Errno -2] Name or service not known"),
    ),
    Shape(
        "httpx-dns-no-resolver",
        N,
        "httpx.ConnectError: Temporary failure in name resolution",
        exception=lambda: httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
    ),
    Shape(
        "httpx-tls-verify",
        N,
        "httpx.ConnectError: TLS certificate verify failed",
        exception=lambda: httpx.ConnectError(
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "self-signed certificate (_ssl.c:1000)"
        ),
    ),
    Shape(
        "httpx-tls-wrong-version",
        N,
        "httpx.ConnectError: TLS failure",
        exception=lambda: httpx.ConnectError(
            "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1000)"
        ),
    ),
    Shape(
        "httpx-read-timeout",
        N,
        "httpx.ReadTimeout: timed out",
        exception=lambda: httpx.ReadTimeout("timed out"),
    ),
    Shape(
        "httpx-connect-timeout",
        N,
        "httpx.ConnectTimeout",
        exception=lambda: httpx.ConnectTimeout(""),
    ),
    Shape(
        "httpx-status-error-429",
        R,
        "HTTP 429 rate_limit_exceeded",
        exception=lambda: http_status_error(
            429,
            openai_body("Rate limit reached", "requests", "rate_limit_exceeded"),
            {"retry-after": "7"},
        ),
        retry_after=7.0,
    ),
    Shape(
        "httpx-status-error-401",
        A,
        "HTTP 401 invalid_api_key",
        exception=lambda: http_status_error(
            401,
            openai_body("Incorrect API key provided", "invalid_request_error", "invalid_api_key"),
            {},
        ),
    ),
    # --- standard library ---
    Shape(
        "ssl-cert-verify",
        N,
        "ssl.SSLCertVerificationError: TLS certificate verify failed",
        exception=lambda: ssl.SSLCertVerificationError(
            1,
            "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
            "unable to get local issuer certificate (_ssl.c:1000)",
        ),
    ),
    Shape(
        "socket-gaierror",
        N,
        "socket.gaierror: Name or service not known",
        exception=lambda: socket.gaierror(-2, "Name or service not known"),
    ),
    Shape(
        "connection-refused-error",
        N,
        "ConnectionRefusedError: Connection refused",
        exception=lambda: ConnectionRefusedError(111, "Connection refused"),
    ),
    Shape(
        "timeout-error", N, "TimeoutError: timed out", exception=lambda: TimeoutError("timed out")
    ),
    # --- chains: the cause tells, the wrapper does not ---
    Shape(
        "explicit-cause",
        N,
        "httpx.ConnectError: Connection refused",
        exception=lambda: chained(
            RuntimeError("nightly-ingest failed"),
            httpx.ConnectError("[Errno 111] Connection refused"),
        ),
    ),
    Shape(
        "implicit-context",
        A,
        "redis.exceptions.AuthenticationError: WRONGPASS",
        exception=lambda: during(
            redis.exceptions.AuthenticationError(REDIS_WRONGPASS), ValueError("health check failed")
        ),
    ),
    # --- Slack Web API: HTTP 200 with ok:false, or 429 ---
    Shape(
        "slack-invalid_auth",
        A,
        "HTTP 200 Slack token rejected",
        status_code=200,
        error="invalid_auth",
    ),
    Shape(
        "slack-ratelimited",
        R,
        "HTTP 429 ratelimited",
        status_code=429,
        error="ratelimited",
        headers={"Retry-After": "30"},
        retry_after=30.0,
    ),
    # --- nothing recognisable ---
    Shape("unknown-exception", U, "ValueError", exception=lambda: ValueError("boom")),
    Shape("nothing", U, "no details"),
]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.id for s in SHAPES])
def test_real_error_shapes_are_classified(shape: Shape) -> None:
    result = shape.run()

    assert result.failure_class is shape.expect
    assert result.reason == shape.reason
    assert result.retry_after_seconds == shape.retry_after


@pytest.mark.parametrize("shape", [s for s in SHAPES if s.message is not None], ids=lambda s: s.id)
def test_a_secret_in_the_message_never_reaches_the_reason(shape: Shape) -> None:
    result = shape.run(secret=f" token={CANARY}")

    assert CANARY not in result.reason
    assert result.failure_class is shape.expect  # the extra text did not change the verdict


@pytest.mark.parametrize(
    "exception",
    [
        redis.exceptions.AuthenticationError(f"WRONGPASS for password {CANARY}"),
        psycopg.OperationalError(f'password authentication failed for user "{CANARY}"'),
        httpx.ConnectError(f"[Errno 111] Connection refused to https://{CANARY}@host"),
        hvac.exceptions.Forbidden(f"permission denied for token {CANARY}"),
        ValueError(CANARY),
        chained(RuntimeError(CANARY), OSError(CANARY)),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_secret_in_exception_text_never_reaches_the_reason(exception: BaseException) -> None:
    result = classify(exception=exception, error=CANARY, message=CANARY)

    assert CANARY not in result.reason


@given(
    text=st.text(max_size=200),
    status=st.one_of(st.none(), st.integers(100, 599)),
)
def test_reason_is_never_built_from_the_given_text(text: str, status: int | None) -> None:
    result = classify(status_code=status, message=text + CANARY + text, error=CANARY)

    assert CANARY not in result.reason
    assert result.failure_class in set(FailureClass)


def test_failure_class_values_are_the_designs_words() -> None:
    assert [c.value for c in FailureClass] == [
        "authentication",
        "rate-limit",
        "payload",
        "network",
        "unknown",
        "drift",
        "silent",
    ]


def test_the_most_derived_type_wins_within_one_exception() -> None:
    # redis's AuthenticationError subclasses its ConnectionError; a wrong password is not network.
    assert issubclass(redis.exceptions.AuthenticationError, redis.exceptions.ConnectionError)

    result = classify(exception=redis.exceptions.AuthenticationError("invalid password"))

    assert result.failure_class is A


def test_a_subclass_of_a_known_library_type_is_recognised() -> None:
    class ConsumerProbeError(httpx.ConnectTimeout):
        pass

    result = classify(exception=ConsumerProbeError("timed out"))

    assert result.failure_class is N
    assert "ConsumerProbeError" in result.reason


def test_exception_type_outranks_a_contradicting_status() -> None:
    # A refused connection has no HTTP status of its own; a stale status from a previous attempt
    # must not turn it into a rate limit.
    result = classify(
        status_code=429, exception=httpx.ConnectError("[Errno 111] Connection refused")
    )

    assert result.failure_class is N


def test_raise_from_none_hides_the_context() -> None:
    try:
        try:
            raise redis.exceptions.AuthenticationError(REDIS_WRONGPASS)
        except redis.exceptions.AuthenticationError:
            raise LookupError("consumer not found") from None
    except LookupError as exc:
        result = classify(exception=exc)

    assert result.failure_class is U
    assert result.reason == "LookupError"


def test_a_cause_loop_terminates() -> None:
    first, second = RuntimeError("a"), RuntimeError("b")
    first.__cause__, second.__cause__ = second, first

    assert classify(exception=first).failure_class is U


def test_tables_are_well_formed() -> None:
    # Adding a provider is one row; these checks keep a new row from silently shadowing nothing.
    assert all(rule.label and "\\" not in rule.label for rule in TEXT_RULES)
    assert all("." in name for name in EXCEPTION_RULES)
    assert all(100 <= status <= 599 for status in STATUS_RULES)
    for rule in STATUS_RULES.values():
        assert rule.failure_class not in rule.overridden_by
