"""Schemathesis against the real app, driven by docs/openapi.yaml: POST /alerts, POST /evidence
and GET /healthz.

Every generated request goes through the Starlette app `rotabot serve` runs (in-process, so no
port or process start per example). Signed runs get past the HMAC check and exercise the
schema, catalog and flood rules; the unsigned run proves every request is refused with 401.
Invariants on every response: no 5xx, no traceback text, the answer conforms to the document,
and a refused request leaves the database exactly as it was.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from harness.serve import alert_headers
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from security_harness import FUZZ_CATALOG, BotHandle, inprocess_bot

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = schemathesis.openapi.from_path(str(ROOT / "docs" / "openapi.yaml"))
ALERTS = SCHEMA["/alerts"]["POST"]
HEALTHZ = SCHEMA["/healthz"]["GET"]
EVIDENCE = SCHEMA["/evidence"]["POST"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+|\.py", line')
STATE_TABLES = ("alerts", "audit_events", "rotations", "consumer_steps", "evidence_reports")
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.filter_too_much, HealthCheck.data_too_large],
    derandomize=True,
    database=None,
)

@pytest.fixture(scope="module")
def bot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotHandle]:
    with inprocess_bot(tmp_path_factory.mktemp("fuzz-alerts"), FUZZ_CATALOG) as handle:
        yield handle


def wire_body(case: schemathesis.Case) -> bytes:
    """The exact bytes sent (and signed): the generated body as compact JSON, or nothing."""
    if case.body is NOT_SET:
        return b""
    if isinstance(case.body, bytes):
        return case.body
    return json.dumps(case.body, separators=(",", ":")).encode()


def send(bot: BotHandle, case: schemathesis.Case, *, sign: bool) -> httpx.Response:
    """Send one generated case; with `sign`, the generated signature headers are replaced
    with a valid HMAC over the exact bytes (the other generated headers are kept)."""
    body = wire_body(case)
    headers = {k: str(v) for k, v in (case.headers or {}).items()}
    if sign:
        headers = {k: v for k, v in headers.items()
                   if k.lower() not in ("x-rotabot-timestamp", "x-rotabot-signature")}
        headers.update(alert_headers(bot.alert_secret, body))
    headers.setdefault("Content-Type", case.media_type or "application/json")
    return bot.http.request(case.method, bot.url + case.formatted_path, content=body,
                            headers=headers, params=case.query or None)


def counts(bot: BotHandle) -> dict[str, int]:
    return {t: bot.count(t) for t in STATE_TABLES}


def check_response(bot: BotHandle, case: schemathesis.Case, response: httpx.Response,
                   before: dict[str, int]) -> None:
    assert response.status_code < 500, response.text
    assert not TRACEBACK.search(response.text), response.text
    case.validate_response(response, checks=CHECKS)
    if response.status_code != 200:
        assert counts(bot) == before, f"{response.status_code} changed state: {response.text}"


@FUZZ
@given(case=ALERTS.as_strategy())
def test_signed_valid_alerts_never_5xx_and_conform(bot: BotHandle, case: schemathesis.Case
                                                   ) -> None:
    before = counts(bot)
    check_response(bot, case, send(bot, case, sign=True), before)


@FUZZ
@given(case=ALERTS.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
def test_signed_invalid_alerts_are_refused_without_state_change(
        bot: BotHandle, case: schemathesis.Case) -> None:
    before = counts(bot)
    response = send(bot, case, sign=True)
    check_response(bot, case, response, before)


@FUZZ
@given(case=ALERTS.as_strategy())
def test_unsigned_alerts_are_all_401(bot: BotHandle, case: schemathesis.Case) -> None:
    # The generated signature headers match the documented shape but not the body.
    before = counts(bot)
    response = send(bot, case, sign=False)
    assert response.status_code == 401, response.text
    check_response(bot, case, response, before)


# Fewer examples than /alerts: the same signed intake in front, a smaller schema behind it.
FUZZ_EVIDENCE = settings(FUZZ, max_examples=30)


@FUZZ_EVIDENCE
@given(case=EVIDENCE.as_strategy())
def test_signed_valid_evidence_never_5xx_and_conforms(bot: BotHandle, case: schemathesis.Case
                                                      ) -> None:
    before = counts(bot)
    check_response(bot, case, send(bot, case, sign=True), before)


@FUZZ_EVIDENCE
@given(case=EVIDENCE.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
def test_signed_invalid_evidence_is_refused_without_state_change(
        bot: BotHandle, case: schemathesis.Case) -> None:
    before = counts(bot)
    check_response(bot, case, send(bot, case, sign=True), before)


@settings(max_examples=20, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=HEALTHZ.as_strategy())
def test_healthz_conforms(bot: BotHandle, case: schemathesis.Case) -> None:
    response = send(bot, case, sign=False)
    assert response.status_code == 200
    case.validate_response(response, checks=CHECKS)


def test_fuzzer_reaches_the_store_with_a_known_consumer(bot: BotHandle) -> None:
    """The signed path really stores alerts, so "no state change on refusal" is meaningful."""
    before = counts(bot)
    body = json.dumps({"consumer": "inference-api", "status_code": 401,
                       "error": "invalid_api_key"}).encode()
    response = bot.post_alert(body)
    assert response.status_code == 200, response.text
    assert response.json()["alerts"][0]["class"] == "authentication"
    assert bot.count("alerts") == before["alerts"] + 1
    case = ALERTS.Case(body=json.loads(body), media_type="application/json")
    case.validate_response(response, checks=CHECKS)


def test_wrong_key_stale_and_malformed_signatures_are_401(bot: BotHandle) -> None:
    body = b'{"consumer":"inference-api","status_code":401}'
    before = counts(bot)
    variants: list[dict[str, Any]] = [
        alert_headers("not-the-key", body),
        alert_headers(bot.alert_secret, body, timestamp=1),  # replayed from long ago
        {"X-Rotabot-Timestamp": "nan", "X-Rotabot-Signature": "v1=00"},
        {"X-Rotabot-Timestamp": "9" * 40, "X-Rotabot-Signature": "v1=" + "0" * 64},
        {"X-Rotabot-Signature": "sha256=abc"},
        {},
    ]
    for headers in variants:
        response = bot.http.post(bot.url + "/alerts", content=body,
                                 headers={"Content-Type": "application/json", **headers})
        assert response.status_code == 401, (headers, response.text)
        assert not TRACEBACK.search(response.text)
    assert counts(bot) == before
