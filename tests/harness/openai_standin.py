"""OpenAI's organization admin API on loopback, checked against OpenAI's own description.

``OpenAIStandin`` serves the project service-account and API-key endpoints the ``openai``
issuer uses, with in-memory projects, service accounts and keys (``last_used_at`` included).
Every request is first checked against the vendored OpenAPI description
(``data/openai_admin_openapi.json``): the method and path template exist, path and query
parameters fit their schemas and no unknown query parameter is sent, a JSON body fits the
``requestBody`` schema (``$ref``s resolved within the document, JSON Schema 2020-12 as OpenAPI
3.1 uses), and an ``Authorization: Bearer`` header is present where the operation's security
asks for one. A request that breaks the description is answered 400 and recorded in
``violations``. Every answer the stand-in gives is validated against the response schema the
description declares for it (``ErrorResponse`` for undeclared error statuses); a mismatch is
recorded in ``response_violations``. Tests assert both stay empty.

As the description says, ``DELETE .../api_keys/{api_key_id}`` refuses a key that belongs to a
service account (400); deleting a service account deletes its key.

Knobs: ``fail_next`` (a 429 with ``retry-after``, a 5xx, a 401 ``invalid_api_key``),
``use(key_id)`` (sets ``last_used_at``), ``key_on_create`` (False: creating a service account
returns ``api_key: null``), ``seed_service_account`` and ``seed_user_key``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from harness.loopback import Loopback, QuietHandler

SPEC_FILE = Path(__file__).parent / "data" / "openai_admin_openapi.json"
SPEC_URI = "urn:rotabot:openai-admin-openapi"
PREFIX = "/v1"  # the description's server is https://api.openai.com/v1
ERROR_SCHEMA = "/components/schemas/ErrorResponse"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    pointer: str  # JSON pointer of the operation object in the document
    regex: re.Pattern[str]
    spec: dict[str, Any]


@dataclass
class Checked:
    """A request matched to its operation, with what the description says is wrong with it."""

    operation: Operation | None
    path_params: dict[str, str]
    query: dict[str, Any]
    body: Any
    problems: list[str]


class OpenAPIDescription:
    """The vendored description, compiled for request and response checks."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, resource)
        self.operations: list[Operation] = []
        for template, item in document["paths"].items():
            regex = re.compile(
                "^" + re.sub(r"\\\{([A-Za-z0-9_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
                + "$"
            )
            for method, spec in item.items():
                if method in METHODS:
                    self.operations.append(Operation(
                        method.upper(), template, _pointer("paths", template, method), regex,
                        spec))
        self._validators: dict[str, Draft202012Validator] = {}

    def validate(self, pointer: str, instance: Any) -> list[str]:
        """Problems of ``instance`` against the schema at ``pointer`` in the document."""
        validator = self._validators.get(pointer)
        if validator is None:
            validator = Draft202012Validator(
                {"$ref": f"{SPEC_URI}#{pointer}"}, registry=self.registry)
            self._validators[pointer] = validator
        return [
            f"{'/'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
            for error in validator.iter_errors(instance)
        ]

    def _parameters(self, op: Operation) -> list[tuple[dict[str, Any], str]]:
        """The operation's parameters with the pointer of each one's schema."""
        found: list[tuple[dict[str, Any], str]] = []
        item_pointer = _pointer("paths", op.template)
        item = self.document["paths"][op.template]
        for where, params in ((item_pointer, item.get("parameters", [])),
                              (op.pointer, op.spec.get("parameters", []))):
            for index, param in enumerate(params):
                if "$ref" in param:
                    raise NotImplementedError("parameter $ref")
                found.append((param, f"{where}/parameters/{index}/schema"))
        return found

    def check_request(
        self, method: str, path: str, raw_query: str, headers: dict[str, str], raw_body: bytes
    ) -> Checked:
        problems: list[str] = []
        candidates = [op for op in self.operations if op.regex.match(path)]
        op = next((o for o in candidates if o.method == method), None)
        if op is None:
            what = (f"{method} is not an operation of {candidates[0].template}" if candidates
                    else f"no path template in the description matches {path}")
            return Checked(None, {}, {}, None, [what])
        match = op.regex.match(path)
        assert match is not None
        path_params = {k: unquote(v) for k, v in match.groupdict().items()}
        query_lists = parse_qs(raw_query, keep_blank_values=True)
        query: dict[str, Any] = {}
        known: set[str] = set()
        for param, schema_pointer in self._parameters(op):
            name, where = param["name"], param["in"]
            if where == "path":
                known_value: Any = path_params.get(name)
                if known_value is None:
                    problems.append(f"path parameter {name} is missing")
                    continue
                problems += [f"path parameter {name}: {p}" for p in
                             self.validate(schema_pointer, known_value)]
            elif where == "query":
                known.add(name)
                values = query_lists.get(name)
                if values is None:
                    if param.get("required"):
                        problems.append(f"query parameter {name} is required")
                    continue
                if len(values) > 1:
                    problems.append(f"query parameter {name} is given {len(values)} times")
                value = self._coerce(values[0], param.get("schema", {}))
                query[name] = value
                problems += [f"query parameter {name}: {p}" for p in
                             self.validate(schema_pointer, value)]
        problems += [f"query parameter {name} is not in the description"
                     for name in sorted(set(query_lists) - known)]
        problems += self._check_auth(op, headers)
        body: Any = None
        request_body = op.spec.get("requestBody")
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if request_body is None:
            if raw_body:
                problems.append(f"{method} {op.template} takes no request body")
        elif not raw_body:
            if request_body.get("required"):
                problems.append("the request body is required")
        elif content_type not in request_body.get("content", {}):
            problems.append(f"content type {content_type or 'none'} is not one the operation "
                            f"accepts ({', '.join(request_body.get('content', {}))})")
        else:
            try:
                body = json.loads(raw_body)
            except ValueError:
                problems.append("the request body is not JSON")
            else:
                schema = (f"{op.pointer}/requestBody/content"
                          f"{_pointer(content_type)}/schema")
                problems += [f"request body {p}" for p in self.validate(schema, body)]
        return Checked(op, path_params, query, body, problems)

    def _check_auth(self, op: Operation, headers: dict[str, str]) -> list[str]:
        security = op.spec.get("security", self.document.get("security", []))
        if not security:
            return []
        schemes = self.document["components"]["securitySchemes"]
        for requirement in security:
            if all(schemes[name].get("scheme") == "bearer" for name in requirement):
                authorization = headers.get("authorization", "")
                if authorization.startswith("Bearer ") and authorization[7:].strip():
                    return []
        return ["no Authorization: Bearer header, which the operation's security requires"]

    @staticmethod
    def _coerce(value: str, schema: dict[str, Any]) -> Any:
        kind = schema.get("type")
        if kind == "integer" and re.fullmatch(r"-?\d+", value):
            return int(value)
        if kind == "boolean" and value in ("true", "false"):
            return value == "true"
        return value

    def check_response(self, op: Operation | None, status: int, body: Any) -> list[str]:
        """Problems of an answer against the response schema declared for ``status``."""
        if op is not None and str(status) in op.spec.get("responses", {}):
            response = op.spec["responses"][str(status)]
            pointer = f"{op.pointer}/responses/{status}"
            if "$ref" in response:
                pointer = response["$ref"].removeprefix("#")
                response = self.document["components"]["responses"][pointer.split("/")[-1]]
            content = response.get("content", {})
            if "application/json" not in content:
                return [] if body is None else [f"HTTP {status} declares no JSON body"]
            return self.validate(f"{pointer}/content/application~1json/schema", body)
        if status >= 400:
            return self.validate(ERROR_SCHEMA, body)
        return [f"HTTP {status} is not a response the description declares"]


@lru_cache(maxsize=1)
def description() -> OpenAPIDescription:
    return OpenAPIDescription(json.loads(SPEC_FILE.read_text("utf-8")))


# --- state ---------------------------------------------------------------------------------


@dataclass
class Account:
    id: str
    project_id: str
    name: str
    created_at: int
    role: str = "member"


@dataclass
class Key:
    id: str
    project_id: str
    value: str
    name: str
    created_at: int
    account_id: str | None  # None: a user's key
    last_used_at: int | None = None

    @property
    def redacted(self) -> str:
        return f"{self.value[:6]}...{self.value[-3:]}"  # as the description's "sk-abc...def"


@dataclass
class Fault:
    """Answer the next request (that passes the description) with this instead."""

    status: int
    retry_after: str | None = None
    code: str | None = None


@dataclass
class Seen:
    method: str
    path: str
    template: str | None
    query: dict[str, Any]
    body: Any
    status: int


@dataclass
class OpenAIStandin:
    """The admin API's state and knobs; ``start()`` serves it on loopback."""

    admin_key: str = field(default_factory=lambda: "sk-admin-CANARY-" + secrets.token_hex(12))
    projects: dict[str, str] = field(default_factory=dict)  # id -> name
    accounts: dict[str, Account] = field(default_factory=dict)
    keys: dict[str, Key] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    response_violations: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    key_on_create: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: Loopback | None = None

    # --- knobs ----------------------------------------------------------------------------

    def add_project(self, name: str = "rotation") -> str:
        project_id = "proj_" + secrets.token_hex(8)
        self.projects[project_id] = name
        return project_id

    def seed_service_account(self, project_id: str, name: str,
                             key_value: str | None = None) -> tuple[Account, Key]:
        with self.lock:
            account = self._new_account(project_id, name)
            return account, self._new_key(project_id, account.id, "Secret Key", key_value)

    def seed_user_key(self, project_id: str, value: str | None = None) -> Key:
        with self.lock:
            return self._new_key(project_id, None, "made by hand", value)

    def fail_next(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def use(self, key_id: str, at: float | None = None) -> None:
        """A consumer used key ``key_id`` (now, or at Unix time ``at``)."""
        with self.lock:
            self.keys[key_id].last_used_at = int(time.time() if at is None else at)

    def valid(self, value: str) -> bool:
        """Would OpenAI accept this key value now?"""
        with self.lock:
            return any(k.value == value for k in self.keys.values())

    def account_named(self, name: str) -> Account | None:
        with self.lock:
            return next((a for a in self.accounts.values() if a.name == name), None)

    def keys_of(self, account_id: str) -> list[Key]:
        with self.lock:
            return [k for k in self.keys.values() if k.account_id == account_id]

    def calls(self) -> list[tuple[str, str | None]]:
        with self.lock:
            return [(s.method, s.template) for s in self.seen]

    # --- serving ----------------------------------------------------------------------------

    def start(self) -> OpenAIStandin:
        self.server = Loopback(_handler(self))
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return self.server.url + PREFIX

    # --- the API ----------------------------------------------------------------------------

    def _new_account(self, project_id: str, name: str) -> Account:
        account = Account("svc_acct_" + secrets.token_hex(8), project_id, name, int(time.time()))
        self.accounts[account.id] = account
        return account

    def _new_key(self, project_id: str, account_id: str | None, name: str,
                 value: str | None = None) -> Key:
        key = Key("key_" + secrets.token_hex(8), project_id,
                  value or "sk-svcacct-CANARY-" + secrets.token_urlsafe(24), name,
                  int(time.time()), account_id)
        self.keys[key.id] = key
        return key

    def _account_doc(self, account: Account) -> dict[str, Any]:
        return {"object": "organization.project.service_account", "id": account.id,
                "name": account.name, "role": account.role, "created_at": account.created_at}

    def _new_key_doc(self, key: Key, kind: str) -> dict[str, Any]:
        return {"object": kind, "value": key.value, "name": key.name,
                "created_at": key.created_at, "id": key.id}

    def _key_doc(self, key: Key) -> dict[str, Any]:
        if key.account_id is not None:
            account = self.accounts[key.account_id]
            owner: dict[str, Any] = {"type": "service_account", "service_account": {
                "id": account.id, "name": account.name, "created_at": account.created_at,
                "role": account.role}}
        else:
            owner = {"type": "user", "user": {
                "id": "user_abc", "name": "First Last", "email": "user@example.com",
                "role": "owner", "created_at": key.created_at}}
        return {"object": "organization.project.api_key", "redacted_value": key.redacted,
                "name": key.name, "created_at": key.created_at,
                "last_used_at": key.last_used_at, "id": key.id,
                "owner_project_access": "active", "owner": owner}

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
        after = query.get("after")
        if after is not None:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        limit = int(query.get("limit", 20))
        page, more = items[:limit], len(items) > limit
        return {"object": "list", "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": more}

    def answer(self, checked: Checked, method: str) -> tuple[int, Any]:
        """The API's answer to a request that fits the description."""
        op = checked.operation
        assert op is not None
        p, template = checked.path_params, op.template
        project_id = p.get("project_id")
        if project_id is not None and project_id not in self.projects:
            return 404, _error(f"No such project: {project_id}", "not_found")
        base = "/organization/projects/{project_id}"
        if template == base + "/service_accounts":
            if method == "GET":
                docs = [self._account_doc(a) for a in self.accounts.values()
                        if a.project_id == project_id]
                return 200, self._page(docs, checked.query)
            assert project_id is not None
            account = self._new_account(project_id, checked.body["name"])
            doc = self._account_doc(account)
            only = bool(checked.body.get("create_service_account_only"))
            if only:
                account.role = doc["role"] = "none"
            if self.key_on_create and not only:
                key = self._new_key(project_id, account.id, "Secret Key")
                doc["api_key"] = self._new_key_doc(
                    key, "organization.project.service_account.api_key")
            else:
                doc["api_key"] = None
            return 200, doc
        if template == base + "/service_accounts/{service_account_id}":
            found = self.accounts.get(p["service_account_id"])
            if found is None or found.project_id != project_id:
                return 404, _error("No such service account", "not_found")
            if method == "GET":
                return 200, self._account_doc(found)
            if method == "DELETE":
                del self.accounts[found.id]
                for key_id in [k.id for k in self.keys.values() if k.account_id == found.id]:
                    del self.keys[key_id]
                return 200, {"object": "organization.project.service_account.deleted",
                             "id": found.id, "deleted": True}
        if template == base + "/service_accounts/{service_account_id}/api_keys":
            owner = self.accounts.get(p["service_account_id"])
            if owner is None or owner.project_id != project_id:
                return 404, _error("No such service account", "not_found")
            assert project_id is not None
            body = checked.body or {}
            key = self._new_key(project_id, owner.id, body.get("name", "Secret Key"))
            return 200, self._new_key_doc(key, "organization.project.service_account.api_key")
        if template == base + "/api_keys":
            docs = [self._key_doc(k) for k in self.keys.values() if k.project_id == project_id]
            return 200, self._page(docs, checked.query)
        if template == base + "/api_keys/{api_key_id}":
            listed = self.keys.get(p["api_key_id"])
            if listed is None or listed.project_id != project_id:
                return 404, _error("No such API key", "not_found")
            if method == "GET":
                return 200, self._key_doc(listed)
            if listed.account_id is not None:
                return 400, _error("Service account keys cannot be deleted; delete the service "
                                   "account instead", "invalid_request")
            del self.keys[listed.id]
            return 200, {"object": "organization.project.api_key.deleted", "id": listed.id,
                         "deleted": True}
        return 501, _error(f"the stand-in does not implement {method} {template}",
                           "not_implemented")


def _error(message: str, code: str | None, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _handler(standin: OpenAIStandin) -> type[BaseHTTPRequestHandler]:
    spec = description()

    class Handler(QuietHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            parts = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            method = self.command
            if not parts.path.startswith(PREFIX + "/"):
                checked = Checked(None, {}, {}, None, [f"{parts.path} is not under {PREFIX}"])
            else:
                checked = spec.check_request(
                    method, parts.path.removeprefix(PREFIX), parts.query, headers, raw)
            extra: dict[str, str] = {}
            with standin.lock:
                if checked.problems:
                    where = f"{method} {parts.path}"
                    standin.violations += [f"{where}: {p}" for p in checked.problems]
                    status, body = 400, _error(
                        "request does not match the API description: "
                        + "; ".join(checked.problems), "invalid_request")
                elif headers.get("authorization") != f"Bearer {standin.admin_key}":
                    # As OpenAI does, the message quotes the key it was sent (here in full:
                    # a canary for error text that repeats a body).
                    presented = headers.get("authorization", "").removeprefix("Bearer ")
                    status, body = 401, _error(
                        f"Incorrect API key provided: {presented}.", "invalid_api_key")
                elif standin.faults:
                    fault = standin.faults.pop(0)
                    status = fault.status
                    if fault.status == 401:
                        body = _error(f"Incorrect API key provided: {standin.admin_key}.",
                                      fault.code or "invalid_api_key")
                    elif fault.status == 429:
                        body = _error("Rate limit reached for requests; "
                                      f"key {standin.admin_key}", fault.code or
                                      "rate_limit_exceeded", "requests")
                    else:
                        body = _error(f"The server had an error ({standin.admin_key})",
                                      fault.code, "server_error")
                    if fault.retry_after is not None:
                        extra["retry-after"] = fault.retry_after
                else:
                    status, body = standin.answer(checked, method)
                standin.response_violations += [
                    f"{method} {parts.path} HTTP {status}: {p}"
                    for p in spec.check_response(checked.operation, status, body)]
                standin.seen.append(Seen(
                    method, parts.path,
                    checked.operation.template if checked.operation else None,
                    checked.query, checked.body, status))
            self.reply(status, body, headers=extra)

        do_GET = _serve
        do_POST = _serve
        do_DELETE = _serve
        do_PUT = _serve
        do_PATCH = _serve

    return Handler


def started() -> Iterator[OpenAIStandin]:
    """For a fixture: a started stand-in with one project, stopped afterwards."""
    standin = OpenAIStandin()
    standin.add_project()
    standin.start()
    try:
        yield standin
    finally:
        standin.stop()
