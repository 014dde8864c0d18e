"""The ``http`` issuer: a provider's key-management API (create a key, later revoke the old one).

The catalog describes the two calls (``bot.catalog.HttpIssuer``): create (method, URL, optional
JSON body, the dotted JSON paths of the new key's id and secret in the response) and revoke (a
URL template with ``{key_id}``). Request headers (``Authorization: Bearer ...``) come from
environment variables the catalog names; the catalog never holds them.

Failures are classified with :func:`bot.domain.failures.classify` and reported as
:class:`HttpIssuerError`, whose message names the call, the failure class and the HTTP status.
It never carries the response body (a provider may echo the key) or the request headers (they
hold the bot's admin credential), and it is raised without an exception chain so a logged
traceback cannot print a library message that quotes either.

Retries (bounded, ``max_attempts`` in total): 429 and 5xx, waiting what ``Retry-After`` asks
(seconds or an HTTP-date, capped at ``max_wait``) or an exponential backoff; connection
failures (nothing reached the provider). A read timeout or a dropped connection is retried only
for revoke: a create the provider may already have processed would mint a second key that
nobody knows the id of.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from bot import catalog
from bot.domain.credentials import IssuerError, Minted, UsageEvidence
from bot.domain.failures import Classification, FailureClass, classify
from bot.domain.secret_material import SecretMaterial

log = logging.getLogger(__name__)

KIND = "http"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MAX_WAIT = 30.0  # seconds; a Retry-After beyond this is cut to it
BACKOFF_BASE = 0.5  # seconds; doubled per attempt when the provider names no wait
MATERIAL_FIELD = "api_key"  # the field name consumers find the key under in the store
KEY_ID_FIELD = "key_id"  # stored beside it: not secret, and needed to revoke it later
# Transport errors where the request never reached the provider: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


class HttpIssuerError(IssuerError):
    """An HTTP issuer call failed. Attributes are references and labels only, never values."""

    def __init__(
        self,
        message: str,
        *,
        call: str,
        failure_class: FailureClass,
        status_code: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.call = call
        self.failure_class = failure_class
        self.status_code = status_code
        self.attempts = attempts


_MISSING = object()


def json_lookup(document: Any, path: str) -> Any:
    """The value at a dotted ``path`` (``data.id``, ``data.0.id``) in parsed JSON, else raise
    ``LookupError``. A purely numeric segment indexes a list; on an object it is a key."""
    node = document
    for segment in path.split("."):
        if isinstance(node, Mapping):
            value = node.get(segment, _MISSING)
        elif isinstance(node, list) and segment.lstrip("-").isdigit():
            index = int(segment)
            value = node[index] if -len(node) <= index < len(node) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            raise LookupError(segment)
        node = value
    return node


def _headers(headers_env: Mapping[str, str], env: Mapping[str, str], call: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for header, variable in headers_env.items():
        value = env.get(variable)
        if not value:
            raise IssuerError(
                f"{KIND} issuer: environment variable {variable} (header {header} of the "
                f"{call} call) is not set"
            )
        headers[header] = value
    return headers


def _where(method: str, url: str) -> str:
    # Scheme, host and path only: a query string could carry a provider token.
    parts = urlsplit(url)
    return f"{method} {parts.scheme}://{parts.netloc}{parts.path}"


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


class HttpIssuer:
    """An :class:`bot.services.ports.Issuer` for a provider's key-management API (``kind="http"``).

    Build it with :meth:`from_config`. ``client`` may be shared; every request still carries
    this issuer's timeout. ``sleep`` exists so tests can record waits instead of waiting.
    """

    kind: str = KIND

    def __init__(
        self,
        config: catalog.HttpIssuer,
        *,
        create_headers: Mapping[str, str],
        revoke_headers: Mapping[str, str],
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.config = config
        self._create_headers = dict(create_headers)
        self._revoke_headers = dict(revoke_headers)
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._sleep = sleep
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._max_wait = max_wait

    @classmethod
    def from_config(
        cls,
        config: catalog.HttpIssuer,
        env: Mapping[str, str],
        client: httpx.Client | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> HttpIssuer:
        """The issuer for one catalog entry; a header variable missing from ``env`` raises
        :class:`IssuerError` naming the variable."""
        return cls(
            config,
            create_headers=_headers(config.create.headers_env, env, "create"),
            revoke_headers=_headers(config.revoke.headers_env, env, "revoke"),
            client=client,
            sleep=sleep,
            timeout=timeout,
            max_attempts=max_attempts,
            max_wait=max_wait,
        )

    @property
    def keeps_both_valid(self) -> bool:
        return self.config.dual_valid

    def close(self) -> None:
        self._client.close()

    # --- Issuer -------------------------------------------------------------------------

    def mint(self, current: SecretMaterial | None) -> Minted:
        """Create a new key beside the current one (which the provider keeps valid)."""
        create = self.config.create
        response = self._send(
            "create", create.method, create.url, self._create_headers, create.body,
            idempotent=False,
        )
        where = _where(create.method, create.url)
        try:
            document = response.json()
        except ValueError:
            raise self._payload_error(
                "create", where, response, "the response is not JSON; a key may have been "
                "created: check the provider"
            ) from None
        key_id = self._field(document, create.key_id_path)
        secret = self._field(document, create.secret_path)
        if key_id is None or isinstance(key_id, bool) or not isinstance(key_id, str | int):
            raise self._payload_error(
                "create", where, response, f"the response has no key id (string or number) at "
                f"'{create.key_id_path}'; a key may have been created: check the provider"
            )
        if not isinstance(secret, str) or not secret:
            raise self._payload_error(
                "create", where, response, f"the response has no secret (non-empty string) at "
                f"'{create.secret_path}'; key {key_id} was probably created: revoke it at the "
                "provider"
            )
        log.info("%s issuer: created key %s (%s)", KIND, key_id, where)
        # The key id travels with the value (it is not secret) so the next rotation knows
        # which key to revoke.
        previous = current.reveal().get(KEY_ID_FIELD) if current is not None else None
        return Minted(
            material=SecretMaterial({MATERIAL_FIELD: secret, KEY_ID_FIELD: str(key_id)}),
            key_id=str(key_id),
            previous_key_id=previous or None,
        )

    def revoke(self, key_id: str | None) -> None:
        """Revoke key ``key_id``; a 404 or 410 means it is already gone (idempotent)."""
        if not key_id:
            raise HttpIssuerError(
                f"{KIND} issuer: revoke needs the id of the key to revoke, and none was "
                "recorded for it",
                call="revoke", failure_class=FailureClass.PAYLOAD,
            )
        revoke = self.config.revoke
        url = revoke.url.replace("{key_id}", quote(key_id, safe=""))
        response = self._send(
            "revoke", revoke.method, url, self._revoke_headers, None, idempotent=True,
            already_done=frozenset({404, 410}),
        )
        if response.status_code in (404, 410):
            log.info("%s issuer: key %s was already revoked (HTTP %s)", KIND, key_id,
                     response.status_code)
        else:
            log.info("%s issuer: revoked key %s", KIND, key_id)

    def usage(self, key_id: str | None) -> UsageEvidence:
        # The catalog describes no usage endpoint, and providers that have one disagree on
        # its shape; saying "unknown" is honest, a guess would mislead the revocation gate.
        which = f"key {key_id}" if key_id else "this key"
        return UsageEvidence(
            in_use=None,
            summary=f"the provider API cannot tell whether {which} is still in use; check "
            "the provider's usage dashboard before revoking",
        )

    # --- internals ----------------------------------------------------------------------

    @staticmethod
    def _field(document: Any, path: str) -> Any:
        try:
            return json_lookup(document, path)
        except LookupError:
            return None

    @staticmethod
    def _payload_error(
        call: str, where: str, response: httpx.Response, what: str
    ) -> HttpIssuerError:
        status = response.status_code
        return HttpIssuerError(
            f"{KIND} issuer: {call} ({where}) failed: {FailureClass.PAYLOAD.value} "
            f"(HTTP {status}): {what}",
            call=call, failure_class=FailureClass.PAYLOAD, status_code=status,
        )

    def _wait_for(self, verdict: Classification, attempt: int) -> float:
        if verdict.retry_after_seconds is not None:
            return min(max(verdict.retry_after_seconds, 0.0), self._max_wait)
        return min(BACKOFF_BASE * 2.0 ** (attempt - 1), self._max_wait)

    def _send(
        self,
        call: str,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: dict[str, Any] | None,
        *,
        idempotent: bool,
        already_done: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """One logical call with bounded retries; a 2xx (or ``already_done``) response, else
        :class:`HttpIssuerError`."""
        where = _where(method, url)
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            try:
                response = self._client.request(
                    method, url, headers=headers, json=body, timeout=self._timeout
                )
            except httpx.TransportError as exc:
                verdict = classify(exception=exc)
                retry = isinstance(exc, _NOT_SENT) or idempotent
            else:
                status = response.status_code
                if response.is_success or status in already_done:
                    return response
                # The body is only pattern-matched (e.g. Google's API_KEY_INVALID under 400);
                # a Classification's reason is built from labels, never from the text.
                verdict = classify(
                    status_code=status, message=response.text, headers=response.headers
                )
                retry = status == 429 or status >= 500
            if retry and attempt < self._max_attempts:
                wait = self._wait_for(verdict, attempt)
                log.warning(
                    "%s issuer: %s (%s) failed: %s (%s), attempt %d of %d; retrying in %.1fs",
                    KIND, call, where, verdict.failure_class.value, verdict.reason, attempt,
                    self._max_attempts, wait,
                )
                self._sleep(wait)
                continue
            break
        if status is None:
            detail = f"{verdict.reason}; no HTTP status"
        elif verdict.reason.startswith(f"HTTP {status}"):
            detail = verdict.reason
        else:
            detail = f"HTTP {status}; {verdict.reason}"
        message = (
            f"{KIND} issuer: {call} ({where}) failed: {verdict.failure_class.value} "
            f"({detail}) after {_attempts(attempt)}"
        )
        log.warning("%s", message)
        # Raised outside any `except` block: no chained httpx exception (which holds the
        # request headers and the response) rides along into a logged traceback.
        raise HttpIssuerError(
            message, call=call, failure_class=verdict.failure_class, status_code=status,
            attempts=attempt,
        )
