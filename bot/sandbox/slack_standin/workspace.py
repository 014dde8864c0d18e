"""The stand-in's Slack workspace: its members, channels, messages and views, and a change feed."""

from __future__ import annotations

import copy
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any, Self, TypeVar

from bot.sandbox.slack_standin.model import (
    Channel,
    Ephemeral,
    Message,
    ResponseUrl,
    User,
    UserGroup,
    ViewRecord,
    view_hash,
)
from bot.sandbox.slack_standin.spec import as_view

T = TypeVar("T")


class Workspace:
    """Thread-safe model of one Slack workspace as seen by one bot.

    Public methods take `_lock`; the underscore primitives expect their caller (a Web API
    handler run by `StandinState.handle_api`, or `SlackSide`) to hold it. Every write appends
    to the change feed that `wait_for`/`wait_for_change` and the sandbox page's long-poll follow.
    """

    def __init__(
        self,
        *,
        team_id: str = "T0ROTABOT",
        team_name: str = "rotabot-sandbox",
        bot_user_id: str = "U0ROTABOT",
        bot_id: str = "B0ROTABOT",
        bot_name: str = "rotabot",
    ) -> None:
        self.team_id = team_id
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        # Absolute root where the app is served, e.g. http://127.0.0.1:PORT/ (set by the server).
        self.public_url: str | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._last_ts = 0.0
        self._seq = 0
        self._ephemeral_seq = 0
        self._changes: list[dict[str, Any]] = []
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.usergroups: dict[str, UserGroup] = {}
        self.messages: dict[str, list[Message]] = {}
        self.ephemerals: list[Ephemeral] = []
        self.views: dict[str, ViewRecord] = {}
        self.modal_stacks: dict[str, list[str]] = {}
        self.home_views: dict[str, str] = {}
        self.response_urls: dict[str, ResponseUrl] = {}
        self._triggers: dict[str, tuple[str, bool]] = {}
        self.add_user(bot_user_id, bot_name, real_name="rotabot", is_bot=True)

    # ------------------------------------------------------------------ setup helpers

    @property
    def base_url(self) -> str:
        """Web API base URL for WebClient(base_url=...) / SLACK_API_URL."""
        return f"{self._root()}api/"

    def _root(self) -> str:
        if self.public_url is None:
            raise RuntimeError("the stand-in is not being served yet (public_url is unset)")
        return self.public_url if self.public_url.endswith("/") else self.public_url + "/"

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str = "",
        is_admin: bool = False,
        is_bot: bool = False,
    ) -> User:
        with self._lock:
            user = User(user_id, name, real_name, is_admin=is_admin, is_bot=is_bot)
            self.users[user_id] = user
            self._change("user", user=asdict(user))
            return user

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        members: Iterable[str] = (),
        bot_is_member: bool = True,
        is_private: bool = False,
    ) -> Channel:
        with self._lock:
            channel = Channel(channel_id, name.lstrip("#"), set(members), is_private=is_private)
            if bot_is_member:
                channel.members.add(self.bot_user_id)
            self.channels[channel_id] = channel
            self.messages.setdefault(channel_id, [])
            self._change("channel", channel=channel_id)
            return channel

    def set_bot_membership(self, channel_id: str, member: bool) -> None:
        """Invite the bot to, or remove it from, a channel (for `not_in_channel`)."""
        with self._lock:
            members = self.channels[channel_id].members
            if member:
                members.add(self.bot_user_id)
            else:
                members.discard(self.bot_user_id)
            self._change("channel", channel=channel_id)

    def add_usergroup(self, group_id: str, handle: str, users: Iterable[str]) -> UserGroup:
        with self._lock:
            group = UserGroup(group_id, handle, list(users))
            self.usergroups[group_id] = group
            self._change("usergroup", usergroup=group_id)
            return group

    def new_response_url(
        self,
        channel: str,
        user: str,
        *,
        message_ts: str | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """A response_url as Slack puts in a command or action payload (message_ts: the
        message an action came from, which replace_original/delete_original act on)."""
        with self._lock:
            rid = f"R{next(self._ids):06d}{secrets.token_hex(4)}"
            self.response_urls[rid] = ResponseUrl(rid, channel, user, message_ts, thread_ts)
            return f"{self._root()}response/{rid}"

    def new_trigger_id(self, user: str) -> str:
        """A trigger_id for an interaction payload; views.open/push accept it once."""
        with self._lock:
            trigger = f"{next(self._ids)}.{int(time.time())}.{secrets.token_hex(8)}"
            self._triggers[trigger] = (user, False)
            return trigger

    def post_user_message(
        self, channel: str, user: str, text: str, *, thread_ts: str | None = None
    ) -> Message:
        """A message typed by a person (sandbox composer), not by the bot."""
        with self._lock:
            return self._store_message(channel, user, text, [], thread_ts, bot=False)

    def close_view(self, view_id: str) -> None:
        """Close a modal (submitted or cancelled) and the ones stacked above it."""
        with self._lock:
            record = self.views.get(view_id)
            if record is None or record.type != "modal":
                return
            stack = self.modal_stacks.get(record.user, [])
            if view_id in stack:
                closed = stack[stack.index(view_id) :]
                del stack[stack.index(view_id) :]
                for vid in closed:
                    self.views.pop(vid, None)
                self._change("view_closed", user=record.user, view_ids=closed)

    def close_all_views(self, user: str) -> None:
        with self._lock:
            stack = self.modal_stacks.get(user, [])
            if stack:
                self.close_view(stack[0])

    # ------------------------------------------------------------------ inspection

    def channel_messages(self, channel: str) -> list[Message]:
        with self._lock:
            return list(self.messages.get(channel, []))

    def find_message(self, channel: str, ts: str) -> Message | None:
        with self._lock:
            return next((m for m in self.messages.get(channel, []) if m.ts == ts), None)

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """Replies of a thread, oldest first (the parent excluded)."""
        with self._lock:
            return [
                m
                for m in self.messages.get(channel, [])
                if m.thread_ts == thread_ts and m.ts != thread_ts
            ]

    def ephemerals_for(self, user: str) -> list[Ephemeral]:
        with self._lock:
            return [e for e in self.ephemerals if e.user == user]

    def open_views(self, user: str) -> list[ViewRecord]:
        with self._lock:
            return [self.views[v] for v in self.modal_stacks.get(user, [])]

    def home_view(self, user: str) -> ViewRecord | None:
        with self._lock:
            vid = self.home_views.get(user)
            return self.views.get(vid) if vid else None

    @property
    def seq(self) -> int:
        with self._lock:
            return self._seq

    def changes_since(self, since: int) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(c) for c in self._changes if c["seq"] > since]

    def wait_for_change(self, since: int, timeout: float) -> int:
        """Block until something changed after `since` (or timeout); return the latest seq."""
        with self._changed:
            self._changed.wait_for(lambda: self._seq > since, timeout=timeout)
            return self._seq

    def wait_for(self, predicate: Callable[[Self], T | None], timeout: float = 10) -> T:
        """Wait until predicate(state) is truthy and return it; tests use this, not sleeps."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                result = predicate(self)
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("stand-in condition not met before the timeout")
                self._changed.wait(remaining)

    def snapshot(self, user: str | None = None) -> dict[str, Any]:
        """JSON-ready picture of the workspace, as `user` sees it when given."""
        with self._lock:
            channels = []
            for channel in self.channels.values():
                if channel.is_im and user is not None and channel.im_user != user:
                    continue
                item = channel.to_api(self.bot_user_id)
                item["name"] = channel.name
                item["members"] = sorted(channel.members)
                item["messages"] = [
                    m.to_api(self.team_id) for m in self.messages.get(channel.id, [])
                ]
                channels.append(item)
            ephemerals = [asdict(e) for e in self.ephemerals if user is None or e.user == user]
            view_users = [user] if user is not None else list(self.modal_stacks)
            modals = {
                u: [self.views[v].to_api(self.team_id, self.bot_id) for v in self.modal_stacks[u]]
                for u in view_users
                if self.modal_stacks.get(u)
            }
            home_users = [user] if user is not None else list(self.home_views)
            homes = {
                u: self.views[self.home_views[u]].to_api(self.team_id, self.bot_id)
                for u in home_users
                if u in self.home_views
            }
            return {
                "seq": self._seq,
                "team": {"id": self.team_id, "name": self.team_name},
                "bot": {"user_id": self.bot_user_id, "bot_id": self.bot_id, "name": self.bot_name},
                "users": [u.to_api(self.team_id) for u in self.users.values()],
                "usergroups": [asdict(g) for g in self.usergroups.values()],
                "channels": channels,
                "ephemerals": ephemerals,
                "modals": modals,
                "home": homes,
            }

    # ------------------------------------------------------------------ primitives (lock held)

    def _change(self, kind: str, **data: Any) -> None:
        self._seq += 1
        self._changes.append({"seq": self._seq, "kind": kind, **data})
        self._changed.notify_all()

    def _next_ts(self) -> str:
        now = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = now
        return f"{now:.6f}"

    def _resolve_channel(self, ref: str) -> Channel | None:
        if ref in self.channels:
            return self.channels[ref]
        if ref.startswith("#"):
            return next((c for c in self.channels.values() if c.name == ref[1:]), None)
        if ref in self.users:
            # Posting to a user ID lands in the bot's DM with that user.
            return self._open_dm(ref)
        return None

    def _open_dm(self, user: str) -> Channel:
        for channel in self.channels.values():
            if channel.is_im and channel.im_user == user:
                return channel
        channel = Channel(
            f"D{next(self._ids):08d}", "", {self.bot_user_id, user}, is_im=True, im_user=user
        )
        self.channels[channel.id] = channel
        self.messages[channel.id] = []
        self._change("channel", channel=channel.id)
        return channel

    def _store_message(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None,
        *,
        bot: bool,
        attachments: list[Any] | None = None,
        metadata: Any = None,
    ) -> Message:
        message = Message(
            channel=channel,
            ts=self._next_ts(),
            user=user,
            text=text,
            blocks=blocks,
            bot_id=self.bot_id if bot else None,
            attachments=attachments or [],
            metadata=metadata,
        )
        if thread_ts:
            parent = self.find_message(channel, thread_ts)
            if parent is not None:
                # A reply to a reply joins the parent's thread, as in Slack.
                root = parent.thread_ts or parent.ts
                root_msg = self.find_message(channel, root) or parent
                root_msg.thread_ts = root_msg.ts
                root_msg.reply_count += 1
                if user not in root_msg.reply_users:
                    root_msg.reply_users.append(user)
                root_msg.latest_reply = message.ts
                message.thread_ts = root_msg.ts
        self.messages.setdefault(channel, []).append(message)
        self._change("message", channel=channel, ts=message.ts, thread_ts=message.thread_ts)
        return message

    def _edit_message(
        self, message: Message, text: str, blocks: list[dict[str, Any]] | None
    ) -> None:
        message.text = text
        if blocks is not None:
            message.blocks = blocks
        message.edited_ts = self._next_ts()
        self._change("message_changed", channel=message.channel, ts=message.ts)

    def _delete_message(self, message: Message) -> None:
        self.messages[message.channel].remove(message)
        self._change("message_deleted", channel=message.channel, ts=message.ts)

    def _add_ephemeral(
        self,
        channel: str,
        user: str,
        text: str,
        blocks: list[dict[str, Any]],
        thread_ts: str | None,
        source: str,
    ) -> Ephemeral:
        self._ephemeral_seq += 1
        ephemeral = Ephemeral(
            self._ephemeral_seq, channel, user, self._next_ts(), text, blocks, thread_ts, source
        )
        self.ephemerals.append(ephemeral)
        self._change("ephemeral", channel=channel, user=user, ts=ephemeral.ts)
        return ephemeral

    def _new_view(
        self, user: str, raw: Any, *, previous: str | None, root: str | None
    ) -> ViewRecord:
        view = as_view(raw)
        vid = f"V{next(self._ids):08d}"
        return ViewRecord(
            id=vid,
            user=user,
            type=str(view.get("type")),
            view=view,
            hash=view_hash(vid, view),
            external_id=view.get("external_id"),
            root_view_id=root or vid,
            previous_view_id=previous,
        )

    def _use_trigger(self, trigger_id: str) -> tuple[str | None, str | None]:
        """(user, error) for a trigger_id: unknown → invalid, reused → exchanged."""
        entry = self._triggers.get(trigger_id)
        if entry is None:
            return None, "invalid_trigger_id"
        user, used = entry
        if used:
            return None, "exchanged_trigger_id"
        self._triggers[trigger_id] = (user, True)
        return user, None


# A Web API method implementation: the workspace (locked by the caller) and the checked
# arguments in, the JSON answer out.
Handler = Callable[[Workspace, dict[str, Any]], dict[str, Any]]
