"""Update pacing: at most one update of a message per interval, bursts coalesced, last state wins.

Slack allows about one ``chat.update`` a second per message (Tier 3), while a rotation or an
alert can change many times a second (a click storm, an alert burst). Both the rotation
message (adapters/slack_notifier.py) and alert messages (bot/services/alerts.py) are paced by
this one helper: the first change updates at once, changes within the interval schedule one
deferred update, and that update renders the state as it is when it runs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)

log = logging.getLogger("rotabot.pacing")


class UpdatePacer(Generic[K]):
    def __init__(
        self,
        update: Callable[[K], None],
        interval: Callable[[], float],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        what: str = "update",
        log_context: Callable[[K], dict[str, object]] = lambda _key: {},
    ) -> None:
        # ``interval`` is read on every call, so an owner's setting (tests set 0) applies at once.
        self._update = update
        self._interval = interval
        self._monotonic = monotonic
        self._what = what
        self._log_context = log_context
        self._guard = threading.Lock()
        self._last: dict[K, float] = {}
        self._scheduled: set[K] = set()
        # Deferred updates taken off _scheduled but still running: flush waits for them too.
        self._in_flight = 0

    def mark(self, key: K) -> None:
        """An update of ``key`` was just made elsewhere (a fresh post): the interval starts."""
        with self._guard:
            self._last[key] = self._monotonic()

    def soon(self, key: K) -> None:
        """Update now, or once the interval since the last update has passed (one pending per
        key). An immediate update runs in the caller and raises to it."""
        with self._guard:
            if key in self._scheduled:
                return
            last = self._last.get(key)
            wait = 0.0 if last is None else last + self._interval() - self._monotonic()
            if wait > 0:
                self._scheduled.add(key)
                timer = threading.Timer(wait, self._deferred, args=(key,))
                timer.daemon = True
                timer.start()
                return
            self._last[key] = self._monotonic()  # claimed under the guard
        self._update(key)

    def _deferred(self, key: K) -> None:
        # Off _scheduled before rendering, so a change made during this update schedules
        # another one instead of being lost; counted in flight until the update returned.
        with self._guard:
            self._scheduled.discard(key)
            self._last[key] = self._monotonic()
            self._in_flight += 1
        try:
            self._update(key)
        except Exception:  # a timer thread has no caller to tell: log it
            log.exception("deferred %s failed", self._what, extra=self._log_context(key))
        finally:
            with self._guard:
                self._in_flight -= 1

    def idle(self) -> bool:
        with self._guard:
            return not self._scheduled and self._in_flight == 0

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until no deferred update is pending or running (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while not self.idle() and time.monotonic() < deadline:
            time.sleep(0.02)
