"""Anthropic's Admin API on loopback, with the official SDK's types as the contract.

``AnthropicStandin`` serves the endpoints the ``anthropic`` issuer uses, with in-memory API keys
(their values kept, so ``partial_key_hint`` is computed as Anthropic shows it: the first 16
characters, ``...``, the last 4) and per-minute usage:

- ``GET /v1/organizations/api_keys`` (paged with ``after_id``/``before_id``)
- ``GET /v1/organizations/api_keys/{api_key_id}``
- ``POST /v1/organizations/api_keys/{api_key_id}`` (``name``, ``status``)
- ``GET /v1/organizations/analytics/usage`` (beta: needs ``anthropic-beta:
  analytics-usage-cost-2026-08-24``)

Every request is checked against the SDK's own description of it: the method and route exist,
the query fits the route's ``*_params`` TypedDict (no unknown parameter, lists sent as
``name[]`` as the SDK's ``brackets`` array format does, each value of the declared type, the
documented ranges), a JSON body fits ``APIKeyUpdateParams`` (no unknown field), and the
``anthropic-version`` and admin-key headers are present. A request that does not fit is
answered 400 and recorded in ``violations``. Every answer is built by validating a document
against the SDK's response model (``APIKey``, ``SyncPage[APIKey]``,
``SyncReportPageCursor[BetaAnalyticsUsageItem]``, ``ErrorResponse``), which also refuses a
field the model does not declare; an answer that does not fit is recorded in ``violations`` and
sent as a 500. Tests assert ``violations`` is empty.

Knobs: ``fail_next`` (a 429 with ``retry-after``, a 5xx, a 401 ``authentication_error``: their
messages quote the admin key, a canary for error text that repeats a body),
``seed_key``/``create_key`` (a key with a value), ``use`` (usage for a key),
``usage_unavailable`` (the usage report answers that status), ``data_lag`` (how far behind
``data_refreshed_at`` is).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pydantic
from anthropic.pagination import SyncPage, SyncReportPageCursor
from anthropic.types.beta.organization.analytics.beta_analytics_usage_item import (
    BetaAnalyticsUsageItem,
)
from anthropic.types.beta.organization.analytics.usage_list_params import UsageListParams
from anthropic.types.organization.api_key import APIKey
from anthropic.types.organization.api_key_list_params import APIKeyListParams
from anthropic.types.organization.api_key_update_params import APIKeyUpdateParams
from anthropic.types.shared.error_response import ErrorResponse

from harness.loopback import Loopback, QuietHandler

KEYS = "/v1/organizations/api_keys"
KEY_ONE = KEYS + "/{api_key_id}"
USAGE = "/v1/organizations/analytics/usage"
USAGE_BETA = "analytics-usage-cost-2026-08-24"
DEFAULT_WORKSPACE = "wrkspc_01DefaultWorkspace"
EARLIEST_USAGE = datetime(2026, 1, 1, tzinfo=UTC)
# SDK method arguments that travel in a header, not in the query.
NOT_QUERY = frozenset({"betas"})


def hint_of(value: str) -> str:
    """Anthropic's ``partial_key_hint``: ``sk-ant-api03-R2D...igAA``."""
    return f"{value[:16]}...{value[-4:]}"


def new_key_value() -> str:
    return "sk-ant-api03-CANARY-" + secrets.token_urlsafe(64)[:80] + "AA"


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- the SDK's types as the contract ------------------------------------------------------


