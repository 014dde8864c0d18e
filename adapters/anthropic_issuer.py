"""The ``anthropic`` issuer: API keys a person creates, retired through Anthropic's Admin API.

Anthropic's Admin API lists, reads and updates API keys (status ``active``, ``inactive``,
``archived``) but cannot create one. So, as with ``manual``, a person creates the new key in
the console and writes its value to the store (``bot.services.ports.PERSON_WRITES``): the
rotation waits for that version and never calls :meth:`AnthropicIssuer.mint`. rotabot then
learns the ids of the new and the old key with :meth:`AnthropicIssuer.identify`, which compares
the stored value, in memory, with the ``partial_key_hint`` the API lists for every key
(``sk-ant-api03-R2D...igAA``: the start and the end of the value). Revoking sets the old key
``inactive``; usage evidence comes from the usage report grouped by API key.

Endpoints (through the official ``anthropic`` SDK, under the catalog's ``base_url``):

- ``GET /v1/organizations/api_keys`` (paged; ``workspace_id`` when the catalog sets one):
  ``client.organization.api_keys.list``
- ``GET /v1/organizations/api_keys/{api_key_id}``: ``client.organization.api_keys.retrieve``
- ``POST /v1/organizations/api_keys/{api_key_id}`` ``{"status": "inactive"}``:
  ``client.organization.api_keys.update``
- ``GET /v1/organizations/analytics/usage`` (beta; ``api_key_ids[]``, ``group_by[]=api_key_id``,
  one-minute buckets): ``client.beta.organization.analytics.usage.list``

Errors are built from the call, method, URL and HTTP status (plus Anthropic's error *type*,
such as ``authentication_error``), never from a response body's message or a key, and are
raised outside ``except`` blocks so no SDK exception (whose message quotes the body) is
chained into a logged traceback. See docs/issuers.md.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import anthropic
from anthropic.pagination import SyncPage, SyncReportPageCursor
from anthropic.types.beta.organization.analytics.beta_analytics_usage_item import (
    BetaAnalyticsUsageItem,
)
from anthropic.types.organization.api_key import APIKey

from adapters.key_hints import shown_key_matches
from bot import catalog
from bot.domain.credentials import IssuerError, Minted, UsageEvidence
from bot.domain.failures import classify
from bot.domain.secret_material import SecretMaterial

log = logging.getLogger(__name__)

KIND = "anthropic"
MATERIAL_FIELD = "api_key"  # the field looked at first; any single field is taken too
# Usage within this long before now counts as "still in use" (as for the openai issuer).
USAGE_WINDOW = timedelta(minutes=15)
DEFAULT_TIMEOUT = anthropic.Timeout(10.0, connect=5.0)
MAX_RETRY_WAIT = 30.0  # seconds; a longer retry-after is cut to this (one retry only)
DEFAULT_RETRY_WAIT = 1.0  # seconds, when a 429 or 5xx names no wait
PAGE_LIMIT = 100
MAX_PAGES = 50
KEYS_PATH = "/v1/organizations/api_keys"
USAGE_PATH = "/v1/organizations/analytics/usage"
# Statuses in which a key authenticates no more.
DONE = frozenset({"inactive", "archived", "expired"})
# An error type worth repeating in a message: a plain identifier, never free text.
_SAFE_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MIN_VISIBLE = 8  # fewer visible characters than this in a hint prove nothing

_T = TypeVar("_T")
_P = TypeVar("_P", SyncPage[APIKey], SyncReportPageCursor[BetaAnalyticsUsageItem])


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def hint_matches(hint: str | None, value: str) -> bool:
    """Whether ``value`` fits Anthropic's ``partial_key_hint`` (``sk-ant-api03-R2D...igAA``):
    same start and end, and long enough to hold both. Too short a hint concludes nothing."""
    return shown_key_matches(hint, value, min_visible=_MIN_VISIBLE)


@dataclass(frozen=True)
class _Failure:
    """What went wrong with one call, in labels only."""

    status: int | None
    error_type: str | None
    retry_after: float | None
    detail: str  # for a connection failure: the exception's class name


def _failure(exc: Exception) -> _Failure:
    if isinstance(exc, anthropic.APIStatusError):
        raw_type = getattr(exc, "type", None)
        error_type = (raw_type if isinstance(raw_type, str) and _SAFE_TYPE.fullmatch(raw_type)
                      else None)
        headers = {k.lower(): v for k, v in exc.response.headers.items()}
        retry_after = classify(status_code=exc.status_code, headers=headers).retry_after_seconds
        return _Failure(exc.status_code, error_type, retry_after, "")
    return _Failure(None, None, None, type(exc).__name__)


class AnthropicIssuer:
    """An :class:`bot.services.ports.Issuer` (and ``IdentifiesKeys``) for Anthropic API keys
    (``kind = "anthropic"``). Key ids are Anthropic's API key ids (``apikey_...``).

    Build it with :meth:`from_config`. ``client``, ``sleep`` and ``clock`` exist for tests.
    """

    kind: str = KIND

    def __init__(
        self,
        *,
        admin_key: str,
        admin_key_env: str,
        base_url: str,
        workspace_id: str | None = None,
        client: anthropic.Anthropic | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utcnow,
        timeout: anthropic.Timeout = DEFAULT_TIMEOUT,
        max_retry_wait: float = MAX_RETRY_WAIT,
    ) -> None:
        self.admin_key_env = admin_key_env
        self.base_url = base_url.rstrip("/")
        self.workspace_id = workspace_id
        # The SDK retries nothing itself (max_retries=0): it would wait whatever retry-after
        # says, however long. `_call` retries once, with the wait capped.
        self._client = client if client is not None else anthropic.Anthropic(
            api_key=admin_key, base_url=self.base_url, max_retries=0, timeout=timeout,
            open_telemetry=False,
        )
        self._sleep = sleep
        self._clock = clock
        self._max_retry_wait = max_retry_wait

    @classmethod
    def from_config(
        cls,
        config: catalog.AnthropicIssuer,
        *,
        env: Mapping[str, str],
        client: anthropic.Anthropic | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utcnow,
        timeout: anthropic.Timeout = DEFAULT_TIMEOUT,
        max_retry_wait: float = MAX_RETRY_WAIT,
    ) -> AnthropicIssuer:
        """The issuer for one catalog entry; an unset ``admin_key_env`` raises
        :class:`IssuerError` naming the variable."""
        admin_key = env.get(config.admin_key_env)
        if not admin_key:
            raise IssuerError(
                f"{KIND} issuer: environment variable {config.admin_key_env} (the Admin API "
                "key) is not set"
            )
        return cls(
            admin_key=admin_key, admin_key_env=config.admin_key_env, base_url=config.base_url,
            workspace_id=config.workspace_id, client=client, sleep=sleep, clock=clock,
            timeout=timeout, max_retry_wait=max_retry_wait,
        )

    def __repr__(self) -> str:
        return (f"AnthropicIssuer(base_url={self.base_url!r}, "
                f"workspace_id={self.workspace_id!r})")

    @property
    def keeps_both_valid(self) -> bool:
        return True

    def close(self) -> None:
        self._client.close()

    # --- Issuer -----------------------------------------------------------------------------

    def mint(self, current: SecretMaterial | None) -> Minted:
        # The Admin API cannot create a key: a person creates it in the console and writes it
        # to the store (the rotation waits for that version, as for `manual`).
        return Minted(material=None, key_id=None)

    def identify(self, material: SecretMaterial) -> str | None:
        """The id of the API key whose value ``material`` holds, found by its
        ``partial_key_hint``; None when no key (or more than one active key) fits."""
        fields = material.reveal()
        values = [fields[MATERIAL_FIELD]] if MATERIAL_FIELD in fields else list(fields.values())
        values = [v for v in values if v]
        if not values:
            return None
        matches = [key for key in self._keys()
                   if any(hint_matches(key.partial_key_hint, v) for v in values)]
        where = self._scope()
        if not matches:
            log.info("%s: no API key %s fits the stored value", self._name(), where)
            return None
        if len(matches) > 1:
            active = [key for key in matches if key.status == "active"]
            if len(active) != 1:
                log.warning(
                    "%s: the stored value fits the partial hint of %d API keys %s (%s); "
                    "cannot tell which one it is", self._name(), len(matches), where,
                    ", ".join(f"{k.id} {k.status}" for k in matches))
                return None
            log.info("%s: the stored value fits %d keys; only %s is active", self._name(),
                     len(matches), active[0].id)
            matches = active
        key = matches[0]
        if key.status != "active":
            log.warning("%s: the stored value is API key %s, which is %s", self._name(), key.id,
                        key.status)
        else:
            log.info("%s: the stored value is API key %s (%s)", self._name(), key.id, key.name)
        return key.id

    def revoke(self, key_id: str | None) -> None:
        """Set API key ``key_id`` inactive. A key already inactive, archived or expired, or one
        that no longer exists, is success (idempotent). Refuses a key of another workspace."""
        if not key_id:
            log.info("%s: no key id; nothing to revoke", self._name())
            return
        one = f"{KEYS_PATH}/{key_id}"
        key = self._call("revoke", "GET", one,
                         lambda: self._client.organization.api_keys.retrieve(key_id),
                         missing_ok=True)
        if key is None:
            log.info("%s: API key %s no longer exists; nothing to revoke", self._name(), key_id)
            return
        self._check_workspace(key)
        if key.status in DONE:
            log.info("%s: API key %s is already %s", self._name(), key_id, key.status)
            return
        updated = self._call(
            "revoke", "POST", one,
            lambda: self._client.organization.api_keys.update(key_id, status="inactive"))
        assert updated is not None
        if updated.status not in DONE:
            raise IssuerError(
                f"{self._name()}: revoke (POST {self.base_url}{one}) answered status "
                f"{updated.status!r} for key {key_id}, not inactive; deactivate it in the console"
            )
        log.info("%s: revoked API key %s (%s): now %s", self._name(), key_id, key.name,
                 updated.status)

    def usage(self, key_id: str | None) -> UsageEvidence:
        """Requests made with key ``key_id`` in the last USAGE_WINDOW, from the usage report
        grouped by API key: in use when there are any."""
        if not key_id:
            return UsageEvidence(
                in_use=None,
                summary="no key id for the old key (no Anthropic key fits its stored value); "
                "check its use in the Anthropic console",
            )
        now = self._clock().astimezone(UTC)
        ending = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        starting = ending - USAGE_WINDOW - timedelta(minutes=1)
        since = now - USAGE_WINDOW
        rows: list[BetaAnalyticsUsageItem] = []
        page: SyncReportPageCursor[BetaAnalyticsUsageItem] | None = self._call(
            "usage", "GET", USAGE_PATH,
            lambda: self._client.beta.organization.analytics.usage.list(
                starting_at=starting, ending_at=ending, api_key_ids=[key_id],
                group_by=["api_key_id"], time_bucket_width="1m", limit=PAGE_LIMIT),
            unavailable_ok=True)
        if page is None:
            return UsageEvidence(
                in_use=None,
                summary=f"Anthropic's usage report is not available to this admin key; cannot "
                f"tell whether key {key_id} is still used: check the console's usage page",
            )
        refreshed = page.data_refreshed_at
        for current in self._pages(page, "usage", USAGE_PATH):
            rows.extend(current.data)
        mine = [row for row in rows
                if row.group.api_key_id == key_id and row.ending_at > since]
        requests = sum(row.usage.requests or 0 for row in mine)
        tokens = sum(row.usage.total_tokens for row in mine)
        window = int(USAGE_WINDOW.total_seconds() // 60)
        details = (f"usage report {_stamp(starting)} to {_stamp(ending)}, one-minute buckets"
                   + (f", data as of {_stamp(refreshed)}" if refreshed else ""),)
        if requests or tokens:
            last = max(row.ending_at for row in mine if (row.usage.requests or 0)
                       or row.usage.total_tokens)
            return UsageEvidence(
                in_use=True,
                summary=f"key {key_id} made {requests} request{'' if requests == 1 else 's'} "
                f"({tokens} tokens) in the last {window} minutes, the latest in the minute "
                f"ending {_stamp(last)}",
                details=details,
            )
        if refreshed is not None and refreshed < since:
            return UsageEvidence(
                in_use=None,
                summary=f"Anthropic's usage report is current only to {_stamp(refreshed)}, "
                f"before the last {window} minutes; cannot tell whether key {key_id} is "
                "still used",
                details=details,
            )
        return UsageEvidence(
            in_use=False,
            summary=f"key {key_id} has no usage in the last {window} minutes",
            details=details,
        )

    # --- internals ----------------------------------------------------------------------------

    def _name(self) -> str:
        return f"{KIND} issuer"

    def _scope(self) -> str:
        return f"in workspace {self.workspace_id}" if self.workspace_id else "in the organization"

    def _check_workspace(self, key: APIKey) -> None:
        if self.workspace_id is None:
            return
        held = getattr(key.scope, "workspace_id", None)
        if held != self.workspace_id:
            where = f"workspace {held}" if held else "the organization (no workspace)"
            raise IssuerError(
                f"{self._name()}: API key {key.id} belongs to {where}, not to workspace "
                f"{self.workspace_id}; rotabot deactivates only that workspace's keys"
            )

    def _keys(self) -> list[APIKey]:
        workspace = self.workspace_id or anthropic.omit
        first = self._call(
            "identify", "GET", KEYS_PATH,
            lambda: self._client.organization.api_keys.list(
                limit=PAGE_LIMIT, workspace_id=workspace))
        assert first is not None
        keys: list[APIKey] = []
        for page in self._pages(first, "identify", KEYS_PATH):
            keys.extend(page.data)
        return keys

    def _pages(self, first: _P, call: str, path: str) -> Iterator[_P]:
        """``first`` and the pages after it, each fetched through :meth:`_call`."""
        page = first
        for _ in range(MAX_PAGES):
            yield page
            if not page.has_next_page():
                return
            following = self._call(call, "GET", path, page.get_next_page)
            assert following is not None
            page = following
        raise IssuerError(
            f"{self._name()}: {call} (GET {self.base_url}{path}) failed: more than "
            f"{MAX_PAGES} pages of {PAGE_LIMIT}"
        )

    def _call(
        self,
        call: str,
        method: str,
        path: str,
        send: Callable[[], _T],
        *,
        missing_ok: bool = False,
        unavailable_ok: bool = False,
    ) -> _T | None:
        """One SDK call, retried once after a 429, a 5xx or a connection failure (every call
        here is idempotent). None for a 404 when ``missing_ok``, for a 400/403/404 when
        ``unavailable_ok``; else IssuerError naming the call, method, URL and status only."""
        where = f"{method} {self.base_url}{path}"
        failure: _Failure | None = None
        for attempt in (1, 2):
            try:
                return send()
            except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
                failure = _failure(exc)
            status = failure.status
            if status == 404 and missing_ok:
                return None
            if status in (400, 403, 404) and unavailable_ok:
                log.warning("%s: %s (%s) is not available: %s", self._name(), call, where,
                            self._label(failure))
                return None
            retry = status is None or status == 429 or status >= 500
            if retry and attempt == 1:
                wait = failure.retry_after if failure.retry_after is not None else (
                    DEFAULT_RETRY_WAIT)
                wait = min(max(wait, 0.0), self._max_retry_wait)
                log.warning("%s: %s (%s) failed: %s; retrying once in %.1fs", self._name(),
                            call, where, self._label(failure), wait)
                self._sleep(wait)
                continue
            break
        assert failure is not None
        message = f"{self._name()}: {call} ({where}) failed: {self._describe(failure, 2)}"
        log.warning("%s", message)
        # Raised outside `except`: no SDK exception (its message quotes the body) is chained.
        raise IssuerError(message)

    @staticmethod
    def _label(failure: _Failure) -> str:
        if failure.status is None:
            return f"could not reach Anthropic ({failure.detail})"
        return f"HTTP {failure.status}" + (f" {failure.error_type}" if failure.error_type else "")

    def _describe(self, failure: _Failure, attempts: int) -> str:
        status = failure.status
        with_type = self._label(failure)
        if status is None:
            return with_type
        if status == 401:
            return (f"the admin key in ${self.admin_key_env} was refused ({with_type}); it must "
                    "be an active Admin API key (sk-ant-admin...)")
        if status == 403:
            return f"the admin key in ${self.admin_key_env} may not do this ({with_type})"
        if status == 429:
            return f"rate limited ({with_type}) after {attempts} attempts, retry later"
        if status >= 500:
            return f"provider error ({with_type}), retry later"
        return with_type

