"""The ``http`` issuer against a provider stand-in on loopback that mints, revokes and fails."""

from __future__ import annotations

import json
import logging
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from harness.loopback import Loopback, QuietHandler

from adapters.http_issuer import HttpIssuer, HttpIssuerError, json_lookup
from bot import catalog
from bot.domain.credentials import IssuerError
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer

ADMIN_TOKEN = "admin-CANARY-7f3a91-provider-admin-token"
# Failure bodies echo this, as careless providers echo the key they were sent or made.
CANARY_SECRET = "sk-CANARY-2c9d04-never-in-an-error"
ENV = {"PROVIDER_ADMIN_TOKEN": ADMIN_TOKEN, "PROVIDER_ORG": "org-42"}
SHORT_READ = httpx.Timeout(0.3, connect=5.0)


@dataclass
class Fault:
    """What the stand-in does with the next matching request instead of serving it."""

    status: int | None = None  # None with close/hang
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    close: bool = False  # drop the connection without answering
    hang: bool = False  # answer nothing until the test ends


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Provider:
    """A key-management API: ``POST /v1/keys``, ``POST /v2/keys`` (list-shaped answer),
    ``DELETE /v1/keys/{id}``. Requests without the admin token get 401."""

    def __init__(self) -> None:
        self.keys: dict[str, str] = {}
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self._counter = 0

    def fail_next(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def create(self, wanted_id: str | None) -> tuple[str, str]:
        with self.lock:
            self._counter += 1
            key_id = wanted_id or f"key_{self._counter}"
            secret = f"sk-live-{secrets.token_hex(12)}"
            self.keys[key_id] = secret
            return key_id, secret


def _handler(provider: Provider) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            with provider.lock:
                provider.seen.append(Seen(self.command, self.path, dict(self.headers), body))
                fault = provider.faults.pop(0) if provider.faults else None
            if fault is not None:
                if fault.close:
                    self.close_connection = True
                    return
                if fault.hang:
                    provider.release.wait(10)
                    return
                assert fault.status is not None
                content_type = "application/json" if fault.body is None or fault.body.startswith(
                    "{") else "text/plain"
                self.reply(fault.status, fault.body, headers=fault.headers,
                           content_type=content_type)
                return
            if self.headers.get("Authorization") != f"Bearer {ADMIN_TOKEN}":
                self.reply(401, json.dumps({"error": "invalid_api_key"}))
                return
            if self.command == "POST" and self.path in ("/v1/keys", "/v2/keys"):
                wanted = body.get("id") if isinstance(body, dict) else None
                key_id, secret = provider.create(wanted)
                if self.path == "/v1/keys":
                    answer: Any = {"data": {"id": key_id, "key": {"secret": secret}}}
                else:
                    answer = {"data": [{"id": key_id, "secret": secret}], "count": 1}
                self.reply(201, json.dumps(answer))
                return
            if self.command == "DELETE" and self.path.startswith("/v1/keys/"):
                key_id = unquote(self.path.removeprefix("/v1/keys/"))
                with provider.lock:
                    gone = provider.keys.pop(key_id, None)
                if gone is None:
                    self.reply(404, json.dumps({"error": "not_found", "id": key_id}))
                else:
                    self.reply(204, None)
                return
            self.reply(404, json.dumps({"error": "no such route"}))

        do_POST = _serve
        do_PUT = _serve
        do_DELETE = _serve

    return Handler


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    state = Provider()
    with Loopback(_handler(state), before_stop=state.release.set) as server:
        yield state, server.url


def config(base: str, *, create_path: str = "/v1/keys", key_id_path: str = "data.id",
           secret_path: str = "data.key.secret", body: dict[str, Any] | None = None,
           dual_valid: bool = True) -> catalog.HttpIssuer:
    return catalog.HttpIssuer.model_validate({
        "kind": "http",
        "create": {
            "method": "POST",
            "url": base + create_path,
            "headers_env": {"Authorization": "PROVIDER_AUTH", "X-Org": "PROVIDER_ORG"},
            "json": body if body is not None else {"name": "rotabot"},
            "key_id_path": key_id_path,
            "secret_path": secret_path,
        },
        "revoke": {
            "method": "DELETE",
            "url": base + "/v1/keys/{key_id}",
            "headers_env": {"Authorization": "PROVIDER_AUTH"},
        },
        "dual_valid": dual_valid,
    })


ISSUER_ENV = {"PROVIDER_AUTH": f"Bearer {ADMIN_TOKEN}", "PROVIDER_ORG": "org-42"}


def make(cfg: catalog.HttpIssuer, sleeps: list[float],
         timeout: httpx.Timeout | None = None) -> HttpIssuer:
    if timeout is None:
        return HttpIssuer.from_config(cfg, env=ISSUER_ENV, sleep=sleeps.append)
    return HttpIssuer.from_config(cfg, env=ISSUER_ENV, sleep=sleeps.append, timeout=timeout)


def assert_clean(text: str) -> None:
    assert CANARY_SECRET not in text
    assert ADMIN_TOKEN not in text


# --- the happy path ---------------------------------------------------------------------


def test_mint_creates_a_key_and_returns_its_secret_and_id(
    provider: tuple[Provider, str],
) -> None:
    state, base = provider
    issuer = make(config(base, body={"name": "rotabot", "scopes": ["inference"]}), [])
    assert isinstance(issuer, Issuer)
    assert issuer.kind == "http"
    assert issuer.keeps_both_valid is True

    minted = issuer.mint(SecretMaterial({"api_key": "the-old-one"}))

    assert minted.key_id == "key_1"
    assert minted.material is not None
    assert minted.material.reveal() == {"api_key": state.keys["key_1"], "key_id": "key_1"}
    assert minted.previous_key_id is None  # the old value carried no key id
    again = issuer.mint(minted.material)
    assert again.previous_key_id == "key_1"  # the next rotation knows which key to revoke
    request = state.seen[-2]
    assert (request.method, request.path) == ("POST", "/v1/keys")
    assert request.body == {"name": "rotabot", "scopes": ["inference"]}
    assert request.headers["Authorization"] == f"Bearer {ADMIN_TOKEN}"
    assert request.headers["X-Org"] == "org-42"
    # The material container itself never shows the value.
    assert state.keys["key_1"] not in repr(minted)


def test_paths_index_into_lists(provider: tuple[Provider, str]) -> None:
    state, base = provider
    issuer = make(config(base, create_path="/v2/keys", key_id_path="data.0.id",
                         secret_path="data.0.secret"), [])
    minted = issuer.mint(None)
    assert minted.key_id == "key_1"
    assert minted.material is not None
    assert minted.material.reveal()["api_key"] == state.keys["key_1"]


def test_json_lookup() -> None:
    doc = {"data": [{"id": 7}, {"id": 8}], "0": {"x": 1}}
    assert json_lookup(doc, "data.1.id") == 8
    assert json_lookup(doc, "data.-1.id") == 8
    assert json_lookup(doc, "0.x") == 1  # on an object a number is a key
    for missing in ("data.2.id", "data.x", "nope", "data.0.id.deeper"):
        with pytest.raises(LookupError):
            json_lookup(doc, missing)


def test_keeps_both_valid_follows_the_catalog(provider: tuple[Provider, str]) -> None:
    _, base = provider
    assert make(config(base, dual_valid=False), []).keeps_both_valid is False


def test_revoke_removes_the_key_and_is_idempotent(provider: tuple[Provider, str]) -> None:
    state, base = provider
    issuer = make(config(base), [])
    old = issuer.mint(None)
    new = issuer.mint(None)
    assert old.key_id is not None and new.key_id is not None
    assert set(state.keys) == {old.key_id, new.key_id}

    issuer.revoke(old.key_id)
    assert set(state.keys) == {new.key_id}
    assert state.seen[-1].headers["Authorization"] == f"Bearer {ADMIN_TOKEN}"

    issuer.revoke(old.key_id)  # the provider answers 404: already revoked is success
    assert state.seen[-1].method == "DELETE"
    assert set(state.keys) == {new.key_id}


def test_revoke_url_quotes_the_key_id(provider: tuple[Provider, str]) -> None:
    state, base = provider
    issuer = make(config(base, body={"id": "team/key 1?x"}), [])
    minted = issuer.mint(None)
    assert minted.key_id == "team/key 1?x"

    issuer.revoke(minted.key_id)

    assert state.seen[-1].path == "/v1/keys/team%2Fkey%201%3Fx"
    assert state.keys == {}


def test_revoke_without_a_key_id_is_refused(provider: tuple[Provider, str]) -> None:
    state, base = provider
    with pytest.raises(IssuerError, match="revoke needs the id"):
        make(config(base), []).revoke(None)
    assert state.seen == []


def test_usage_is_unknown_and_says_so(provider: tuple[Provider, str]) -> None:
    _, base = provider
    evidence = make(config(base), []).usage("key_9")
    assert evidence.in_use is None
    assert "key_9" in evidence.summary and "cannot tell" in evidence.summary


def test_missing_header_variable_is_named(provider: tuple[Provider, str]) -> None:
    _, base = provider
    with pytest.raises(IssuerError) as info:
        HttpIssuer.from_config(config(base), env={"PROVIDER_AUTH": f"Bearer {ADMIN_TOKEN}"})
    assert "PROVIDER_ORG" in str(info.value)
    assert "X-Org" in str(info.value)
    assert_clean(str(info.value))


# --- retries ----------------------------------------------------------------------------


def test_429_waits_what_retry_after_says_then_succeeds(provider: tuple[Provider, str]) -> None:
    state, base = provider
    state.fail_next(Fault(429, {"Retry-After": "7"}, json.dumps({"error": "rate_limit_exceeded"})))
    sleeps: list[float] = []
    minted = make(config(base), sleeps).mint(None)
    assert minted.key_id == "key_1"
    assert sleeps == [7.0]
    assert len(state.seen) == 2


def test_retry_after_http_date_is_honoured_and_capped(provider: tuple[Provider, str]) -> None:
    state, base = provider
    an_hour_on = format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    in_the_past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    state.fail_next(
        Fault(429, {"Retry-After": an_hour_on}, "{}"),
        Fault(503, {"Retry-After": in_the_past}, "{}"),
    )
    sleeps: list[float] = []
    make(config(base), sleeps).mint(None)
    assert sleeps == [30.0, 0.0]  # capped at max_wait; a date already past means now


def test_5xx_without_retry_after_backs_off_then_succeeds(provider: tuple[Provider, str]) -> None:
    state, base = provider
    state.fail_next(Fault(500, {}, "{}"), Fault(502, {}, "{}"))
    sleeps: list[float] = []
    minted = make(config(base), sleeps).mint(None)
    assert minted.key_id == "key_1"
    assert sleeps == [0.5, 1.0]


def test_revoke_retries_a_dropped_connection(provider: tuple[Provider, str]) -> None:
    """Revoke is idempotent, so a request that may or may not have arrived is sent again."""
    state, base = provider
    sleeps: list[float] = []
    issuer = make(config(base), sleeps)
    minted = issuer.mint(None)
    state.fail_next(Fault(close=True))
    issuer.revoke(minted.key_id)
    assert state.keys == {}
    assert sleeps == [0.5]


def test_create_does_not_retry_a_dropped_connection(provider: tuple[Provider, str]) -> None:
    """The provider may have created the key before the connection dropped; a second create
    would leave a key nobody knows the id of."""
    state, base = provider
    state.fail_next(Fault(close=True))
    sleeps: list[float] = []
    with pytest.raises(HttpIssuerError) as info:
        make(config(base), sleeps).mint(None)
    assert info.value.failure_class == "network"
    assert info.value.attempts == 1
    assert sleeps == []
    assert len(state.seen) == 1


# --- failure classes --------------------------------------------------------------------

CANARY_BODY = json.dumps({"error": {"message": f"bad request for key {CANARY_SECRET}",
                                    "echo": ADMIN_TOKEN}})


@pytest.mark.parametrize(
    ("faults", "failure_class", "status", "attempts"),
    [
        pytest.param([Fault(401, {}, CANARY_BODY)], "authentication", 401, 1, id="401"),
        pytest.param([Fault(403, {}, CANARY_BODY)], "authentication", 403, 1, id="403"),
        pytest.param([Fault(400, {}, CANARY_BODY)], "payload", 400, 1, id="400"),
        pytest.param([Fault(422, {}, CANARY_BODY)], "payload", 422, 1, id="422"),
        pytest.param(
            [Fault(400, {}, json.dumps({"error": {"status": "INVALID_ARGUMENT",
                                                  "reason": "API_KEY_INVALID",
                                                  "key": CANARY_SECRET}}))],
            "authentication", 400, 1, id="400-api-key-invalid",
        ),
        pytest.param([Fault(429, {"Retry-After": "2"}, CANARY_BODY)] * 3, "rate-limit", 429, 3,
                     id="429-persistent"),
        pytest.param([Fault(500, {}, CANARY_BODY)] * 3, "unknown", 500, 3, id="500-persistent"),
        pytest.param([Fault(503, {}, CANARY_BODY)] * 3, "network", 503, 3, id="503-persistent"),
        pytest.param([Fault(close=True)], "network", None, 1, id="connection-closed"),
        pytest.param([Fault(hang=True)], "network", None, 1, id="read-timeout"),
    ],
)
def test_each_failure_is_classified_and_never_shows_the_body(
    provider: tuple[Provider, str], caplog: pytest.LogCaptureFixture, faults: list[Fault],
    failure_class: str, status: int | None, attempts: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    state, base = provider
    state.fail_next(*faults)
    sleeps: list[float] = []
    # Only the hanging fault needs the short read timeout; on a busy machine a 500 can take
    # longer than 0.3 s to arrive and would be classified as a read timeout.
    hangs = any(f.hang for f in faults)
    issuer = make(config(base), sleeps, timeout=SHORT_READ if hangs else httpx.Timeout(10.0))

    with pytest.raises(HttpIssuerError) as info:
        issuer.mint(None)

    error = info.value
    message = str(error)
    assert error.call == "create"
    assert error.failure_class == failure_class
    assert error.status_code == status
    assert error.attempts == attempts
    assert len(state.seen) == attempts
    assert len(sleeps) == attempts - 1
    assert "create" in message and f"failed: {failure_class}" in message
    assert (f"HTTP {status}" if status is not None else "no HTTP status") in message
    assert "/v1/keys" in message
    assert error.__cause__ is None and error.__suppress_context__ is False
    assert error.__context__ is None
    assert_clean(message)
    assert_clean(repr(error))
    assert_clean(caplog.text)
    assert "bad request" not in message


def test_connection_refused_is_network_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        sleeps: list[float] = []
        with pytest.raises(HttpIssuerError) as info:
            make(config(base), sleeps).mint(None)
    assert info.value.failure_class == "network"
    assert info.value.attempts == 3
    assert sleeps == [0.5, 1.0]
    assert "Connection refused" in str(info.value)
    assert_clean(str(info.value))
    assert_clean(caplog.text)


def test_revoke_failure_names_the_revoke_call(provider: tuple[Provider, str]) -> None:
    state, base = provider
    issuer = make(config(base), [])
    minted = issuer.mint(None)
    state.fail_next(Fault(403, {}, CANARY_BODY))
    with pytest.raises(HttpIssuerError) as info:
        issuer.revoke(minted.key_id)
    assert info.value.call == "revoke"
    assert info.value.failure_class == "authentication"
    assert f"revoke (DELETE {base}/v1/keys/key_1) failed: authentication" in str(info.value)
    assert_clean(str(info.value))
    assert minted.key_id in state.keys  # nothing was revoked


# --- answers that are not what the catalog says -----------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(json.dumps({"data": {"key": {"secret": CANARY_SECRET}}}), "no key id",
                     id="id-missing"),
        pytest.param(json.dumps({"data": {"id": "key_77", "key": {}}}), "key key_77 was",
                     id="secret-missing"),
        pytest.param(json.dumps({"data": {"id": {"nested": CANARY_SECRET},
                                          "key": {"secret": CANARY_SECRET}}}), "no key id",
                     id="id-not-scalar"),
        pytest.param(f"created {CANARY_SECRET}", "not JSON", id="not-json"),
    ],
)
def test_unexpected_answer_is_a_payload_failure_without_the_body(
    provider: tuple[Provider, str], caplog: pytest.LogCaptureFixture, body: str, expected: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    state, base = provider
    state.fail_next(Fault(200, {}, body))
    with pytest.raises(HttpIssuerError) as info:
        make(config(base), []).mint(None)
    assert info.value.failure_class == "payload"
    assert "failed: payload (HTTP 200)" in str(info.value)
    assert expected in str(info.value)
    assert_clean(str(info.value))
    assert_clean(caplog.text)