def _is_list(annotation: Any) -> bool:
    """Whether a TypedDict field takes a list (``List[...]``, ``SequenceNotStr[...]``)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in args)
    if origin is typing.Annotated:
        return _is_list(args[0])
    return origin in (list, Sequence)


@dataclass(frozen=True)
class ParamsContract:
    """A ``*_params`` TypedDict of the SDK, for checking a query string."""

    params: type
    allowed_extra: frozenset[str] = frozenset()

    def check(self, raw_query: str) -> tuple[dict[str, Any], list[str]]:
        hints = typing.get_type_hints(self.params)
        fields = {k: v for k, v in hints.items() if k not in NOT_QUERY}
        raw = parse_qs(raw_query, keep_blank_values=True)
        problems: list[str] = []
        data: dict[str, Any] = {}
        for name, values in raw.items():
            bare = name.removesuffix("[]")
            if bare in self.allowed_extra and bare == name:
                continue
            if bare not in fields:
                problems.append(f"query parameter {name} is not one of "
                                f"{self.params.__name__}'s")
                continue
            if _is_list(fields[bare]):
                if name != bare + "[]":
                    problems.append(f"query parameter {bare} is a list: send it as {bare}[]")
                data[bare] = values
            else:
                if name != bare:
                    problems.append(f"query parameter {bare} is not a list, yet sent as {name}")
                if len(values) > 1:
                    problems.append(f"query parameter {bare} is given {len(values)} times")
                data[bare] = values[0]
        try:
            checked: dict[str, Any] = pydantic.TypeAdapter(self.params).validate_python(data)
        except pydantic.ValidationError as exc:
            problems += [f"query {'.'.join(map(str, e['loc']))}: {e['msg']}"
                         for e in exc.errors()]
            return data, problems
        return dict(checked), problems


def body_problems(params: type, raw: bytes) -> tuple[dict[str, Any], list[str]]:
    """A JSON body against a ``*_params`` TypedDict: an object, no unknown field, types fit."""
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        return {}, ["the request body is not JSON"]
    if not isinstance(body, dict):
        return {}, ["the request body is not a JSON object"]
    known = typing.get_type_hints(params)
    problems = [f"body field {name} is not one of {params.__name__}'s"
                for name in body if name not in known]
    try:
        pydantic.TypeAdapter(params).validate_python(body, strict=True)
    except pydantic.ValidationError as exc:
        problems += [f"body {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return body, problems


def _extras(value: Any, where: str) -> list[str]:
    """Fields a document carried that the SDK model does not declare (at any depth)."""
    found: list[str] = []
    if isinstance(value, pydantic.BaseModel):
        for name in (value.model_extra or {}):
            found.append(f"{where}.{name} is not a field of {type(value).__name__}")
        for name in type(value).model_fields:
            found += _extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _extras(item, f"{where}[{index}]")
    return found


def conform(model: type[pydantic.BaseModel], document: dict[str, Any]) -> tuple[Any, list[str]]:
    """``document`` as the SDK model would parse it, dumped back to JSON; with the problems."""
    try:
        parsed = model.model_validate(document)
    except pydantic.ValidationError as exc:
        return None, [f"{model.__name__} {'.'.join(map(str, e['loc']))}: {e['msg']}"
                      for e in exc.errors()]
    problems = _extras(parsed, model.__name__)
    return parsed.model_dump(mode="json"), problems


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message},
            "request_id": "req_" + secrets.token_hex(8)}


# --- state --------------------------------------------------------------------------------


@dataclass
class Key:
    id: str
    name: str
    value: str
    status: str
    workspace_id: str | None
    created_at: datetime
    created_by: str = "user_01Person"

    @property
    def hint(self) -> str:
        return hint_of(self.value)

    def document(self) -> dict[str, Any]:
        scope: dict[str, Any] = (
            {"type": "workspace", "workspace_id": self.workspace_id} if self.workspace_id
            else {"type": "organization"})
        return {
            "id": self.id, "type": "api_key", "name": self.name,
            "created_at": _stamp(self.created_at),
            "created_by": {"id": self.created_by, "type": "user"},
            "expires_at": None, "partial_key_hint": self.hint, "principal": None,
            "scope": scope, "status": self.status,
        }


@dataclass(frozen=True)
class Use:
    at: datetime
    requests: int
    tokens: int


@dataclass
class Fault:
    """Answer the next request (that fits the contract) with this instead."""

    status: int
    retry_after: str | None = None


@dataclass
class Seen:
    method: str
    path: str
    route: str | None
    query: dict[str, Any]
    body: Any
    status: int


ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"^/v1/organizations/api_keys$"), KEYS),
    ("GET", re.compile(r"^/v1/organizations/api_keys/(?P<api_key_id>[^/]+)$"), KEY_ONE),
    ("POST", re.compile(r"^/v1/organizations/api_keys/(?P<api_key_id>[^/]+)$"), KEY_ONE),
    ("GET", re.compile(r"^/v1/organizations/analytics/usage$"), USAGE),
]
QUERIES: dict[tuple[str, str], ParamsContract | None] = {
    ("GET", KEYS): ParamsContract(APIKeyListParams),
    ("GET", KEY_ONE): None,
    ("POST", KEY_ONE): None,
    # The SDK marks beta routes with `?beta=true`.
    ("GET", USAGE): ParamsContract(UsageListParams, frozenset({"beta"})),
}


@dataclass
class AnthropicStandin:
    """The Admin API's state and knobs; ``start()`` serves it on loopback."""

    admin_key: str = field(
        default_factory=lambda: "sk-ant-admin01-CANARY-" + secrets.token_urlsafe(24))
    keys: dict[str, Key] = field(default_factory=dict)
    uses: dict[str, list[Use]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    usage_unavailable: int | None = None  # e.g. 403: the usage report refuses this org
    data_lag: timedelta = timedelta(0)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Loopback | None = None

    # --- knobs ------------------------------------------------------------------------------

    def seed_key(self, value: str | None = None, *, name: str = "made in the console",
                 status: str = "active",
                 workspace_id: str | None = DEFAULT_WORKSPACE) -> Key:
        """A key as a person creates it in the console (its value shown to them once)."""
        with self.lock:
            key = Key("apikey_01" + secrets.token_hex(10), name, value or new_key_value(),
                      status, workspace_id, datetime.now(UTC))
            self.keys[key.id] = key
            return key

    create_key = seed_key

    def fail_next(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def use(self, key_id: str, at: datetime | None = None, *, requests: int = 1,
            tokens: int = 120) -> None:
        """Key ``key_id`` made ``requests`` requests (now, or at ``at``)."""
        with self.lock:
            self.uses.setdefault(key_id, []).append(
                Use(at or datetime.now(UTC), requests, tokens))

    def forget_usage(self, key_id: str) -> None:
        with self.lock:
            self.uses.pop(key_id, None)

    def status_of(self, key_id: str) -> str:
        with self.lock:
            return self.keys[key_id].status

    def valid(self, value: str) -> bool:
        """Would Anthropic accept this key value now?"""
        with self.lock:
            return any(k.value == value and k.status == "active" for k in self.keys.values())

    def calls(self) -> list[tuple[str, str | None]]:
        with self.lock:
            return [(s.method, s.route) for s in self.seen]

    # --- serving ----------------------------------------------------------------------------

    def start(self) -> AnthropicStandin:
        self.server = Loopback(_handler(self))
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.url

    # --- the API ----------------------------------------------------------------------------

    def check(self, method: str, path: str, raw_query: str, headers: dict[str, str],
              raw_body: bytes) -> tuple[str | None, dict[str, str], dict[str, Any], Any,
                                        list[str]]:
        """(route, path parameters, query, body, problems) of one request."""
        matching = [(m, rx, route) for m, rx, route in ROUTES if rx.match(path)]
        chosen = next(((rx, route) for m, rx, route in matching if m == method), None)
        if chosen is None:
            what = (f"{method} is not a method of {matching[0][2]}" if matching
                    else f"no Admin API route the issuer uses matches {path}")
            return None, {}, {}, None, [what]
        regex, route = chosen
        found = regex.match(path)
        assert found is not None
        path_params = {k: unquote(v) for k, v in found.groupdict().items()}
        problems: list[str] = []
        if not headers.get("anthropic-version"):
            problems.append("no anthropic-version header")
        bearer = headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not (headers.get("x-api-key") or bearer):
            problems.append("no x-api-key or Authorization: Bearer header")
        contract = QUERIES[(method, route)]
        query: dict[str, Any] = {}
        if contract is None:
            if raw_query:
                problems.append(f"{method} {route} takes no query parameters")
        else:
            query, more = contract.check(raw_query)
            problems += more
        body: Any = None
        if method == "POST":
            if not headers.get("content-type", "").startswith("application/json"):
                problems.append("the body is not sent as application/json")
            body, more = body_problems(APIKeyUpdateParams, raw_body)
            problems += more
        elif raw_body:
            problems.append(f"{method} {route} takes no body")
        if route == USAGE and not problems:
            problems += self._usage_rules(headers, query)
        if route == KEYS and not problems:
            limit = query.get("limit", 20)
            if not 1 <= limit <= 1000:
                problems.append(f"query limit: {limit} is not within 1 to 1000")
        return route, path_params, query, body, problems

    @staticmethod
    def _usage_rules(headers: dict[str, str], query: dict[str, Any]) -> list[str]:
        """What the SDK's docstrings say of the usage report's parameters."""
        problems: list[str] = []
        betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",")]
        if USAGE_BETA not in betas:
            problems.append(f"no anthropic-beta: {USAGE_BETA} header")
        moments: dict[str, datetime] = {}
        for name in ("starting_at", "ending_at"):
            raw = query.get(name)
            if raw is None:
                continue
            try:
                moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            except ValueError:
                problems.append(f"query {name}: {raw!r} is not an RFC 3339 time")
                continue
            if moment.tzinfo is None:
                problems.append(f"query {name}: {raw!r} has no time zone")
                continue
            moments[name] = moment
        width = query.get("time_bucket_width")
        start, end = moments.get("starting_at"), moments.get("ending_at")
        now = datetime.now(UTC)
        if start is not None and (start < EARLIEST_USAGE or start < now - timedelta(days=365)):
            problems.append("query starting_at: earlier than the report allows")
        if width is not None and "ending_at" not in query:
            problems.append("query ending_at is required with time_bucket_width")
        if start is not None and end is not None:
            if end <= start:
                problems.append("query ending_at is not after starting_at")
            elif width == "1m" and end - start > timedelta(hours=24):
                problems.append("query: a 1m report spans at most 24 hours")
            elif end - start > timedelta(days=31):
                problems.append("query: the range spans at most 31 days")
        if len(query.get("group_by") or []) > 5:
            problems.append("query group_by: at most 5 dimensions")
        limit = query.get("limit", 20)
        if not 1 <= limit <= 1000:
            problems.append(f"query limit: {limit} is not within 1 to 1000")
        return problems

    def answer(self, route: str, method: str, p: dict[str, str], query: dict[str, Any],
               body: Any) -> tuple[int, type[pydantic.BaseModel], dict[str, Any]]:
        """The API's answer to a request that fits the contract: status, model, document."""
        if route == KEYS:
            listed = [k for k in self.keys.values()
                      if query.get("workspace_id") in (None, k.workspace_id)
                      and query.get("status") in (None, k.status)]
            return 200, SyncPage[APIKey], self._page([k.document() for k in listed], query)
        if route == KEY_ONE:
            key = self.keys.get(p["api_key_id"])
            if key is None:
                return 404, ErrorResponse, _error("not_found_error", "API key not found")
            if method == "POST":
                status = body.get("status")
                if status is not None and status != key.status:
                    if key.status in ("archived", "expired"):
                        return 400, ErrorResponse, _error(
                            "invalid_request_error", f"An {key.status} API key cannot be "
                            "changed")
                    key.status = status
                if body.get("name") is not None:
                    key.name = body["name"]
            return 200, APIKey, key.document()
        assert route == USAGE
        if self.usage_unavailable is not None:
            kind = {403: "permission_error", 404: "not_found_error"}.get(
                self.usage_unavailable, "invalid_request_error")
            return self.usage_unavailable, ErrorResponse, _error(
                kind, "The usage report is not available to this organization")
        return 200, SyncReportPageCursor[BetaAnalyticsUsageItem], self._usage(query)

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
        ids = [i["id"] for i in items]
        limit = int(query.get("limit", 20))
        if query.get("after_id") is not None:
            after = query["after_id"]
            items = items[ids.index(after) + 1:] if after in ids else []
            page, more = items[:limit], len(items) > limit
        elif query.get("before_id") is not None:
            before = query["before_id"]
            items = items[:ids.index(before)] if before in ids else []
            page, more = items[-limit:], len(items) > limit
        else:
            page, more = items[:limit], len(items) > limit
        return {"data": page, "has_more": more,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}

    def _usage(self, query: dict[str, Any]) -> dict[str, Any]:
        now = datetime.now(UTC)
        start = datetime.fromisoformat(str(query["starting_at"]).replace("Z", "+00:00"))
        raw_end = query.get("ending_at")
        end = (datetime.fromisoformat(str(raw_end).replace("Z", "+00:00")) if raw_end
               else min(now, start + timedelta(days=31)))
        width = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1),
                 "1d": timedelta(days=1)}.get(query.get("time_bucket_width") or "")
        if width is None:  # one row per group for the whole range, in whole hours
            start = start.replace(minute=0, second=0, microsecond=0)
            end = end.replace(minute=0, second=0, microsecond=0)
        wanted = query.get("api_key_ids")
        group_by = set(query.get("group_by") or [])
        refreshed = now - self.data_lag
        totals: dict[tuple[datetime, datetime, str | None, str | None], list[int]] = {}
        for key_id, uses in self.uses.items():
            if wanted is not None and key_id not in wanted:
                continue
            key = self.keys.get(key_id)
            for use in uses:
                if not start <= use.at < end or use.at > refreshed:
                    continue
                if width is None:
                    bucket = (start, end)
                else:
                    n = (use.at - start) // width
                    bucket = (start + n * width, start + (n + 1) * width)
                group = (key_id if "api_key_id" in group_by else None,
                         key.workspace_id if key and "workspace_id" in group_by else None)
                total = totals.setdefault((*bucket, *group), [0, 0])
                total[0] += use.requests
                total[1] += use.tokens
        rows = [
            {"starting_at": _stamp(b_start), "ending_at": _stamp(b_end),
             "group": {"api_key_id": api_key_id, "workspace_id": workspace_id},
             "usage": {"requests": requests, "total_tokens": tokens,
                       "uncached_input_tokens": tokens // 2, "output_tokens": tokens // 2,
                       "cache_read_input_tokens": 0,
                       "cache_creation": {"ephemeral_1h_input_tokens": 0,
                                          "ephemeral_5m_input_tokens": 0},
                       "server_tool_use": {"web_search_requests": 0}}}
            for (b_start, b_end, api_key_id, workspace_id), (requests, tokens)
            in sorted(totals.items(), key=lambda item: item[0][0], reverse=True)
        ]
        offset = int(query.get("page") or 0)
        limit = int(query.get("limit", 20))
        page = rows[offset:offset + limit]
        more = offset + limit < len(rows)
        return {"data": page, "has_more": more,
                "next_page": str(offset + limit) if more else None,
                "data_refreshed_at": _stamp(refreshed)}


