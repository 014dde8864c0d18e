"""Durable timers: the due work is derived from stored state, so nothing is lost on restart.

A rotation's deadlines (observation end, overlap end) live in its row. Each tick asks the
database what is due and does it; a deadline that passed while the bot was down is simply
due at the first tick after start, and runs once because every action is an idempotent,
revision-guarded state change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.lifecycle import Phase
from bot.rotation import Rotation
from bot.service import RotationService

log = logging.getLogger("rotabot.timers")


@dataclass
class TimerWork:
    service: RotationService
    # Only the replica holding the lock runs timers (always true with one process).
    is_leader: Callable[[], bool] = lambda: True
    fired: list[tuple[int, str]] = field(default_factory=list)

    def due(self, rotation: Rotation) -> str | None:
        now = self.service.clock.now()
        if (
            rotation.phase is Phase.OBSERVING
            and rotation.observe_until is not None
            and now >= rotation.observe_until
        ):
            return "observation-elapsed"
        if rotation.phase is Phase.READY_CHECK:
            return "look-for-new-version"
        return None

    def run_once(self) -> int:
        """Do everything due now; returns how many actions ran."""
        if not self.is_leader():
            return 0
        count = 0
        for rotation in self.service.active():
            what = self.due(rotation)
            if what is None or rotation.id is None:
                continue
            try:
                if what == "observation-elapsed":
                    after = self.service.tick(rotation.id)
                    if after.phase is not Phase.OBSERVING:
                        self.fired.append((rotation.id, what))
                        count += 1
                elif what == "look-for-new-version":
                    after = self.service.prepare(rotation.id, actor="rotabot")
                    if after.phase is not Phase.READY_CHECK:
                        count += 1
            except Exception:  # one broken rotation must not stop the others' timers
                log.exception(
                    "timer action failed",
                    extra={"rotation_id": rotation.id, "secret": rotation.secret},
                )
        return count


def start_scheduler(work: TimerWork, interval_seconds: float = 2.0) -> object:
    """Run ``work`` on an APScheduler interval job in a background thread."""
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(timezone="UTC")
    # misfire_grace_time=None: a run that was due while we were busy or down still runs;
    # coalesce: many missed runs collapse into one.
    scheduler.add_job(
        work.run_once,
        "interval",
        seconds=interval_seconds,
        id="rotabot-timers",
        misfire_grace_time=None,
        coalesce=True,
        max_instances=1,
    )
    scheduler.start()
    return scheduler
