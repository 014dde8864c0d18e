"""Consumer health checks from the catalog: one HTTP call per consumer on its real dependency path.

A :class:`bot.catalog.HealthCheck` names the URL, method, headers (from environment variables),
the expected status, a timeout and optionally a JSON field where the consumer reports which
credential version it uses; a reported version is evidence that the new credential reached it
("inference-api reports version 7"). :class:`HealthChecker` runs many checks at once, at most
``max_concurrency`` in flight, and classifies every failure with
:func:`bot.domain.failures.classify`.

A :class:`HealthResult`'s ``reason`` is built from the consumer name, status numbers, failure
labels and the reported version only: never a response body (a misbehaving consumer may echo
its credential) and never a header value (the bot's own credential for the check).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx

from adapters.http_issuer import json_lookup
from bot.catalog import HealthCheck
from bot.domain.failures import FailureClass, classify

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # bytes read for version_field; a health answer is small
MAX_VERSION_CHARS = 64  # a version is a number or short label; longer is a misconfiguration


@dataclass(frozen=True)
class HealthResult:
    """One consumer's health check, in words fit for the rotation message and the gate."""

    consumer: str
    lane: str
    ok: bool
    status_code: int | None
    failure_class: str | None  # a bot.domain.failures.FailureClass value when not ok
    reason: str
    reported_version: str | None
    elapsed_ms: float


class _Deadline(Exception):
    """The body kept trickling in past the check's timeout."""


class _BodyTooLarge(Exception):
    """The body is larger than MAX_BODY."""


def _version_text(value: object) -> str | None:
    # Only scalars count: an object or list at the field is not a version.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value)
    if not text or len(text) > MAX_VERSION_CHARS:
        return None
    return text


class HealthChecker:
    """Runs consumer health checks. ``client`` may be shared (httpx.Client is thread-safe);
    each request carries its check's timeout. ``env`` supplies the header variables."""

    def __init__(
        self,
        client: httpx.Client | None = None,
        *,
        env: Mapping[str, str],
        max_concurrency: int = 8,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._env = env
        self.max_concurrency = max_concurrency
        self._client = client if client is not None else httpx.Client(
            limits=httpx.Limits(max_connections=max_concurrency * 2),
            follow_redirects=False,
        )

    def close(self) -> None:
        self._client.close()

    def check_many(self, items: Sequence[tuple[str, str, HealthCheck]]) -> list[HealthResult]:
        """Run ``(consumer, lane, check)`` items concurrently, at most ``max_concurrency`` at
        once; results in input order."""
        if not items:
            return []
        workers = min(self.max_concurrency, len(items))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="health") as pool:
            futures = [pool.submit(self.check, name, lane, hc) for name, lane, hc in items]
            return [f.result() for f in futures]

    def check(self, consumer_name: str, lane: str, hc: HealthCheck) -> HealthResult:
        """One check; never raises for a failing consumer (the result says why)."""
        started = time.perf_counter()

        def result(
            ok: bool, reason: str, *, status: int | None = None,
            failure: FailureClass | None = None, version: str | None = None,
        ) -> HealthResult:
            elapsed = (time.perf_counter() - started) * 1000.0
            outcome = HealthResult(
                consumer=consumer_name, lane=lane, ok=ok, status_code=status,
                failure_class=failure.value if failure is not None else None, reason=reason,
                reported_version=version, elapsed_ms=elapsed,
            )
            level = logging.INFO if ok else logging.WARNING
            log.log(level, "health check %s (%s): %s", consumer_name, lane, reason)
            return outcome

        who = f"{consumer_name} ({lane})"
        headers: dict[str, str] = {}
        for header, variable in hc.headers_env.items():
            value = self._env.get(variable)
            if not value:
                # The bot's own configuration is broken, not the consumer: say so plainly.
                return result(
                    False,
                    f"{who}: not checked: environment variable {variable} (header {header}) "
                    "is not set",
                    failure=FailureClass.UNKNOWN,
                )
            headers[header] = value

        seconds = hc.timeout.total_seconds()
        deadline = started + seconds
        status: int | None = None
        body = b""
        failure_exc: Exception | None = None
        try:
            with self._client.stream(
                hc.method, hc.url, headers=headers, timeout=httpx.Timeout(seconds)
            ) as response:
                status = response.status_code
                resp_headers = dict(response.headers)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_BODY:
                        raise _BodyTooLarge
                    chunks.append(chunk)
                    # httpx's read timeout is per read; this bounds the whole answer.
                    if time.perf_counter() > deadline:
                        raise _Deadline
                body = b"".join(chunks)
        except _BodyTooLarge:
            body = b""  # the status still counts; the version cannot be read
        except _Deadline:
            return result(
                False, f"{who}: network (the answer took longer than {seconds:g}s)",
                status=status, failure=FailureClass.NETWORK,
            )
        except httpx.HTTPError as exc:
            failure_exc = exc
        if failure_exc is not None or status is None:
            verdict = classify(exception=failure_exc)
            return result(
                False, f"{who}: {verdict.failure_class.value} ({verdict.reason})",
                failure=verdict.failure_class,
            )

        text = body.decode("utf-8", errors="replace")
        if status != hc.expect_status:
            # The body is only pattern-matched; the reason is built from labels.
            verdict = classify(status_code=status, message=text, headers=resp_headers)
            return result(
                False,
                f"{who}: HTTP {status}, expected {hc.expect_status}: "
                f"{verdict.failure_class.value} ({verdict.reason})",
                status=status, failure=verdict.failure_class,
            )

        if hc.version_field is None:
            return result(True, f"{consumer_name} healthy (HTTP {status})", status=status)
        version: str | None = None
        try:
            version = _version_text(json_lookup(json.loads(text), hc.version_field))
        except (ValueError, LookupError):
            version = None
        if version is None:
            return result(
                True,
                f"{consumer_name} healthy (HTTP {status}) but reports no version at "
                f"'{hc.version_field}'",
                status=status,
            )
        return result(
            True, f"{consumer_name} reports version {version}", status=status, version=version
        )