def _handler(standin: AnthropicStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            method = self.command
            route, params, query, body, problems = standin.check(
                method, parts.path, parts.query, headers, raw)
            extra = {"request-id": "req_" + secrets.token_hex(8)}
            presented = headers.get("x-api-key") or headers.get(
                "authorization", "").removeprefix("Bearer ").strip()
            with standin.lock:
                model: type[pydantic.BaseModel] = ErrorResponse
                if problems:
                    where = f"{method} {parts.path}"
                    standin.violations += [f"{where}: {p}" for p in problems]
                    status, document = 400, _error(
                        "invalid_request_error",
                        "request does not match the SDK's types: " + "; ".join(problems))
                elif presented != standin.admin_key:
                    # Anthropic says "invalid x-api-key"; quoting what was sent is a canary.
                    status, document = 401, _error(
                        "authentication_error", f"invalid x-api-key {presented}")
                elif standin.faults:
                    fault = standin.faults.pop(0)
                    status = fault.status
                    kind = {401: "authentication_error", 403: "permission_error",
                            429: "rate_limit_error", 529: "overloaded_error"}.get(
                        status, "api_error")
                    document = _error(kind, f"{kind} for key {standin.admin_key}")
                    if fault.retry_after is not None:
                        extra["retry-after"] = fault.retry_after
                else:
                    assert route is not None
                    status, model, document = standin.answer(route, method, params, query,
                                                             body)
                sent, wrong = conform(model, document)
                if wrong:
                    standin.violations += [f"{method} {parts.path} answer: {w}" for w in wrong]
                    status, sent = 500, _error("api_error", "the stand-in's answer does not "
                                               "fit the SDK's types")
                standin.seen.append(Seen(method, parts.path, route, query, body, status))
            self.reply(status, sent, headers=extra)

        do_GET = _serve
        do_POST = _serve
        do_DELETE = _serve
        do_PUT = _serve
        do_PATCH = _serve

    return Handler


def started() -> Iterator[AnthropicStandin]:
    """For a fixture: a started stand-in, stopped afterwards."""
    standin = AnthropicStandin().start()
    try:
        yield standin
    finally:
        standin.stop()
