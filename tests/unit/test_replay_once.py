"""`once` (bot/domain/replay.py): a user action creates once; repeats get the first result."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bot.domain.replay import ActionInFlight, ActionLog, once


class MemoryActions:
    """ActionLog in a dict: id -> None while held, the result once finished."""

    def __init__(self) -> None:
        self.held: dict[str, str | None] = {}
        self.released: list[str] = []

    def begin(self, action_id: str) -> str | None:
        if action_id not in self.held:
            self.held[action_id] = None
            return None
        result = self.held[action_id]
        if result is None:
            raise ActionInFlight()
        return result

    def finish(self, action_id: str, result: str) -> None:
        self.held[action_id] = result

    def release(self, action_id: str) -> None:
        self.released.append(action_id)
        self.held.pop(action_id, None)


def creating(made: list[str], name: str, *, fail_after: bool = False,
             fail_before: bool = False) -> Callable[[Callable[[str], None]], str]:
    def first(created: Callable[[str], None]) -> str:
        if fail_before:
            raise ValueError("refused before anything was created")
        made.append(name)
        created(name)
        if fail_after:
            raise ValueError("failed after it was created")
        return name

    return first


def test_a_repeated_action_creates_nothing_and_gets_the_first_result() -> None:
    log: ActionLog = MemoryActions()
    made: list[str] = []
    assert once(log, "T1", first=creating(made, "R-1"), again=lambda r: "again " + r) == "R-1"
    assert once(log, "T1", first=creating(made, "R-2"), again=lambda r: "again " + r) == (
        "again R-1")
    assert once(log, "T2", first=creating(made, "R-3"), again=lambda r: "again " + r) == "R-3"
    assert made == ["R-1", "R-3"]


def test_an_action_that_failed_before_creating_is_released_and_may_run_again() -> None:
    log = MemoryActions()
    made: list[str] = []
    with pytest.raises(ValueError, match="refused"):
        once(log, "T1", first=creating(made, "R-1", fail_before=True), again=str)
    assert log.released == ["T1"]
    assert once(log, "T1", first=creating(made, "R-1"), again=str) == "R-1"
    assert made == ["R-1"]


def test_an_action_that_failed_after_creating_keeps_its_result() -> None:
    log = MemoryActions()
    made: list[str] = []
    with pytest.raises(ValueError, match="after"):
        once(log, "T1", first=creating(made, "R-1", fail_after=True), again=str)
    assert log.released == []
    assert once(log, "T1", first=creating(made, "R-2"), again=lambda r: "again " + r) == (
        "again R-1")
    assert made == ["R-1"]


def test_an_action_in_flight_elsewhere_is_refused_without_running() -> None:
    log = MemoryActions()
    log.held["T1"] = None  # another request holds it
    made: list[str] = []
    with pytest.raises(ActionInFlight):
        once(log, "T1", first=creating(made, "R-1"), again=str)
    assert made == [] and log.released == []


def test_without_a_log_or_an_id_the_action_simply_runs() -> None:
    made: list[str] = []
    assert once(None, "T1", first=creating(made, "R-1"), again=str) == "R-1"
    assert once(MemoryActions(), None, first=creating(made, "R-2"), again=str) == "R-2"
    assert made == ["R-1", "R-2"]
