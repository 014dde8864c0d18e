"""The bot's Slack Web API client: retries on 429/5xx, and counts calls for /metrics."""

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
        method = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
        self.rate_limited.labels(method=method).inc()

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


class _CountingRateLimitHandler(RateLimitErrorRetryHandler):
    def __init__(self, counter: SlackCallCounter, max_retry_count: int) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._counter = counter

    def _can_retry(self, *, state: RetryState, request: HttpRequest,
                   response: HttpResponse | None = None,
                   error: Exception | None = None) -> bool:
        limited = response is not None and response.status_code == 429
        if limited:
            self._counter.limited(request.url)
        return limited


class CountingWebClient(WebClient):
    def __init__(self, *args: Any, counter: SlackCallCounter, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.counter = counter

    def api_call(self, api_method: str, **kwargs: Any) -> Any:
        self.counter.call(api_method)
        return super().api_call(api_method, **kwargs)


def slack_client(
    token: str | None, base_url: str, registry: CollectorRegistry | None = None
) -> CountingWebClient:
    """A Web API client counting into ``registry`` (the one /metrics serves); None: a
    private registry, counted but not exposed."""
    counter = (SlackCallCounter(CollectorRegistry()) if registry is None
               else SlackCallCounter.for_registry(registry))
    client = CountingWebClient(token=token, base_url=base_url, timeout=10, counter=counter)
    # 429s are retried after Retry-After; 5xx and dropped connections a few times.
    client.retry_handlers.extend([
        _CountingRateLimitHandler(counter, max_retry_count=3),
        ServerErrorRetryHandler(max_retry_count=2),
        ConnectionErrorRetryHandler(max_retry_count=2),
    ])
    return client
