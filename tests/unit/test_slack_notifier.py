"""SlackNotifier's coalescing: a burst of changes becomes few updates, and flush() waits for
the last one to reach Slack (tests and shutdown depend on it)."""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.slack_budget import METHOD_RATES, MemoryTokenBuckets, SlackCallBudget
from adapters.slack_notifier import SlackNotifier
from bot.domain.rotation import ConsumerPlan, Rotation
from handlers import blocks

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


class SlowSlack:
    """Answers like Slack's chat.postMessage/chat.update. A held Slack does not answer a
    chat.update until the test lets it (``answer``); ``update_started`` tells the test that
    an update is waiting on Slack."""

    def __init__(self, *, hold_updates: bool = False) -> None:
        self.updates: list[str] = []  # the text each finished update carried
        self.lock = threading.Lock()
        self.update_started = threading.Event()
        self.answer = threading.Event()
        if not hold_updates:
            self.answer.set()

    def chat_postMessage(self, *, channel: str, text: str, **_: Any) -> dict[str, str]:
        return {"ok": "true", "channel": channel, "ts": "1.000001"}

    def chat_update(self, *, channel: str, ts: str, text: str, **_: Any) -> dict[str, str]:
        self.update_started.set()
        if not self.answer.wait(timeout=10):
            raise TimeoutError("the test never let Slack answer")
        with self.lock:
            self.updates.append(text)
        return {"ok": "true", "channel": channel, "ts": ts}

    def finished_updates(self) -> list[str]:
        with self.lock:
            return list(self.updates)


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
    slack = SlowSlack(hold_updates=True)
    notifier = SlackNotifier(client=slack, render=blocks,  # type: ignore[arg-type]
                             load=lambda _id: stored,
                             attach=lambda _id, ch, ts: setattr(stored, "message_ts", ts),
                             min_interval=0.1)
    notifier.rotation_changed(stored, [])  # posts the message
    stored.secret = "changed-1"  # rendered from the stored state when the update runs
    notifier.rotation_changed(stored, [])  # within min_interval: deferred
    assert slack.update_started.wait(timeout=10), "the deferred update never reached Slack"

    # The deferred update is now waiting on Slack; flush from another thread.
    seen_by_flush: list[list[str]] = []
    flushed = threading.Event()

    def flush() -> None:
        notifier.flush()
        seen_by_flush.append(slack.finished_updates())
        flushed.set()

    flusher = threading.Thread(target=flush, daemon=True)
    flusher.start()
    # Slack has not answered, so flush must still be waiting (a broken flush returns at once).
    assert not flushed.wait(timeout=0.3), "flush returned while an update was in flight"
    slack.answer.set()
    assert flushed.wait(timeout=10)
    flusher.join(timeout=10)
    # When flush returned, the update it waited for had reached Slack.
    assert seen_by_flush[0] and "changed-1" in seen_by_flush[0][-1]


def test_a_burst_of_changes_is_coalesced_and_the_last_state_is_shown() -> None:
    stored = rotation()
    slack = SlowSlack()
    notifier = SlackNotifier(client=slack, render=blocks,  # type: ignore[arg-type]
                             load=lambda _id: stored,
                             attach=lambda _id, ch, ts: setattr(stored, "message_ts", ts),
                             min_interval=0.2)
    notifier.rotation_changed(stored, [])
    for i in range(20):
        stored.secret = f"changed-{i}"
        notifier.rotation_changed(stored, [])
    notifier.flush()
    assert len(slack.updates) <= 2
    assert "changed-19" in slack.updates[-1]


def test_with_slacks_budget_spent_refreshes_merge_and_render_the_latest_state() -> None:
    now = [1_800_000_000.0]
    budget = SlackCallBudget(MemoryTokenBuckets(), clock=lambda: now[0])
    for _ in range(int(METHOD_RATES["chat.update"].burst)):  # Slack's minute is spent
        budget.call("chat.update", {"channel": "C0OTHER", "ts": "1.0"}, lambda: None)
    stored = rotation()
    slack = SlowSlack()
    notifier = SlackNotifier(client=slack, render=blocks,  # type: ignore[arg-type]
                             load=lambda _id: stored,
                             attach=lambda _id, ch, ts: setattr(stored, "message_ts", ts),
                             budget=budget, min_interval=0.0)
    notifier.rotation_changed(stored, [])  # posts the message
    for n in range(1, 6):  # five changes while chat.update has no token
        stored.secret = f"changed-{n}"
        notifier.rotation_changed(stored, [])
    assert slack.finished_updates() == []
    stored.secret = "changed-last"  # changed again before the turn comes
    now[0] += 60.0
    budget.poke()
    notifier.flush()
    # One call, rendered when it went: the state at that moment, not any queued one.
    (text,) = slack.finished_updates()
    assert "changed-last" in text
    assert budget.stats.merged == 4


