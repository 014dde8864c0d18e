"""Posts and updates rotation messages in Slack, coalescing bursts of updates.

One parent message per rotation is updated in place, at most about once per second per
rotation (Slack's chat.update is Tier 3); thread prompts mention owners when their turn
begins.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.models.blocks import Block

from adapters.slack_budget import Importance, SlackCallBudget
from bot.domain.errors import NotifyError
from bot.domain.lifecycle import Phase, StepState
from bot.domain.log_context import rotation_context
from bot.domain.pacing import UpdatePacer
from bot.domain.rotation import ConsumerProgress, Rotation, step_rank

log = logging.getLogger("rotabot.slack")

Turn = tuple[ConsumerProgress, StepState]
# A message as Slack takes it: fallback text and Block Kit blocks.
Rendered = tuple[str, Sequence[Block]]
T = TypeVar("T")


class MessageRenderer(Protocol):
    """Block Kit for what the notifier posts on its own (handlers/blocks/ provides it; the
    composition root hands it in, so this adapter imports no listener code)."""

    def rotation_message(
        self, rotation: Rotation, gate: Any, evidence: Any, context: Any
    ) -> Rendered: ...

    def prompt_retired(
        self, rotation: Rotation, consumer: ConsumerProgress, step: StepState
    ) -> Rendered: ...

    def turn_prompt(
        self, rotation: Rotation, consumer: ConsumerProgress, step: StepState
    ) -> Rendered: ...

    def evidence_step(
        self, rotation: Rotation, consumer: ConsumerProgress, step: StepState
    ) -> Rendered: ...

    def text_message(self, text: str) -> Rendered: ...

    def with_mentions(self, text: str) -> str: ...


PARENT = "rotation-message"  # the claim kind of a rotation's one message


class PostClaims(Protocol):
    """Once-only posts across replicas and restarts (storage/claims.py implements it)."""

    def claim(self, rotation_id: int, kind: str, consumer: str = "") -> bool: ...

    def finished(self, rotation_id: int) -> set[tuple[str, str]]: ...

    def done(
        self, rotation_id: int, kind: str, consumer: str = "", ts: str | None = None
    ) -> None: ...

    def posted(self, rotation_id: int, prefix: str) -> dict[tuple[str, str], str]: ...

    def release(self, rotation_id: int, kind: str, consumer: str = "") -> None: ...


def explain_slack_error(exc: SlackApiError, channel: str) -> str:
    error = str(exc.response.get("error", "unknown_error")) if exc.response else "unknown_error"
    if error in ("not_in_channel", "channel_not_found"):
        return (
            f"rotabot is not in <#{channel}>: invite it with `/invite @rotabot` in that "
            "channel, then `/rotate status` to post the rotation message"
        )
    if error == "is_archived":
        return f"<#{channel}> is archived: set another channel in the catalog"
    return f"Slack refused the message ({error})"


@dataclass
class SlackNotifier:
    client: WebClient
    render: MessageRenderer
    load: Callable[[int], Rotation]
    attach: Callable[[int, str, str], None]  # rotation id, channel, ts
    gate_lines: Callable[[Rotation], object] | None = None
    # Usage evidence and health results for the message (bot/services/health.py).
    evidence: Callable[[Rotation], object] | None = None
    # Admins, manual instructions and open problems (RotationService.message_context).
    context: Callable[[Rotation], object] | None = None
    # Replicas share one rotation and a crash may fall between a change and its post: the
    # rotation message and each thread prompt are claimed (storage/claims.py) before they are
    # posted, so exactly one replica posts each, once. None: one process, no restarts.
    claims: PostClaims | None = None
    # The workspace-wide call budget the client's calls wait in (adapters/slack_budget.py):
    # refreshes and receipts are queued there without holding the caller. None: sent in line.
    budget: SlackCallBudget | None = None
    parent_wait: float = 10.0
    min_interval: float = 1.0
    _locks: dict[int, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # chat.update is Tier 3: one update per rotation message per min_interval, bursts
        # coalesced into one deferred update of the stored state.
        self._pacer: UpdatePacer[int] = UpdatePacer(
            self._update,
            lambda: self.min_interval,
            what="rotation message update",
            log_context=lambda rotation_id: {"rotation_id": rotation_id},
        )

    def flush(self) -> None:
        """Wait until no deferred update is pending or in flight (tests, shutdown)."""
        self._pacer.flush()
        if self.budget is not None:
            self.budget.flush()

    def rotation_changed(self, rotation: Rotation, turns: list[Turn]) -> None:
        assert rotation.id is not None
        with self._lock(rotation.id):
            ts = self._ensure_parent(rotation)
        if ts is not None:
            self._post_turns(rotation, ts, turns)

    def _lock(self, rotation_id: int) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(rotation_id, threading.Lock())

    def _ensure_parent(self, rotation: Rotation) -> str | None:
        rotation_id = rotation.id
        assert rotation_id is not None
        if rotation.message_ts is None:
            fresh = self.load(rotation_id)  # another thread may have posted it meanwhile
            if fresh.message_ts is not None:
                rotation = fresh
        if rotation.message_ts is None:
            channel = rotation.channel
            if channel is None:
                return None
            posted = self._in_post_turn(channel, None,
                                        lambda: self._post_parent(rotation, rotation_id))
            if posted is None:
                # Another replica is posting it: thread prompts need its ts, so wait for it.
                waited = self._await_parent(rotation_id)
                if waited is None:
                    log.warning("rotation message not posted yet by the replica that claimed it",
                                extra=rotation_context(rotation))
                    return None
                rotation.message_ts = waited
                self._pacer.soon(rotation_id)
                return waited
            ts, new = posted
            rotation.message_ts = ts
            if new:
                self._pacer.mark(rotation_id)
            else:
                self._pacer.soon(rotation_id)
            return ts
        self._pacer.soon(rotation_id)
        return rotation.message_ts

    def _post_parent(self, rotation: Rotation, rotation_id: int) -> tuple[str, bool] | None:
        """In the post's turn: (ts, True) when this call posted the message, (ts, False)
        when a stale claim we took over had been used after all, None when it is claimed."""
        if self.claims is not None and not self.claims.claim(rotation_id, PARENT):
            return None
        fresh = self.load(rotation_id)  # a stale claim we took over may have been used
        if fresh.message_ts is not None:
            return fresh.message_ts, False
        return self._post_claimed(rotation, PARENT, "", None, self._render(rotation)), True

    def _await_parent(self, rotation_id: int) -> str | None:
        deadline = time.monotonic() + self.parent_wait
        while time.monotonic() < deadline:
            ts = self.load(rotation_id).message_ts
            if ts is not None:
                return ts
            time.sleep(0.1)
        return None

    def _release(self, rotation_id: int, kind: str, consumer: str = "") -> None:
        if self.claims is not None:
            try:
                self.claims.release(rotation_id, kind, consumer)
            except Exception:  # the claim then expires by its lease instead
                log.exception("could not release a post claim",
                              extra={"rotation_id": rotation_id, "kind": kind})

    def catch_up(self, rotations: list[Rotation], *, refresh: bool = False) -> None:
        """Post what a crash may have left unposted (the message, the current prompts);
        claims make it a no-op for whatever already went out. ``refresh`` (once, at start)
        also re-renders each rotation message: a refresh queued in the budget dies with the
        process, and a message left showing an older phase would hide its next button."""
        for rotation in rotations:
            if rotation.terminal:
                continue
            try:
                self.post_missing(rotation)
                if refresh and rotation.message_ts is not None and rotation.id is not None:
                    self._update(rotation.id)
            except Exception:  # one rotation's Slack trouble must not stop the others
                log.exception("catching up a rotation's messages failed",
                              extra=rotation_context(rotation))

    def post_missing(self, rotation: Rotation) -> None:
        """Post the rotation message if it is missing and any current prompt not yet out;
        a message that is right is not updated. NotifyError when Slack refuses."""
        if rotation.message_ts is None:
            self.rotation_changed(rotation, rotation.pending_steps())
        else:
            self._post_turns(rotation, rotation.message_ts, rotation.pending_steps())

    def _update(self, rotation_id: int) -> None:
        rotation = self.load(rotation_id)
        if rotation.message_ts is None or rotation.channel is None:
            return
        if self.budget is not None:
            # A refresh: queued, merged with later ones, and rendered when its turn comes,
            # so what Slack shows last is the stored state at that moment.
            self.budget.submit("chat.update", {"channel": rotation.channel,
                                               "ts": rotation.message_ts},
                               lambda: self._send_update_logged(rotation_id))
            return
        self._send_update(rotation_id)

    def _send_update_logged(self, rotation_id: int) -> None:
        try:
            self._send_update(rotation_id)
        except NotifyError as exc:  # queued: nobody waits to be told
            log.warning("the rotation message was not updated: %s", exc,
                        extra={"rotation_id": rotation_id})

    def _send_update(self, rotation_id: int) -> None:
        rotation = self.load(rotation_id)  # always render the stored state
        if rotation.message_ts is None or rotation.channel is None:
            return
        text, body = self._render(rotation)
        try:
            self.client.chat_update(
                channel=rotation.channel, ts=rotation.message_ts, text=text, blocks=body
            )
        except SlackApiError as exc:
            raise NotifyError(explain_slack_error(exc, rotation.channel)) from None
        # Replicas update one message without a common queue: a change another replica made
        # while this render was on its way may have reached Slack first, leaving ours, older,
        # on show, with nobody left to refresh it. Slack has applied ours now, so a revision
        # that moved since our render means render once more.
        if self.load(rotation_id).revision != rotation.revision:
            self._pacer.soon(rotation_id)

    def _render(self, rotation: Rotation) -> Rendered:
        gate = None
        if self.gate_lines is not None and rotation.phase is Phase.OBSERVING:
            gate = self.gate_lines(rotation)
        extra = self.evidence(rotation) if self.evidence is not None else None
        context = self.context(rotation) if self.context is not None else None
        return self.render.rotation_message(rotation, gate, extra, context)

    def _post_turns(self, rotation: Rotation, ts: str, turns: list[Turn]) -> None:
        assert rotation.channel is not None
        assert rotation.id is not None
        # Most turns re-offered (`/rotate status`, catch-up) went out long ago: skip those
        # with one read before claiming the rest one by one.
        sent = self.claims.finished(rotation.id) if self.claims is not None and turns else set()
        for consumer, step in turns:
            kind = f"prompt:{step.value}"
            if (kind, consumer.name) in sent:
                continue
            text, body = self.render.turn_prompt(rotation, consumer, step)
            # Queued, not waited for: a click's listener holds one of Bolt's few threads,
            # and a thread waiting out a busy channel's pace leaves the next click unacked.
            # A refused post releases its claim: `/rotate status` re-offers the prompt.
            self._queue_post(rotation.channel, ts, functools.partial(
                self._claim_and_post, rotation, kind, consumer.name, ts, (text, body)),
                "a prompt was not posted", rotation_context(rotation))

    def _in_post_turn(self, channel: str, thread_ts: str | None, job: Callable[[], T]) -> T:
        """Run ``job`` (claim, post, mark done) once the budget gives this post its turn. A
        claim taken before waiting in a busy channel's queue could outlive its lease there,
        and the catch-up would post the same message again."""
        if self.budget is None:
            return job()
        return self.budget.call("chat.postMessage", {"channel": channel, "thread_ts": thread_ts},
                                job)

    def _claim_and_post(
        self, rotation: Rotation, kind: str, consumer: str, thread_ts: str | None,
        rendered: Rendered,
    ) -> str | None:
        """Post once across replicas and restarts: the ts, or None when the claim belongs to
        another poster (this or another replica, alive or within its lease)."""
        assert rotation.id is not None
        if self.claims is not None and not self.claims.claim(rotation.id, kind, consumer):
            return None
        return self._post_claimed(rotation, kind, consumer, thread_ts, rendered)

    def _post_claimed(
        self, rotation: Rotation, kind: str, consumer: str, thread_ts: str | None,
        rendered: Rendered,
    ) -> str:
        """Post what this caller holds the claim of: released when the post fails (not in
        channel: `/rotate status` posts it later), marked done with its ts once it went out."""
        assert rotation.id is not None and rotation.channel is not None
        try:
            resp = self._send_post(rotation.channel, rendered, thread_ts)
        except BaseException:
            self._release(rotation.id, kind, consumer)
            raise
        ts = str(resp["ts"])
        if kind == PARENT:
            self.attach(rotation.id, str(resp.get("channel", rotation.channel)), ts)
        if self.claims is not None:
            self.claims.done(rotation.id, kind, consumer, ts)
        return ts

    def refresh(self, rotation_id: int) -> None:
        """Re-render the rotation message soon (an alert on it changed), paced as always."""
        self._pacer.soon(rotation_id)

    def retire_prompts(self, rotation: Rotation) -> int:
        """The rotation ended: every thread prompt still offering a step loses its buttons
        and says why. Returns how many were updated."""
        if self.claims is None or rotation.id is None or rotation.channel is None:
            return 0
        updated = 0
        for (kind, name), ts in sorted(self.claims.posted(rotation.id, "prompt:").items()):
            step = StepState(kind.removeprefix("prompt:"))
            consumer = rotation.consumers.get(name)
            if consumer is None or step_rank(consumer.state) >= step_rank(step):
                continue  # done: its own click replaced the prompt with the outcome
            self.update(rotation.channel, ts, self.render.prompt_retired(rotation, consumer, step))
            updated += 1
        return updated

    def evidence_step(self, rotation: Rotation, consumer: str, step: StepState) -> None:
        """A consumer's report moved its step: the prompt that asked its owner for it says so
        and loses its buttons (in the thread when there is no prompt to update)."""
        if rotation.id is None or rotation.channel is None:
            return
        rendered = self.render.evidence_step(rotation, rotation.consumer(consumer), step)
        posted = (self.claims.posted(rotation.id, f"prompt:{step.value}")
                  if self.claims is not None else {})
        ts = posted.get((f"prompt:{step.value}", consumer))
        try:
            if ts is not None:
                self.update(rotation.channel, ts, rendered)
            else:
                self.post(rotation.channel, rendered, thread_ts=rotation.message_ts)
        except NotifyError as exc:  # the step is taken; the message catches up on the next
            log.warning("could not tell an evidence step in Slack: %s", exc,
                        extra=rotation_context(rotation))

    @property
    def posts_once(self) -> bool:
        return self.claims is not None

    def post(self, channel: str, rendered: Rendered, thread_ts: str | None = None) -> str:
        return str(self._send_post(channel, rendered, thread_ts)["ts"])

    def _send_post(self, channel: str, rendered: Rendered, thread_ts: str | None) -> Any:
        """chat.postMessage; Slack's answer, or NotifyError saying what to do."""
        text, body = rendered
        try:
            return self.client.chat_postMessage(
                channel=channel, text=text, blocks=body, thread_ts=thread_ts
            )
        except SlackApiError as exc:
            raise NotifyError(explain_slack_error(exc, channel)) from None

    def direct_message(self, user: str, text: str) -> str:
        """DM one user (timer reminders): conversations.open, then chat.postMessage."""
        try:
            channel = str(self.client.conversations_open(users=user)["channel"]["id"])
        except SlackApiError as exc:
            raise NotifyError(explain_slack_error(exc, user)) from None
        return self.post(channel, self.render.text_message(text))

    def thread_note(self, rotation: Rotation, text: str) -> str | None:
        """Post in the rotation's thread (in its channel if it has no message yet)."""
        if rotation.channel is None:
            return None
        rendered = self.render.text_message(self.render.with_mentions(text))
        return self.post(rotation.channel, rendered, thread_ts=rotation.message_ts)

    def post_later(self, channel: str, rendered: Rendered, thread_ts: str | None = None) -> None:
        """Post when the budget gives the turn, without waiting for it (a receipt: nobody
        needs its ts). Posts into one thread keep their order; a refusal is logged."""
        self._queue_post(channel, thread_ts,
                         functools.partial(self.post, channel, rendered, thread_ts),
                         "a queued post was not made")

    def _queue_post(
        self, channel: str, thread_ts: str | None, send: Callable[[], object], failed: str,
        context: Mapping[str, object] | None = None,
    ) -> None:
        """Run ``send`` (a chat.postMessage) in its budget turn without waiting for it; a
        refusal is logged as ``failed``. No budget: at once, refusals raised."""
        if self.budget is None:
            send()
            return

        def logged() -> None:
            try:
                send()
            except NotifyError as exc:  # queued: nobody waits to be told
                log.warning("%s: %s", failed, exc, extra=context)

        self.budget.submit("chat.postMessage", {"channel": channel, "thread_ts": thread_ts},
                           logged, level=Importance.POST)

    def update(self, channel: str, ts: str, rendered: Rendered, *, refresh: bool = False) -> None:
        """Replace a message. ``refresh`` (its counters changed, nobody waits): queued in
        the budget, merged with later refreshes of the message; the latest content wins."""
        if refresh and self.budget is not None:
            self._replace_queued(channel, ts, rendered, Importance.REFRESH)
            return
        text, body = rendered
        try:
            self.client.chat_update(channel=channel, ts=ts, text=text, blocks=body)
        except SlackApiError as exc:
            raise NotifyError(explain_slack_error(exc, channel)) from None

    def replace_later(self, channel: str, ts: str, rendered: Rendered) -> None:
        """Replace a message without waiting for Slack's budget (a clicked prompt's outcome:
        the click was acked, its listener need not sit in the queue). Ranks above refreshes."""
        if self.budget is None:
            self.update(channel, ts, rendered)
            return
        self._replace_queued(channel, ts, rendered, Importance.EDIT)

    def _replace_queued(
        self, channel: str, ts: str, rendered: Rendered, level: Importance
    ) -> None:
        assert self.budget is not None

        def send() -> None:
            try:
                self.update(channel, ts, rendered)
            except NotifyError as exc:  # queued: nobody waits to be told
                log.warning("a message was not updated: %s", exc)

        self.budget.submit("chat.update", {"channel": channel, "ts": ts}, send, level=level)
