"""Group commit for `POST /alerts`: reports arriving together share one transaction.

Each request hands its units (bot/services/alerts.py, IntakeUnit) to ``GroupCommit.submit``
and waits on the returned future. One writer thread takes everything queued while the previous
batch was committing (and, with ``linger``, what arrives a moment later), up to ``max_batch``
units, never splitting a request, and stores it with ``AlertService.commit_batch``: one
transaction for the delivery ids, the counts, new alerts and the rotations they reopen. The
futures are resolved only after that commit, so a request is answered 200 only once what it
reported is durable; if the commit fails, every request of the batch gets the error and
nothing of it was stored (the delivery ids were in the same transaction, so the senders'
retries are processed). Slack follows on the service's own thread (``AlertService.defer``).

Under load the batch grows by itself: the longer a commit takes, the more requests queue
behind it, and they all commit together next.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future

from bot.domain.errors import StoreUnavailable
from bot.services.alerts import AlertService, IntakeUnit, UnitOutcome

log = logging.getLogger("rotabot.alerts")

# Where a request's answer goes: a thread's Future, or an event loop's future (answered
# together with the rest of its batch on that loop, in one wake-up).
_Waiter = Future[list[UnitOutcome]] | tuple[asyncio.AbstractEventLoop,
                                             "asyncio.Future[list[UnitOutcome]]"]
_Request = tuple[Sequence[IntakeUnit], _Waiter]
_Answer = tuple["asyncio.Future[list[UnitOutcome]]", list[UnitOutcome] | BaseException]


class GroupCommit:
    def __init__(
        self, alerts: AlertService, *, max_batch: int = 500, linger: float = 0.002
    ) -> None:
        """``max_batch``: units per transaction at most (a request bigger than that is its
        own batch). ``linger``: seconds the writer waits for more once a batch has fewer
        units than ``max_batch``; a few milliseconds of latency buy much larger batches."""
        self.alerts = alerts
        self.max_batch = max_batch
        self.linger = linger
        self._queue: list[_Request] = []
        self._queued_units = 0
        self._cond = threading.Condition()
        self._closed = False
        self._writer: threading.Thread | None = None
        # Units submitted, batches committed and units in them (tests, the benchmark's notes).
        self.submitted = 0
        self.batches = 0
        self.units = 0

    def submit(self, units: Sequence[IntakeUnit]) -> Future[list[UnitOutcome]]:
        """Queue one request's units; the future holds one outcome per unit once their batch
        committed, or the exception that kept it from committing."""
        future: Future[list[UnitOutcome]] = Future()
        self._enqueue(units, future)
        return future

    def submit_async(self, units: Sequence[IntakeUnit]) -> asyncio.Future[list[UnitOutcome]]:
        """``submit`` from a coroutine: the answers of a batch's requests on one event loop
        reach it in one wake-up (one call_soon_threadsafe per batch, where wrapping each
        request's Future cost one each)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[UnitOutcome]] = loop.create_future()
        self._enqueue(units, (loop, future))
        return future

    def _enqueue(self, units: Sequence[IntakeUnit], waiter: _Waiter) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("alert intake is shutting down")
            self._queue.append((units, waiter))
            self._queued_units += len(units)
            self.submitted += len(units)
            if self._writer is None:
                # Started on first use: nothing runs until a report arrives.
                self._writer = threading.Thread(
                    target=self._run, name="rotabot-alert-intake", daemon=True)
                self._writer.start()
            self._cond.notify()

    def take(self, units: Sequence[IntakeUnit]) -> list[UnitOutcome]:
        """``submit`` and wait (callers on a thread of their own)."""
        return self.submit(units).result()

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer; later submits are refused."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            writer = self._writer
        if writer is not None:
            writer.join(timeout)

    def _next_batch(self) -> list[_Request] | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            if self.linger > 0 and self._queued_units < self.max_batch and not self._closed:
                # Wait a moment for more: an idle intake answers a lone report a few ms later.
                deadline = time.monotonic() + self.linger
                while self._queued_units < self.max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            batch: list[_Request] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0][0]) <= self.max_batch):
                request = self._queue.pop(0)
                batch.append(request)
                size += len(request[0])
            self._queued_units -= size
            return batch

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._commit(batch)

    def _commit(self, batch: list[_Request]) -> None:
        units = [u for request, _ in batch for u in request]
        try:
            outcomes, follow_ups = self.alerts.commit_batch(units)
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, StoreUnavailable):
                # One request's trouble must not fail the others: each alone, once.
                log.warning("an alert batch failed (%s); committing its requests one by one",
                            type(exc).__name__)
                for one in batch:
                    self._commit([one])
                return
            _answer([(waiter, exc) for _, waiter in batch])
            return
        self.batches += 1
        self.units += len(units)
        answers: list[tuple[_Waiter, list[UnitOutcome] | BaseException]] = []
        start = 0
        for asked, waiter in batch:
            answers.append((waiter, outcomes[start:start + len(asked)]))
            start += len(asked)
        _answer(answers)
        # After the answers: Slack never delays an acknowledgement.
        self.alerts.defer(follow_ups)


def _answer(answers: Sequence[tuple[_Waiter, list[UnitOutcome] | BaseException]]) -> None:
    """Resolve each waiter: threads' Futures at once, each event loop's in one call."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = defaultdict(list)
    for waiter, result in answers:
        if isinstance(waiter, Future):
            if isinstance(result, BaseException):
                waiter.set_exception(result)
            else:
                waiter.set_result(result)
        else:
            loop, future = waiter
            by_loop[loop].append((future, result))
    for loop, settled in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, settled)
        except RuntimeError:  # the loop closed meanwhile: nobody waits for these answers
            log.debug("alert intake: an event loop closed before its answers")


def _settle(settled: Sequence[_Answer]) -> None:
    for future, result in settled:
        if future.cancelled():  # the request went away (client gone, server stopping)
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
