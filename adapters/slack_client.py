"""The bot's Slack Web API client: retries on 429/5xx, and counts calls for /metrics."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

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
    """Web API calls by method, and 429 answers (each one retried after Retry-After)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.rate_limited: Counter[str] = Counter()

    def call(self, method: str) -> None:
        with self._lock:
            self.calls[method] += 1

    def limited(self, url: str) -> None:
        method = url.rstrip("/").rsplit("/", 1)[-1]
        with self._lock:
            self.rate_limited[method] += 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.calls), dict(self.rate_limited)


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


def slack_client(token: str | None, base_url: str) -> CountingWebClient:
    counter = SlackCallCounter()
    client = CountingWebClient(token=token, base_url=base_url, timeout=10, counter=counter)
    # 429s are retried after Retry-After; 5xx and dropped connections a few times.
    client.retry_handlers.extend([
        _CountingRateLimitHandler(counter, max_retry_count=3),
        ServerErrorRetryHandler(max_retry_count=2),
        ConnectionErrorRetryHandler(max_retry_count=2),
    ])
    return client
