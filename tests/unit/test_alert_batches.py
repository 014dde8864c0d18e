"""GroupCommit's answers (bot/services/alert_batches.py): each request gets its own units'
outcomes, whether it waits on a thread or on an event loop, and a request that went away
does not keep the others of its batch from their answers.

The writer is held inside the first batch's commit while the next requests queue, so the
ones submitted meanwhile share the next batch (nothing is timed).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from bot.domain.alert_intake import KeyState
from bot.domain.errors import StoreUnavailable
from bot.services.alert_batches import GroupCommit
from bot.services.alerts import IntakeUnit, UnitOutcome


class HeldAlerts:
    """Stands in for AlertService: a unit's outcome names its key; the first commit waits
    until ``release`` is set; ``fail`` makes a commit raise."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list[str | None]] = []
        self.fail: Exception | None = None

    def commit_batch(self, units: Sequence[IntakeUnit]) -> tuple[list[UnitOutcome], Any]:
        if not self.batches:
            self.entered.set()
            assert self.release.wait(10)
        self.batches.append([u.key for u in units])
        if self.fail is not None:
            raise self.fail
        return [UnitOutcome(KeyState.TAKEN if u.key != "dup" else KeyState.DUPLICATE, ())
                for u in units], None

    def defer(self, follow_ups: Any) -> None:
        pass


def unit(key: str) -> IntakeUnit:
    return IntakeUnit((), key=key)


def test_requests_on_threads_and_event_loops_share_a_batch_and_get_their_own_answers() -> None:
    alerts = HeldAlerts()
    intake = GroupCommit(alerts, linger=0)  # type: ignore[arg-type]
    first = intake.submit([unit("first")])
    assert alerts.entered.wait(10)
    on_thread = intake.submit([unit("t1"), unit("dup")])
    results: dict[str, list[UnitOutcome]] = {}

    def on_loop(name: str, keys: list[str], submitted: threading.Event) -> None:
        async def ask() -> list[UnitOutcome]:
            future = intake.submit_async([unit(k) for k in keys])
            submitted.set()
            return await future

        results[name] = asyncio.run(ask())

    loops = []
    for name, keys in (("a", ["a1"]), ("b", ["b1", "b2", "dup"])):
        submitted = threading.Event()
        thread = threading.Thread(target=on_loop, args=(name, keys, submitted))
        thread.start()
        assert submitted.wait(10)
        loops.append(thread)
    alerts.release.set()
    for thread in loops:
        thread.join(10)
    assert [o.state for o in first.result(10)] == [KeyState.TAKEN]
    assert [o.state for o in on_thread.result(10)] == [KeyState.TAKEN, KeyState.DUPLICATE]
    assert [o.state for o in results["a"]] == [KeyState.TAKEN]
    assert [o.state for o in results["b"]] == [KeyState.TAKEN, KeyState.TAKEN,
                                               KeyState.DUPLICATE]
    assert alerts.batches == [["first"], ["t1", "dup", "a1", "b1", "b2", "dup"]]
    intake.close()


def test_a_failed_commit_reaches_every_waiter_and_a_cancelled_one_is_skipped() -> None:
    alerts = HeldAlerts()
    intake = GroupCommit(alerts, linger=0)  # type: ignore[arg-type]
    intake.submit([unit("first")])
    assert alerts.entered.wait(10)
    # StoreUnavailable fails the whole batch at once (another error retries each request
    # alone), so the three answers reach the loop together.
    alerts.fail = StoreUnavailable("the database went away")

    async def scenario() -> list[BaseException | list[UnitOutcome]]:
        gone = asyncio.ensure_future(intake.submit_async([unit("gone")]))
        waiting = intake.submit_async([unit("waiting")])
        await asyncio.sleep(0)
        gone.cancel()  # the client went away before its batch committed
        threaded = intake.submit([unit("threaded")])
        alerts.release.set()
        got: list[BaseException | list[UnitOutcome]] = []
        for awaitable in (gone, waiting, asyncio.wrap_future(threaded)):
            try:
                got.append(await asyncio.wait_for(awaitable, 10))
            except BaseException as exc:  # what each waiter got is the test
                got.append(exc)
        return got

    gone, waiting, threaded = asyncio.run(scenario())
    assert isinstance(gone, asyncio.CancelledError)
    assert isinstance(waiting, StoreUnavailable) and isinstance(threaded, StoreUnavailable)
    # The writer survived: a later request is answered.
    alerts.fail = None
    assert [o.state for o in intake.submit([unit("later")]).result(10)] == [KeyState.TAKEN]
    intake.close()


@pytest.mark.parametrize("size", [1, 3])
def test_close_commits_what_is_queued(size: int) -> None:
    alerts = HeldAlerts()
    alerts.release.set()
    intake = GroupCommit(alerts, linger=0)  # type: ignore[arg-type]
    futures = [intake.submit([unit(f"k{i}")]) for i in range(size)]
    intake.close()
    assert [len(f.result(0)) for f in futures] == [1] * size
