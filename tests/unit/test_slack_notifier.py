"""SlackNotifier's coalescing: a burst of changes becomes few updates, and flush() waits for
the last one to reach Slack (tests and shutdown depend on it)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.slack_notifier import SlackNotifier
from bot.domain.rotation import ConsumerPlan, Rotation

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class SlowSlack:
    """Answers like Slack's chat.postMessage/chat.update, chat.update after a delay."""

    def __init__(self, update_delay: float) -> None:
        self.update_delay = update_delay
        self.updates: list[str] = []  # the text each finished update carried
        self.lock = threading.Lock()

    def chat_postMessage(self, *, channel: str, text: str, **_: Any) -> dict[str, str]:
        return {"ok": "true", "channel": channel, "ts": "1.000001"}

    def chat_update(self, *, channel: str, ts: str, text: str, **_: Any) -> dict[str, str]:
        time.sleep(self.update_delay)
        with self.lock:
            self.updates.append(text)
        return {"ok": "true", "channel": channel, "ts": ts}


def rotation() -> Rotation:
    r = Rotation.begin(secret="model-api-key", lanes=["prod"],
                       consumers=[ConsumerPlan("web", "prod", "U0WEB", "hot")],
                       overlap=timedelta(hours=24), observe=timedelta(hours=2),
                       store_path="ai/model-api-key", actor="U0ADMIN", now=T0)
    r.id = 7
    r.channel = "C0ROTATE"
    return r


def test_flush_waits_for_a_deferred_update_that_is_still_talking_to_slack() -> None:
    stored = rotation()
    slack = SlowSlack(update_delay=0.5)
    notifier = SlackNotifier(client=slack, load=lambda _id: stored,  # type: ignore[arg-type]
                             attach=lambda _id, ch, ts: setattr(stored, "message_ts", ts),
                             min_interval=0.1)
    notifier.rotation_changed(stored, [])  # posts the message
    stored.secret = "changed-1"  # rendered from the stored state when the update runs
    notifier.rotation_changed(stored, [])  # within min_interval: deferred
    time.sleep(0.2)  # the deferred update has started and is waiting on Slack
    notifier.flush()
    assert slack.updates and "changed-1" in slack.updates[-1]


def test_a_burst_of_changes_is_coalesced_and_the_last_state_is_shown() -> None:
    stored = rotation()
    slack = SlowSlack(update_delay=0.0)
    notifier = SlackNotifier(client=slack, load=lambda _id: stored,  # type: ignore[arg-type]
                             attach=lambda _id, ch, ts: setattr(stored, "message_ts", ts),
                             min_interval=0.2)
    notifier.rotation_changed(stored, [])
    for i in range(20):
        stored.secret = f"changed-{i}"
        notifier.rotation_changed(stored, [])
    notifier.flush()
    assert len(slack.updates) <= 2
    assert "changed-19" in slack.updates[-1]
