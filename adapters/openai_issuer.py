"""The ``openai`` issuer: project service-account keys through OpenAI's organization admin API.

Two service accounts in the catalog's project alternate, ``<prefix>-<secret>-a`` and ``-b``, as
the two login roles of ``postgres-role`` do. Each holds exactly one API key: the one its
creation returned. A rotation (re)creates the account consumers do not use now, so old and new
keys are both valid until the old one is revoked; revoking deletes the old key's service
account, because OpenAI refuses to delete a service account's key by itself
(``DELETE /organization/projects/{project_id}/api_keys/{api_key_id}`` answers an error for one).
Usage evidence is the old key's ``last_used_at``.

The store holds ``{"api_key": <value>}`` only. Which account is in use is found by comparing
the current value in memory with the ``redacted_value`` (``sk-abc...def``) the API lists for
each of the two accounts' keys; nothing but that comparison ever looks at a value.

Endpoints (paths under the catalog's ``base_url``, ``https://api.openai.com/v1``):

- ``GET /organization/projects/{project_id}/service_accounts`` (paged)
- ``POST /organization/projects/{project_id}/service_accounts`` (returns the key, once)
- ``POST /organization/projects/{project_id}/service_accounts/{service_account_id}/api_keys``
  (only if the creation returned no key)
- ``DELETE /organization/projects/{project_id}/service_accounts/{service_account_id}``
- ``GET /organization/projects/{project_id}/api_keys`` (paged, ``owner_project_access=any``)
- ``GET /organization/projects/{project_id}/api_keys/{api_key_id}``

Errors are built from the call, method, URL and status (plus OpenAI's error *code* when it is
a plain identifier such as ``invalid_api_key``), never from a response body's message or a key,
and are raised outside ``except`` blocks so no httpx exception (which holds the request's
Authorization header) is chained into a logged traceback. See docs/issuers.md.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx

from adapters.key_hints import shown_key_matches
from bot import catalog
from bot.domain.credentials import IssuerError, Minted, UsageEvidence
from bot.domain.failures import classify
from bot.domain.secret_material import SecretMaterial

log = logging.getLogger(__name__)

KIND = "openai"
MATERIAL_FIELD = "api_key"  # the one field the store holds
SLOTS = ("a", "b")
# last_used_at within this long before now counts as "still in use". The API gives a time, not
# which requests used the key, and rotabot does not know here when consumers switched; a key
# unused for this long is taken as retired. docs/issuers.md.
USAGE_WINDOW = timedelta(minutes=15)
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
MAX_RETRY_WAIT = 30.0  # seconds; a longer Retry-After is cut to this (one retry only)
DEFAULT_RETRY_WAIT = 1.0  # seconds, when a 429 names no wait
PAGE_LIMIT = 100  # the description's maximum for `limit`
MAX_PAGES = 50
# An OpenAI error code worth repeating in a message: a plain identifier, never free text.
_SAFE_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(delta: timedelta) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} days"


def redaction_matches(redacted: str, value: str) -> bool:
    """Whether ``value`` fits OpenAI's ``redacted_value`` (``sk-abc...def``): same start and
    end. At least four characters must be visible, or nothing is concluded."""
    return shown_key_matches(redacted, value, min_visible=4)


@dataclass(frozen=True)
class _Account:
    id: str
    name: str


@dataclass(frozen=True)
class _Key:
    id: str
    redacted: str
    last_used_at: datetime | None
    owner_type: str
    account_id: str | None
    account_name: str | None


def _time(value: Any) -> datetime | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    return None


def _key(doc: Mapping[str, Any]) -> _Key | None:
    key_id = doc.get("id")
    if not isinstance(key_id, str) or not key_id:
        return None
    raw_owner = doc.get("owner")
    owner: Mapping[str, Any] = raw_owner if isinstance(raw_owner, Mapping) else {}
    raw_account = owner.get("service_account")
    account: Mapping[str, Any] = raw_account if isinstance(raw_account, Mapping) else {}
    redacted = doc.get("redacted_value")
    return _Key(
        id=key_id,
        redacted=redacted if isinstance(redacted, str) else "",
        last_used_at=_time(doc.get("last_used_at")),
        owner_type=str(owner.get("type") or "unknown"),
        account_id=account.get("id") if isinstance(account.get("id"), str) else None,
        account_name=account.get("name") if isinstance(account.get("name"), str) else None,
    )


class OpenAIIssuer:
    """An :class:`bot.services.ports.Issuer` alternating two OpenAI project service accounts
    (``kind = "openai"``). Key ids are OpenAI's API key ids (``key_...``).

    Build it with :meth:`from_config`. ``client``, ``sleep`` and ``clock`` exist for tests.
    """

    kind: str = KIND

    def __init__(
        self,
        *,
        admin_key: str,
        admin_key_env: str,
        project_id: str,
        base_url: str,
        account_names: tuple[str, str],
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utcnow,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_retry_wait: float = MAX_RETRY_WAIT,
    ) -> None:
        self._admin_key = admin_key
        self.admin_key_env = admin_key_env
        self.project_id = project_id
        self.base_url = base_url.rstrip("/")
        self.account_names = account_names
        self._client = client if client is not None else httpx.Client(timeout=timeout)
        self._sleep = sleep
        self._clock = clock
        self._timeout = timeout
        self._max_retry_wait = max_retry_wait
        self._lock = threading.Lock()

    @classmethod
    def from_config(
        cls,
        config: catalog.OpenAIIssuer,
        *,
        env: Mapping[str, str],
        secret: str,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utcnow,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_retry_wait: float = MAX_RETRY_WAIT,
    ) -> OpenAIIssuer:
        """The issuer of secret ``secret``; IssuerError naming the variable when the admin
        key is not set in ``env``."""
        admin_key = env.get(config.admin_key_env)
        if not admin_key:
            raise IssuerError(
                f"{KIND} issuer of {secret}: environment variable {config.admin_key_env} (the "
                "OpenAI organization admin key) is not set"
            )
        prefix = config.service_account_prefix
        names = (f"{prefix}-{secret}-{SLOTS[0]}", f"{prefix}-{secret}-{SLOTS[1]}")
        return cls(
            admin_key=admin_key, admin_key_env=config.admin_key_env,
            project_id=config.project_id, base_url=config.base_url, account_names=names,
            client=client, sleep=sleep, clock=clock, timeout=timeout,
            max_retry_wait=max_retry_wait,
        )

    def __repr__(self) -> str:
        return (f"OpenAIIssuer(project={self.project_id!r}, accounts={self.account_names!r}, "
                f"admin_key_env={self.admin_key_env!r})")

    @property
    def keeps_both_valid(self) -> bool:
        return True

    def close(self) -> None:
        self._client.close()

    # --- Issuer ---------------------------------------------------------------------------

    def mint(self, current: SecretMaterial | None) -> Minted:
        """A new key on the service account consumers do not use now (created afresh)."""
        with self._lock:
            accounts = self._our_accounts()
            keys = self._project_keys()
            value = current.reveal().get(MATERIAL_FIELD) if current is not None else None
            active, previous = self._active(accounts, keys, value)
            target = self._target(accounts, keys, active)
            stale = accounts.get(target)
            if stale is not None:
                self._retire_stale(stale, keys)
            key_id, secret = self._create(target)
        log.info("%s: %s holds new key %s (in use before: %s)", self._name(), target, key_id,
                 f"key {previous.id} of {active}" if previous and active else "no key of ours")
        return Minted(
            material=SecretMaterial({MATERIAL_FIELD: secret}),
            key_id=key_id,
            previous_key_id=previous.id if previous is not None else None,
        )

    def revoke(self, key_id: str | None) -> None:
        """Delete the service account that owns key ``key_id``; a key or account already gone
        is success (idempotent). Refuses a key that is not one of the two accounts' keys."""
        if not key_id:
            log.info("%s: no key id; nothing to revoke", self._name())
            return
        with self._lock:
            doc = self._request("revoke", "GET", self._key_path(key_id), missing_ok=True)
            if doc is None:
                log.info("%s: key %s no longer exists; nothing to revoke", self._name(), key_id)
                return
            key = _key(doc)
            if key is None:
                raise self._payload("revoke", f"the answer for key {key_id} has no id")
            if key.owner_type != "service_account" or key.account_id is None:
                raise IssuerError(
                    f"{self._name()}: key {key_id} belongs to a {key.owner_type}, not to "
                    f"{self._pair()}; rotabot revokes only their keys. Revoke it in the OpenAI "
                    "dashboard"
                )
            if key.account_name not in self.account_names:
                raise IssuerError(
                    f"{self._name()}: key {key_id} belongs to service account "
                    f"{key.account_name!r} ({key.account_id}), not to {self._pair()}; rotabot "
                    "deletes only those"
                )
            self._delete_account(key.account_id, "revoke")
        log.info("%s: revoked key %s by deleting service account %s (%s)", self._name(), key_id,
                 key.account_name, key.account_id)

    def usage(self, key_id: str | None) -> UsageEvidence:
        """The key's ``last_used_at``: in use when within USAGE_WINDOW of now."""
        if not key_id:
            return UsageEvidence(
                in_use=None,
                summary="no key id for the old key (it was not made by rotabot); check its "
                "last use in the OpenAI dashboard",
            )
        doc = self._request("usage", "GET", self._key_path(key_id), missing_ok=True)
        if doc is None:
            return UsageEvidence(
                in_use=False, summary=f"key {key_id} no longer exists in {self.project_id}")
        key = _key(doc)
        if key is None or "last_used_at" not in doc:
            return UsageEvidence(
                in_use=None, summary=f"OpenAI did not say when key {key_id} was last used")
        details = (f"key {key_id} of {key.owner_type} {key.account_name or '?'} "
                   f"({key.account_id or '?'}) in {self.project_id}",)
        if key.last_used_at is None:
            return UsageEvidence(
                in_use=False, summary=f"key {key_id} has never been used", details=details)
        age = self._clock() - key.last_used_at
        window = int(USAGE_WINDOW.total_seconds() // 60)
        when = f"key {key_id} was last used at {_stamp(key.last_used_at)} ({_ago(age)} ago"
        if age <= USAGE_WINDOW:
            return UsageEvidence(
                in_use=True, summary=f"{when}, within the last {window} minutes)",
                details=details)
        return UsageEvidence(
            in_use=False, summary=f"{when}; not in the last {window} minutes)", details=details)

    # --- the two accounts -------------------------------------------------------------------

    def _our_accounts(self) -> dict[str, _Account]:
        """Account name -> account, for the two names that exist in the project."""
        found: dict[str, _Account] = {}
        for doc in self._list("list service accounts", self._project_path("service_accounts")):
            name, account_id = doc.get("name"), doc.get("id")
            if name not in self.account_names or not isinstance(account_id, str):
                continue
            assert isinstance(name, str)
            if name in found:
                raise IssuerError(
                    f"{self._name()}: project {self.project_id} has more than one service "
                    f"account named {name} ({found[name].id}, {account_id}); delete the one "
                    "consumers do not use"
                )
            found[name] = _Account(account_id, name)
        return found

    def _project_keys(self) -> list[_Key]:
        docs = self._list("list API keys", self._project_path("api_keys"),
                          {"owner_project_access": "any"})
        return [key for key in map(_key, docs) if key is not None]

    def _active(
        self, accounts: Mapping[str, _Account], keys: list[_Key], value: str | None
    ) -> tuple[str | None, _Key | None]:
        """Which of the two accounts holds ``value`` (the current key) and its key, or
        (None, None) when it is not one of theirs (a key made by hand, or no current key)."""
        if not value:
            return None, None
        matches = [
            (name, key) for name, account in accounts.items() for key in keys
            if key.account_id == account.id and redaction_matches(key.redacted, value)
        ]
        if len(matches) > 1:
            raise IssuerError(
                f"{self._name()}: the current key fits the redacted value of "
                f"{len(matches)} keys ({', '.join(k.id for _, k in matches)}); cannot tell which "
                "service account is in use"
            )
        return matches[0] if matches else (None, None)

    def _target(
        self, accounts: Mapping[str, _Account], keys: list[_Key], active: str | None
    ) -> str:
        """The account name the new key goes to: the other one, or a free one."""
        a, b = self.account_names
        if active is not None:
            return b if active == a else a
        free = [name for name in self.account_names if name not in accounts]
        if free:
            return free[0]

        # Neither holds the current key: recreate the one whose key was used least recently.
        def last_use(name: str) -> datetime:
            times = [k.last_used_at for k in keys
                     if k.account_id == accounts[name].id and k.last_used_at is not None]
            return max(times, default=datetime.min.replace(tzinfo=UTC))

        return min(self.account_names, key=last_use)

    def _retire_stale(self, account: _Account, keys: list[_Key]) -> None:
        """Delete an account left from an earlier rotation (rolled back, or never revoked),
        unless its keys were used recently: someone may still depend on it."""
        now = self._clock()
        for key in keys:
            used = key.last_used_at
            if key.account_id == account.id and used is not None and now - used <= USAGE_WINDOW:
                raise IssuerError(
                    f"{self._name()}: service account {account.name} ({account.id}) is left from "
                    f"an earlier rotation and its key {key.id} was last used at {_stamp(used)}; a "
                    "consumer may still use it. Move that consumer, then delete the account (or "
                    "revoke the key's rotation) before rotating again"
                )
        log.warning("%s: deleting service account %s (%s) left from an earlier rotation; its "
                    "key was not used in the last %s", self._name(), account.name, account.id,
                    _ago(USAGE_WINDOW))
        self._delete_account(account.id, "mint")

    def _create(self, name: str) -> tuple[str, str]:
        """Create service account ``name``; returns (key id, key value)."""
        doc = self._request("mint", "POST", self._project_path("service_accounts"),
                            body={"name": name})
        assert doc is not None
        account_id = doc.get("id")
        if not isinstance(account_id, str) or not account_id:
            raise self._payload("mint", f"the answer to creating {name} has no account id; "
                                "check the project for it")
        api_key = doc.get("api_key")
        if api_key is None:
            # Created without a key (the description allows it): ask for one.
            api_key = self._request(
                "mint", "POST",
                self._project_path("service_accounts", account_id, "api_keys"),
                body={"name": name},
            )
        key_id = api_key.get("id") if isinstance(api_key, Mapping) else None
        value = api_key.get("value") if isinstance(api_key, Mapping) else None
        if not isinstance(key_id, str) or not key_id or not isinstance(value, str) or not value:
            raise self._payload(
                "mint", f"service account {name} ({account_id}) was created but the answer has "
                "no key id and value; delete that account in the OpenAI dashboard"
            )
        return key_id, value

    def _delete_account(self, account_id: str, call: str) -> None:
        path = self._project_path("service_accounts", account_id)
        if self._request(call, "DELETE", path, missing_ok=True) is None:
            log.info("%s: service account %s was already gone", self._name(), account_id)

    # --- HTTP -------------------------------------------------------------------------------

    def _name(self) -> str:
        return f"{KIND} issuer ({self.project_id})"

    def _pair(self) -> str:
        return f"{self.account_names[0]} or {self.account_names[1]}"

    def _project_path(self, *parts: str) -> str:
        tail = "".join(f"/{quote(p, safe='')}" for p in parts)
        return f"/organization/projects/{quote(self.project_id, safe='')}{tail}"

    def _key_path(self, key_id: str) -> str:
        return self._project_path("api_keys", key_id)

    def _payload(self, call: str, what: str) -> IssuerError:
        return IssuerError(f"{self._name()}: {call} failed: unexpected answer: {what}")

    def _list(
        self, call: str, path: str, params: Mapping[str, str] | None = None
    ) -> list[Mapping[str, Any]]:
        items: list[Mapping[str, Any]] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            query: dict[str, str | int] = {"limit": PAGE_LIMIT, **(params or {})}
            if after is not None:
                query["after"] = after
            doc = self._request(call, "GET", path, params=query)
            assert doc is not None
            data = doc.get("data")
            if not isinstance(data, list):
                raise self._payload(call, "the list has no `data` array")
            page = [d for d in data if isinstance(d, Mapping)]
            items.extend(page)
            if doc.get("has_more") is not True:
                return items
            last = doc.get("last_id") or (page[-1].get("id") if page else None)
            if not isinstance(last, str) or not last:
                raise self._payload(call, "has_more is set but the page names no last id")
            after = last
        raise self._payload(call, f"more than {MAX_PAGES} pages of {PAGE_LIMIT}")

    def _request(
        self,
        call: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        body: Mapping[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """One call, retried once after a 429. The JSON object answered, None for a 404 when
        ``missing_ok``; else IssuerError naming the call, method, URL and status only."""
        url = self.base_url + path
        where = f"{method} {url}"
        headers = {"Authorization": f"Bearer {self._admin_key}"}
        failure = ""
        for attempt in (1, 2):
            try:
                response = self._client.request(
                    method, url, params=params, json=body, headers=headers,
                    timeout=self._timeout,
                )
            except httpx.TransportError as exc:
                failure = f"could not reach OpenAI ({type(exc).__name__})"
                break
            status = response.status_code
            if response.is_success:
                try:
                    doc = response.json()
                except ValueError:
                    doc = None
                if not isinstance(doc, dict):
                    failure = f"HTTP {status} but the answer is not a JSON object"
                    break
                return doc
            if status == 404 and missing_ok:
                return None
            code = self._error_code(response)
            if status == 429 and attempt == 1:
                wait = classify(status_code=status, headers=response.headers).retry_after_seconds
                wait = min(max(wait if wait is not None else DEFAULT_RETRY_WAIT, 0.0),
                           self._max_retry_wait)
                log.warning("%s: %s (%s) was rate limited (HTTP 429); retrying once in %.1fs",
                            self._name(), call, where, wait)
                self._sleep(wait)
                continue
            failure = self._describe(status, code, attempt)
            break
        message = f"{self._name()}: {call} ({where}) failed: {failure}"
        log.warning("%s", message)
        # Raised outside `except`: no httpx exception (with the Authorization header) chained.
        raise IssuerError(message)

    def _describe(self, status: int, code: str | None, attempts: int) -> str:
        with_code = f"HTTP {status}" + (f" {code}" if code else "")
        if status == 401:
            return (f"the admin key in ${self.admin_key_env} was refused ({with_code}); it must "
                    "be an active organization admin key")
        if status == 403:
            return (f"the admin key in ${self.admin_key_env} may not do this ({with_code}); it "
                    "needs write access to projects' service accounts and API keys")
        if status == 429:
            return f"rate limited ({with_code}) after {attempts} attempts, retry later"
        if status >= 500:
            return f"provider error HTTP {status}, retry later"
        return with_code

    @staticmethod
    def _error_code(response: httpx.Response) -> str | None:
        # Only `error.code`, and only when it is a plain identifier: the message may quote a key.
        try:
            doc = response.json()
        except ValueError:
            return None
        error = doc.get("error") if isinstance(doc, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        return code if isinstance(code, str) and _SAFE_CODE.fullmatch(code) else None
