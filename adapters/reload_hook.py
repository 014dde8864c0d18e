"""The signed HTTP reload hook: after rotabot writes a credential to a distribution target, it
calls the endpoint the catalog names for that target (``ReloadHookSpec``) so consumers that
only read their credential at start-up restart or redeploy.

The request
-----------
``POST`` (or ``PUT``) with a JSON body that carries references only, never a value::

    {"type": "rotabot.reload", "secret": "team/app-key", "rotation": "R-42", "lane": "prod",
     "target": "env-file /srv/app/.env API_KEY", "version": "7",
     "sent_at": "2024-05-01T12:00:00Z"}

(every key of the event, plus ``type`` and ``sent_at``) and these headers:

``Content-Type: application/json``, ``User-Agent: rotabot-reload-hook``

``Idempotency-Key: <hex>``
    SHA-256 of secret, rotation, lane, target and version: the same for a retry and for a
    repeat of the same reload, so a receiver can drop the duplicate.

``X-Rotabot-Request-Timestamp: <unix seconds>`` and ``X-Rotabot-Signature: v1=<hex>``
    Only when a signing key is configured. Like Slack's and Stripe's schemes, the signature
    is ``hex(HMAC-SHA256(key, b"v1:" + timestamp + b":" + body))`` over the exact body bytes
    sent. A receiver recomputes it with :func:`verify_signature`, which compares in constant
    time and refuses a timestamp more than ``tolerance`` seconds (default 300) from its clock,
    so a captured request cannot be replayed later.

The answer
----------
A 2xx is success; anything else fails with :class:`ReloadFailed`, whose message names the
method, the URL (no query string, no user info) and the status or the transport error's class,
never a response body or header. Redirects are not followed: a 3xx is a failure (a hook that
moved should be fixed in the catalog, and a redirect must not carry a signed request
elsewhere). The response body is never read.

Retries: one, and only when the hook surely did not act: a connection that never opened, or a
502/503/504 (a proxy in front of a restarting service). A read timeout or a 500 is not retried:
a restart endpoint is rarely idempotent and may already be restarting. The retry is a new
request (new timestamp, ``sent_at`` and signature) with the same ``Idempotency-Key``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from bot.domain.credentials import ReloadFailed

if TYPE_CHECKING:
    from bot.catalog.model import ReloadHookSpec

log = logging.getLogger(__name__)

EVENT_TYPE = "rotabot.reload"
USER_AGENT = "rotabot-reload-hook"
TIMESTAMP_HEADER = "X-Rotabot-Request-Timestamp"
SIGNATURE_HEADER = "X-Rotabot-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE = 300  # seconds a receiver accepts between the timestamp and its clock
RETRY_PAUSE = 1.0  # seconds before the one retry: a proxy's 503 often clears that fast
# The fields that identify one reload; the Idempotency-Key hashes them.
IDENTITY_FIELDS = ("secret", "rotation", "lane", "target", "version")
# Transport errors where the request never reached the hook: safe to send again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RETRY_STATUSES = frozenset({502, 503, 504})


def signature_base(timestamp: str, body: bytes) -> bytes:
    """What is signed: ``v1:<timestamp>:<body>`` (the body's exact bytes)."""
    return f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Rotabot-Signature`` header value: ``v1=<hex HMAC-SHA256>``."""
    digest = hmac.new(key, signature_base(timestamp, body), hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(
    key: bytes,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``signature`` (the ``X-Rotabot-Signature`` header) signs ``timestamp`` (the
    ``X-Rotabot-Request-Timestamp`` header) and ``body`` with ``key``, and the timestamp is
    within ``tolerance`` seconds of ``now`` (either way: a clock ahead is refused too).

    The header may list several comma-separated ``v1=`` entries; one match is enough.
    Compares in constant time."""
    stamp = timestamp.strip()
    # Digits only (int() would also take "+1_700_000_000"), and short: int() of thousands of
    # digits raises instead of answering False.
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    if abs(now - int(stamp)) > tolerance:
        return False
    expected = sign(key, stamp, body).encode()
    matched = False
    for entry in signature.split(","):
        candidate = entry.strip().encode("utf-8", "replace")
        # No early exit: every entry is compared, so timing says nothing about which matched.
        matched |= hmac.compare_digest(expected, candidate)
    return matched


def idempotency_key(event: Mapping[str, str]) -> str:
    """A stable key for one reload (secret, rotation, lane, target, version): the same on a
    retry and on a repeat, different for another version or target."""
    # JSON of a list keeps the fields apart ("a|b" + "c" cannot collide with "a" + "b|c").
    identity = json.dumps([event.get(name, "") for name in IDENTITY_FIELDS])
    return hashlib.sha256(identity.encode()).hexdigest()


def display_url(url: str) -> str:
    """Scheme, host, port and path: a query string or user info could carry a credential."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


class HttpReloadHook:
    """A :class:`bot.services.ports.ReloadHook` that calls an HTTP endpoint, signed with
    HMAC-SHA256 when ``signing_key`` is given (see the module docstring for the scheme).

    ``client`` may be shared; every request still carries this hook's timeout and never
    follows redirects. ``sleep`` exists so tests can record the pause before the retry."""

    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        signing_key: bytes | None = None,
        timeout: float = 10,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        method = method.upper()
        if method not in ("POST", "PUT"):
            raise ValueError(f"reload hook: method must be POST or PUT, not {method}")
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            # The URL itself is not repeated: it might hold a credential.
            raise ValueError("reload hook: the URL must be http(s)")
        if signing_key is not None and not signing_key:
            raise ValueError("reload hook: an empty signing key signs nothing; pass None")
        self._url = url
        self._method = method
        self._signing_key = signing_key
        self._timeout = httpx.Timeout(timeout)
        self._client = (
            client if client is not None
            else httpx.Client(timeout=self._timeout, follow_redirects=False)
        )
        self._sleep = sleep

    @classmethod
    def from_spec(
        cls,
        spec: ReloadHookSpec,
        env: Mapping[str, str],
        *,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> HttpReloadHook:
        """The hook a catalog target names. The signing key is read from the environment
        variable ``spec.signing_key_env``; unset or empty raises :class:`ReloadFailed` naming
        the variable (an unsigned call the receiver would reject is no better)."""
        key: bytes | None = None
        if spec.signing_key_env is not None:
            value = env.get(spec.signing_key_env)
            if not value:
                raise ReloadFailed(
                    f"reload hook {spec.method} {display_url(spec.url)}: environment variable "
                    f"{spec.signing_key_env} (its signing key) is not set"
                )
            key = value.encode()
        return cls(
            spec.url,
            method=spec.method,
            signing_key=key,
            timeout=spec.timeout.total_seconds(),
            client=client,
            sleep=sleep,
        )

    @property
    def where(self) -> str:
        return f"{self._method} {display_url(self._url)}"

    @property
    def signed(self) -> bool:
        return self._signing_key is not None

    def close(self) -> None:
        self._client.close()

    def call(self, event: Mapping[str, str]) -> str:
        """Send ``event`` (references only); a one-line result on 2xx, else ReloadFailed."""
        key = idempotency_key(event)
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            error: str | None = None
            request = self._request(event, key)
            try:
                response = self._client.send(request, stream=True, follow_redirects=False)
            except httpx.HTTPError as exc:
                error = type(exc).__name__
                retry = isinstance(exc, _NOT_SENT)
            else:
                # Closed unread: a receiver's body is never needed, and may echo anything.
                response.close()
                status = response.status_code
                if response.is_success:
                    line = f"{self.where} -> {status}"
                    log.info("reload hook: %s", line)
                    return line
                retry = status in _RETRY_STATUSES
            # One retry at most, only where the hook surely did not act (see the module
            # docstring): a restart endpoint need not be idempotent, and a receiver that
            # sees the same Idempotency-Key twice can drop the repeat.
            if retry and attempt < 2:
                log.warning(
                    "reload hook: %s failed (%s), attempt 1 of 2; retrying in %.1fs",
                    self.where, error or f"HTTP {status}", RETRY_PAUSE,
                )
                self._sleep(RETRY_PAUSE)
                continue
            break
        if status is None:
            detail = f"{error}, no HTTP status"
        elif 300 <= status < 400:
            detail = f"HTTP {status}, a redirect (not followed: fix the URL in the catalog)"
        else:
            detail = f"HTTP {status}"
        message = f"reload hook {self.where} failed: {detail} after {_attempts(attempt)}"
        log.warning("%s", message)
        # Raised outside the `except` block: no chained httpx exception (which holds the full
        # URL and the request) rides along into a logged traceback.
        raise ReloadFailed(message)

    def _request(self, event: Mapping[str, str], key: str) -> httpx.Request:
        # A fresh timestamp per attempt: a retry is a new request, signed anew.
        now = int(time.time())
        payload = {
            "type": EVENT_TYPE,
            **{k: v for k, v in event.items() if k not in ("type", "sent_at")},
            "sent_at": datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        # Serialised once and sent as bytes: the signature covers exactly what goes out.
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            IDEMPOTENCY_HEADER: key,
        }
        if self._signing_key is not None:
            stamp = str(now)
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = sign(self._signing_key, stamp, body)
        return self._client.build_request(
            self._method, self._url, content=body, headers=headers, timeout=self._timeout
        )
