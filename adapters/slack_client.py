"""The bot's Slack Web API client: every call waits for its turn in the call budget
(adapters/slack_budget.py), 429s and 5xx are retried by slack_sdk's retry handlers, and
calls are counted for /metrics."""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit
from weakref import WeakKeyDictionary

from prometheus_client import CollectorRegistry, Counter
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from adapters.slack_budget import SlackCallBudget, in_turn


class SlackCallCounter:
    """Web API calls by method, and 429 answers (each one retried after Retry-After).

    Two prometheus-client counters in the registry given, exposed as
    ``rotabot_slack_api_calls_total{method}`` and ``rotabot_slack_rate_limited_total{method}``.
    Use :meth:`for_registry`: a registry refuses the same metric name twice.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "rotabot_slack_api_calls", "Slack Web API calls by method.",
            ["method"], registry=registry,
        )
        self.rate_limited = Counter(
            "rotabot_slack_rate_limited",
            "Slack 429 answers by method (each retried after Retry-After).",
            ["method"], registry=registry,
        )

    @classmethod
    def for_registry(cls, registry: CollectorRegistry) -> SlackCallCounter:
        """The counters of ``registry``, created on first use, so clients built on one
        registry add up (and a second client does not fail as a duplicate metric)."""
        with _LOCK:
            counter = _BY_REGISTRY.get(registry)
            if counter is None:
                counter = _BY_REGISTRY[registry] = cls(registry)
            return counter

    def call(self, method: str) -> None:
        self.calls.labels(method=method).inc()

    def limited(self, url: str) -> None:
        # The path only: a GET call's query string would make a label per request.
        self.rate_limited.labels(method=_method_of(url)).inc()

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        """(calls, rate limited) by method, for tests and diagnostics."""
        return _totals(self.calls), _totals(self.rate_limited)


def _totals(counter: Counter) -> dict[str, int]:
    return {
        sample.labels["method"]: int(sample.value)
        for family in counter.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    }


# Weak keys: a registry dropped by its app (tests build many) takes its counters with it.
_BY_REGISTRY: WeakKeyDictionary[CollectorRegistry, SlackCallCounter] = WeakKeyDictionary()
_LOCK = threading.Lock()


def _method_of(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]


class _CountingRateLimitHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler (waits Retry-After, retries), which also counts the 429 and
    tells the budget, so no other call of that method goes out before Retry-After."""

    def __init__(self, counter: SlackCallCounter, max_retry_count: int,
                 budget: SlackCallBudget | None) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._counter = counter
        self._budget = budget

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        limited = response is not None and response.status_code == 429
        if limited:
            self._counter.limited(request.url)
            if self._budget is not None and response is not None:
                self._budget.note_rate_limited(
                    _method_of(request.url), request.body_params or {}, _retry_after(response))
        return limited


def _retry_after(response: HttpResponse) -> float:
    for name, values in response.headers.items():
        if name.lower() == "retry-after" and values:
            try:
                return float(values[0])
            except ValueError:
                break
    return 1.0


class CountingWebClient(WebClient):
    """A WebClient whose calls wait for their turn in ``budget`` (None: straight out)."""

    def __init__(self, *args: Any, counter: SlackCallCounter,
                 budget: SlackCallBudget | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counter = counter
        self.budget = budget

    def api_call(self, api_method: str, **kwargs: Any) -> Any:
        if self.budget is None or in_turn():
            return self._send(api_method, kwargs)
        return self.budget.call(api_method, _arguments(kwargs),
                                lambda: self._send(api_method, kwargs))

    def _send(self, api_method: str, kwargs: dict[str, Any]) -> Any:
        self.counter.call(api_method)
        return super().api_call(api_method, **kwargs)


def _arguments(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A call's Slack arguments, wherever slack_sdk put them (JSON body, form or query)."""
    args: dict[str, Any] = {}
    for part in ("params", "data", "json"):
        value = kwargs.get(part)
        if isinstance(value, dict):
            args.update(value)
    return args


def slack_client(
    token: str | None,
    base_url: str,
    registry: CollectorRegistry | None = None,
    budget: SlackCallBudget | None = None,
) -> CountingWebClient:
    """A Web API client counting into ``registry`` (the one /metrics serves; None: a
    private registry, counted but not exposed), its calls paced by ``budget``."""
    counter = (SlackCallCounter(CollectorRegistry()) if registry is None
               else SlackCallCounter.for_registry(registry))
    client = CountingWebClient(token=token, base_url=base_url, timeout=10, counter=counter,
                               budget=budget)
    # 429s are retried after Retry-After; 5xx and dropped connections a few times.
    client.retry_handlers.extend([
        _CountingRateLimitHandler(counter, max_retry_count=3, budget=budget),
        ServerErrorRetryHandler(max_retry_count=2),
        ConnectionErrorRetryHandler(max_retry_count=2),
    ])
    return client
