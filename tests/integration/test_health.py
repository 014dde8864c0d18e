"""Consumer health checks against a loopback HTTP consumer that answers, fails, hangs and counts."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from harness.loopback import Loopback, QuietHandler

from adapters.health import HealthChecker, HealthResult
from bot.catalog import HealthCheck

HEADER_CANARY = "hc-CANARY-41be07-the-bots-health-token"
BODY_CANARY = "sk-CANARY-9d13aa-echoed-by-a-careless-consumer"
ENV = {"HEALTH_TOKEN": HEADER_CANARY}


class Consumer:
    """Counts requests in flight (and the peak) so the concurrency bound can be checked."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.in_flight = 0
        self.peak = 0
        self.release = threading.Event()
        self.seen_headers: list[dict[str, str]] = []


def _handler(state: Consumer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _serve(self) -> None:
            state.seen_headers.append(dict(self.headers))
            path = self.path.split("?")[0]
            if path == "/ok":
                self.reply(200, {"status": "ok", "credential": {"version": 7}})
            elif path == "/plain":
                self.reply(200, "all good")
            elif path.startswith("/status/"):
                self.reply(int(path.rsplit("/", 1)[1]),
                            {"error": "failed", "echo": BODY_CANARY, "header": HEADER_CANARY})
            elif path == "/auth":
                if self.headers.get("X-Api-Key") == HEADER_CANARY:
                    self.reply(200, {"build": {"credential_version": "v8"}})
                else:
                    self.reply(401, {"error": "invalid_api_key", "echo": BODY_CANARY})
            elif path == "/hang":
                state.release.wait(10)
            elif path == "/trickle":
                # Each byte arrives well within the read timeout; the whole answer does not.
                self.send_response(200)
                self.send_header("Content-Length", "40")
                self.end_headers()
                for _ in range(40):
                    if state.release.wait(0.05):
                        return
                    self.wfile.write(b" ")
                    self.wfile.flush()
            elif path == "/slow":
                with state.cond:
                    state.in_flight += 1
                    state.peak = max(state.peak, state.in_flight)
                    state.cond.notify_all()
                    # Hold until a second request is in flight (or give up): this makes the
                    # peak reach the bound without depending on how fast threads start.
                    state.cond.wait_for(lambda: state.in_flight >= 2, timeout=2)
                # Stay in flight a little longer, so a third request would be counted if the
                # bound were broken.
                time.sleep(0.05)
                with state.cond:
                    state.in_flight -= 1
                    state.cond.notify_all()
                self.reply(200, {"version": 3})
            else:
                self.reply(404, {"error": "no route"})

        do_GET = _serve
        do_HEAD = _serve
        do_POST = _serve

    return Handler


@pytest.fixture
def consumer() -> Iterator[tuple[Consumer, str]]:
    state = Consumer()
    with Loopback(_handler(state), before_stop=state.release.set) as server:
        yield state, server.url


@pytest.fixture
def checker() -> Iterator[HealthChecker]:
    hc = HealthChecker(env=ENV, max_concurrency=8)
    try:
        yield hc
    finally:
        hc.close()


def check(url: str, **kwargs: Any) -> HealthCheck:
    return HealthCheck.model_validate({"url": url, **kwargs})


def assert_clean(result: HealthResult, logs: str = "") -> None:
    for text in (result.reason, repr(result), logs):
        assert BODY_CANARY not in text
        assert HEADER_CANARY not in text


def test_healthy_consumer(consumer: tuple[Consumer, str], checker: HealthChecker) -> None:
    _, base = consumer
    result = checker.check("inference-api", "prod", check(base + "/plain"))
    assert result.ok is True
    assert result.status_code == 200
    assert result.failure_class is None
    assert result.reported_version is None
    assert result.consumer == "inference-api" and result.lane == "prod"
    assert "inference-api" in result.reason and "200" in result.reason
    assert result.elapsed_ms >= 0


def test_head_and_expected_status(consumer: tuple[Consumer, str], checker: HealthChecker) -> None:
    _, base = consumer
    assert checker.check("c", "dev", check(base + "/ok", method="HEAD")).ok is True
    teapot = checker.check("c", "dev", check(base + "/status/418", expect_status=418))
    assert teapot.ok is True and teapot.status_code == 418


def test_reported_version_is_evidence_of_distribution(
    consumer: tuple[Consumer, str], checker: HealthChecker
) -> None:
    _, base = consumer
    result = checker.check("inference-api", "prod",
                           check(base + "/ok", version_field="credential.version"))
    assert result.ok is True
    assert result.reported_version == "7"
    assert result.reason == "inference-api reports version 7"


def test_missing_version_field_is_healthy_without_a_version(
    consumer: tuple[Consumer, str], checker: HealthChecker
) -> None:
    _, base = consumer
    for path, field in (("/ok", "credential.nope"), ("/plain", "version"),
                        ("/ok", "credential")):  # an object is not a version
        result = checker.check("c", "dev", check(base + path, version_field=field))
        assert result.ok is True
        assert result.reported_version is None
        assert f"reports no version at '{field}'" in result.reason


@pytest.mark.parametrize(
    ("status", "failure_class"),
    [(401, "authentication"), (403, "authentication"), (429, "rate-limit"), (400, "payload"),
     (500, "unknown"), (503, "network")],
)
def test_wrong_status_is_classified(
    consumer: tuple[Consumer, str], checker: HealthChecker, caplog: pytest.LogCaptureFixture,
    status: int, failure_class: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    _, base = consumer
    result = checker.check("retriever", "staging",
                           check(base + f"/status/{status}", version_field="version"))
    assert result.ok is False
    assert result.status_code == status
    assert result.failure_class == failure_class
    assert f"HTTP {status}, expected 200: {failure_class}" in result.reason
    assert result.reported_version is None
    assert_clean(result, caplog.text)


def test_timeout_is_network(consumer: tuple[Consumer, str], checker: HealthChecker) -> None:
    _, base = consumer
    result = checker.check("c", "dev", check(base + "/hang", timeout=timedelta(seconds=0.3)))
    assert result.ok is False
    assert result.failure_class == "network"
    assert result.status_code is None
    assert "ReadTimeout" in result.reason


def test_slow_trickle_is_bounded_by_the_timeout(
    consumer: tuple[Consumer, str], checker: HealthChecker
) -> None:
    _, base = consumer
    result = checker.check("c", "dev", check(base + "/trickle", timeout=timedelta(seconds=0.3)))
    assert result.ok is False
    assert result.failure_class == "network"
    assert "longer than 0.3s" in result.reason


def test_connection_refused_is_network(checker: HealthChecker) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening
        result = checker.check("c", "dev", check(f"http://127.0.0.1:{sock.getsockname()[1]}/"))
    assert result.ok is False
    assert result.failure_class == "network"
    assert result.status_code is None
    assert "Connection refused" in result.reason


def test_header_from_env_is_sent_and_never_shown(
    consumer: tuple[Consumer, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    state, base = consumer
    hc = check(base + "/auth", headers_env={"X-Api-Key": "HEALTH_TOKEN"},
               version_field="build.credential_version")
    with_token = HealthChecker(env=ENV)
    without_token = HealthChecker(env={"HEALTH_TOKEN": "wrong-" + HEADER_CANARY})
    try:
        good = with_token.check("ingest", "staging", hc)
        bad = without_token.check("ingest", "staging", hc)
    finally:
        with_token.close()
        without_token.close()

    assert state.seen_headers[0]["X-Api-Key"] == HEADER_CANARY
    assert good.ok is True and good.reported_version == "v8"
    assert bad.ok is False and bad.failure_class == "authentication"
    assert_clean(good, caplog.text)
    assert_clean(bad, caplog.text)


def test_missing_header_variable_is_reported_not_sent(
    consumer: tuple[Consumer, str], checker: HealthChecker
) -> None:
    state, base = consumer
    hc = check(base + "/auth", headers_env={"X-Api-Key": "NOT_SET_ANYWHERE"})
    result = checker.check("ingest", "staging", hc)
    assert result.ok is False
    assert "NOT_SET_ANYWHERE" in result.reason and "not checked" in result.reason
    assert state.seen_headers == []


def test_check_many_respects_the_bound_and_keeps_input_order(
    consumer: tuple[Consumer, str]
) -> None:
    state, base = consumer
    checker = HealthChecker(env=ENV, max_concurrency=2)
    items = [(f"c{i}", "dev", check(base + f"/slow?i={i}", version_field="version"))
             for i in range(6)]
    try:
        results = checker.check_many(items)
    finally:
        checker.close()
    assert state.peak == 2
    assert [r.consumer for r in results] == [f"c{i}" for i in range(6)]
    assert all(r.ok and r.reported_version == "3" for r in results)


def test_check_many_mixes_outcomes_in_input_order(
    consumer: tuple[Consumer, str], checker: HealthChecker
) -> None:
    _, base = consumer
    items = [
        ("hangs", "prod", check(base + "/hang", timeout=timedelta(seconds=0.3))),
        ("fine", "dev", check(base + "/ok", version_field="credential.version")),
        ("denied", "staging", check(base + "/status/401")),
    ]
    results = checker.check_many(items)
    assert [(r.consumer, r.ok, r.failure_class) for r in results] == [
        ("hangs", False, "network"), ("fine", True, None), ("denied", False, "authentication"),
    ]
    assert checker.check_many([]) == []
