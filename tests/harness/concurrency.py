"""Races for tests: every call at the same moment, each from its own thread."""

from __future__ import annotations

import threading
from collections.abc import Callable


def race(calls: list[Callable[[], object]]) -> list[object]:
    """Each call's result, in order; an exception is an outcome too, by its type's name (so
    a thread's failure is reported by the caller's assertion, not lost in the thread)."""
    barrier = threading.Barrier(len(calls))
    outcomes: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = calls[i]()
        except Exception as exc:
            outcomes[i] = type(exc).__name__

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    return outcomes