def test_the_first_catch_up_after_a_restart_re_renders_a_message_whose_refresh_died() -> None:
    """A refresh waits in the budget's memory; kill -9 loses it. The catch-up at start
    renders each active rotation's message once more, so the next button shows."""
    stored = rotation()
    stored.message_ts = "1.000001"  # posted by the process that died
    stored.secret = "state-the-dead-process-never-showed"
    slack = SlowSlack()
    notifier = SlackNotifier(client=slack, render=blocks,  # type: ignore[arg-type]
                             load=lambda _id: stored,
                             attach=lambda _id, ch, ts: setattr(stored, "message_ts", ts),
                             min_interval=0.0)
    notifier.catch_up([stored])  # the periodic pass: a message that exists is left alone
    notifier.flush()
    assert slack.finished_updates() == []
    notifier.catch_up([stored], refresh=True)
    notifier.flush()
    (text,) = slack.finished_updates()
    assert "state-the-dead-process-never-showed" in text


class SharedSlack:
    """One Slack message that several replicas' clients update; it shows whichever update
    Slack applied last. A held client's chat.update waits, already rendered, before Slack
    applies it: a request still on its way while another replica's goes through."""

    def __init__(self) -> None:
        self.applied: list[tuple[str, str]] = []  # (replica, text), in the order applied
        self.lock = threading.Lock()

    def client(self, replica: str, *, hold_first_update: bool = False) -> SharedSlackClient:
        return SharedSlackClient(self, replica, hold_first_update)


class SharedSlackClient:
    def __init__(self, slack: SharedSlack, replica: str, hold_first_update: bool) -> None:
        self.slack = slack
        self.replica = replica
        self.held = hold_first_update
        self.update_started = threading.Event()
        self.answer = threading.Event()

    def chat_postMessage(self, *, channel: str, text: str, **_: Any) -> dict[str, str]:
        return {"ok": "true", "channel": channel, "ts": "1.000001"}

    def chat_update(self, *, channel: str, ts: str, text: str, **_: Any) -> dict[str, str]:
        if self.held:
            self.held = False
            self.update_started.set()
            if not self.answer.wait(timeout=10):
                raise TimeoutError("the test never let Slack answer")
        with self.slack.lock:
            self.slack.applied.append((self.replica, text))
        return {"ok": "true", "channel": channel, "ts": ts}


def test_an_older_render_that_reaches_slack_last_is_rendered_again() -> None:
    """Two replicas refresh one message: A renders, its request is slow; B changes the
    rotation and B's update lands first; then A's older render lands. A sees, once Slack
    answered, that the rotation moved on since its render, and renders again."""
    stored = rotation()
    stored.message_ts = "1.000001"
    stored.secret = "before"
    slack = SharedSlack()

    def replica(client: SharedSlackClient) -> SlackNotifier:
        return SlackNotifier(client=client, render=blocks,  # type: ignore[arg-type]
                             load=lambda _id: copy.deepcopy(stored),  # as read from the DB
                             attach=lambda _id, ch, ts: None,
                             budget=SlackCallBudget(MemoryTokenBuckets()), min_interval=0.0)

    a_client = slack.client("A", hold_first_update=True)
    a, b = replica(a_client), replica(slack.client("B"))
    a.refresh(7)
    assert a_client.update_started.wait(timeout=10), "A's update never reached Slack"
    stored.secret, stored.revision = "after", stored.revision + 1  # B's change commits
    b.refresh(7)
    b.flush()
    a_client.answer.set()  # A's older render lands now, after B's
    a.flush()

    assert [(who, "after" in text) for who, text in slack.applied] == [
        ("B", True), ("A", False), ("A", True)]
