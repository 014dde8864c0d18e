"""Workspace model of the Slack stand-in: channels, users, messages, views, call log, faults."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from bot.sandbox.slack_standin.spec import (
    WebApiSpec,
    check_call,
    check_message_payload,
    decode_json_argument,
    find_forbidden,
    load_web_api_spec,
)

T = TypeVar("T")

RESPONSE_URL_MAX_USES = 5  # Slack accepts five posts to one response_url
VIEW_STACK_LIMIT = 3  # Slack keeps at most three modals stacked


@dataclass
class User:
    """A workspace member."""

    id: str
    name: str
    real_name: str = ""
    is_admin: bool = False
    is_bot: bool = False
    deleted: bool = False

    def to_api(self, team_id: str) -> dict[str, Any]:
        real_name = self.real_name or self.name
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": real_name,
            "deleted": self.deleted,
            "is_admin": self.is_admin,
            "is_bot": self.is_bot,
            "tz": "Etc/UTC",
            "profile": {"real_name": real_name, "display_name": self.name},
        }


@dataclass
class Channel:
    """A public or private channel, or a bot DM (`is_im`)."""

    id: str
    name: str
    members: set[str] = field(default_factory=set)
    is_private: bool = False
    is_im: bool = False
    im_user: str | None = None

    def to_api(self, bot_user_id: str, *, num_members: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "created": 0,
            "is_archived": False,
            "is_im": self.is_im,
        }
        if self.is_im:
            data.update({"user": self.im_user, "is_open": True})
        else:
            data.update(
                {
                    "name": self.name,
                    "is_channel": not self.is_private,
                    "is_group": False,
                    "is_private": self.is_private,
                    "is_member": bot_user_id in self.members,
                }
            )
        if num_members:
            data["num_members"] = len(self.members)
        return data


@dataclass
class UserGroup:
    """A user group (`S…`) used as a consumer owner."""

    id: str
    handle: str
    users: list[str] = field(default_factory=list)


@dataclass
class Message:
    """A channel message; `thread_ts` set on replies (and on parents once replied to)."""

    channel: str
    ts: str
    user: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    bot_id: str | None = None
    attachments: list[Any] = field(default_factory=list)
    metadata: Any = None
    edited_ts: str | None = None
    reply_count: int = 0
    reply_users: list[str] = field(default_factory=list)
    latest_reply: str | None = None
    reactions: dict[str, list[str]] = field(default_factory=dict)

    def to_api(self, team_id: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "message",
            "user": self.user,
            "text": self.text,
            "ts": self.ts,
            "team": team_id,
        }
        if self.bot_id:
            data["bot_id"] = self.bot_id
        if self.blocks:
            data["blocks"] = copy.deepcopy(self.blocks)
        if self.attachments:
            data["attachments"] = copy.deepcopy(self.attachments)
        if self.metadata is not None:
            data["metadata"] = copy.deepcopy(self.metadata)
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
        if self.thread_ts == self.ts:
            data.update(
                reply_count=self.reply_count,
                reply_users=list(self.reply_users),
                latest_reply=self.latest_reply,
            )
        if self.edited_ts:
            data["edited"] = {"user": self.user, "ts": self.edited_ts}
        if self.reactions:
            data["reactions"] = [
                {"name": n, "users": list(u), "count": len(u)} for n, u in self.reactions.items()
            ]
        return data


@dataclass
class Ephemeral:
    """A message only `user` sees: chat.postEphemeral or an ephemeral response_url reply."""

    seq: int
    channel: str
    user: str
    ts: str
    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)
    thread_ts: str | None = None
    source: str = "chat.postEphemeral"


@dataclass
class ViewRecord:
    """An open modal or a published Home tab."""

    id: str
    user: str
    type: str
    view: dict[str, Any]
    hash: str
    external_id: str | None = None
    root_view_id: str | None = None
    previous_view_id: str | None = None

    def to_api(self, team_id: str, bot_id: str) -> dict[str, Any]:
        data: dict[str, Any] = {
            "private_metadata": "",
            "callback_id": "",
            "clear_on_close": False,
            "notify_on_close": False,
        }
        data.update(copy.deepcopy(self.view))
        data.update(
            {
                "id": self.id,
                "team_id": team_id,
                "type": self.type,
                "state": {"values": {}},
                "hash": self.hash,
                "external_id": self.external_id or "",
                "root_view_id": self.root_view_id or self.id,
                "previous_view_id": self.previous_view_id,
                "app_id": "A0ROTABOT",
                "app_installed_team_id": team_id,
                "bot_id": bot_id,
            }
        )
        return data


@dataclass
class Call:
    """One request the stand-in answered (Web API or response_url); never holds the token."""

    seq: int
    method: str
    args: dict[str, Any]
    time: float
    http_method: str
    json_body: bool = False
    status: int = 200
    response: Any = None
    violations: list[str] = field(default_factory=list)
    unknown_args: list[str] = field(default_factory=list)
    fault: str | None = None

    @property
    def ok(self) -> bool:
        return isinstance(self.response, dict) and bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        if isinstance(self.response, dict) and not self.response.get("ok"):
            error = self.response.get("error")
            return str(error) if error is not None else None
        return None


@dataclass
class Violation:
    """A call Slack would reject as malformed: a bug in the caller, asserted empty by tests."""

    seq: int
    method: str
    messages: list[str]
    args: dict[str, Any]


@dataclass
class Fault:
    """An injected failure, consumed by the next `times` matching calls."""

    method: str
    status: int
    error: str | None
    retry_after: int
    times: int


@dataclass
class ResponseUrl:
    """A response_url the stand-in serves: where Bolt's respond() posts."""

    id: str
    channel: str
    user: str
    message_ts: str | None = None
    thread_ts: str | None = None
    uses: int = 0


@dataclass
class ApiResult:
    """What the HTTP layer sends back."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class StandinState:
    """Thread-safe model of one Slack workspace as seen by one bot, plus the call log."""

    def __init__(
        self,
        *,
        team_id: str = "T0ROTABOT",
        team_name: str = "rotabot-sandbox",
        bot_user_id: str = "U0ROTABOT",
        bot_id: str = "B0ROTABOT",
        bot_name: str = "rotabot",
        tokens: Iterable[str] | None = None,
        spec: WebApiSpec | None = None,
    ) -> None:
        self.team_id = team_id
        self.team_name = team_name
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        # None accepts any bot token (xoxb-…); a set pins the exact tokens.
        self.tokens = set(tokens) if tokens is not None else None
        self.spec = spec or load_web_api_spec()
        # Absolute root where the app is served, e.g. http://127.0.0.1:PORT/ (set by the server).
        self.public_url: str | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._last_ts = 0.0
        self._seq = 0
        self._ephemeral_seq = 0
        self._changes: list[dict[str, Any]] = []
        self._calls: list[Call] = []
        self._violations: list[Violation] = []
        self._faults: list[Fault] = []
        self._forbidden: set[str] = set()
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

    def forbid(self, value: str) -> None:
        """Register a secret value: any call or response_url post containing it is a violation."""
        with self._lock:
            self._forbidden.add(value)

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: int = 1,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls of `method` ("*" for any) fail.

        Default is HTTP 429 with Retry-After; `error=` answers HTTP 200 `ok:false`; `status=503`
        (or any 5xx) answers a server error.
        """
        if status is None:
            status = 200 if error is not None else 429
        with self._lock:
            self._faults.append(Fault(method, status, error, retry_after, times))

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

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    @property
    def violations(self) -> list[Violation]:
        with self._lock:
            return list(self._violations)

    def calls_to(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if c.method == method]

    def clear_log(self) -> None:
        """Forget recorded calls and violations (the workspace stays)."""
        with self._lock:
            self._calls.clear()
            self._violations.clear()

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

    def wait_for(self, predicate: Callable[[StandinState], T | None], timeout: float = 10) -> T:
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

    # ------------------------------------------------------------------ Web API entry point

    def handle_api(
        self,
        method: str,
        args: dict[str, Any],
        *,
        token: str | None,
        http_method: str = "POST",
        as_json: bool = False,
        parse_errors: Iterable[str] = (),
    ) -> ApiResult:
        """Check, fault-inject, execute and record one Web API call."""
        with self._lock:
            call = Call(
                seq=len(self._calls) + 1,
                method=method,
                args=copy.deepcopy(args),
                time=time.time(),
                http_method=http_method,
                json_body=as_json,
            )
            result = self._answer(call, args, token, as_json, list(parse_errors))
            call.status = result.status
            call.response = copy.deepcopy(result.body)
            if call.violations:
                self._violations.append(
                    Violation(call.seq, method, list(call.violations), call.args)
                )
            self._calls.append(call)
            self._change("call", method=method, call_seq=call.seq, ok=call.ok)
            return result

    def _answer(
        self,
        call: Call,
        args: dict[str, Any],
        token: str | None,
        as_json: bool,
        parse_errors: list[str],
    ) -> ApiResult:
        method = call.method
        if method not in self.spec:
            call.violations.append(f"unknown Web API method: {method}")
            return ApiResult(200, {"ok": False, "error": "unknown_method"})
        if not token:
            call.violations.append("no token: send Authorization: Bearer xoxb-…")
            return ApiResult(200, {"ok": False, "error": "not_authed"})
        if not self._token_ok(token):
            call.violations.append("token rejected (expected a bot token xoxb-…)")
            return ApiResult(200, {"ok": False, "error": "invalid_auth"})
        problems = parse_errors + check_call(self.spec, method, args, as_json=as_json)
        call.unknown_args = self.spec.unknown_arguments(method, args)
        if problems:
            call.violations.extend(problems)
            return ApiResult(
                200,
                {
                    "ok": False,
                    "error": "invalid_arguments",
                    "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]},
                },
            )
        if self._forbidden and find_forbidden(self._forbidden, args):
            # Slack would accept it; that is the point: the secret would now be in Slack.
            call.violations.append("a registered secret value appears in the call's arguments")
        fault = self._take_fault(method)
        if fault is not None:
            call.fault = fault.error or f"http {fault.status}"
            return self._fault_result(fault)
        handler = _HANDLERS.get(method)
        body = handler(self, args) if handler else {"ok": True}
        return ApiResult(200, body)

    def _token_ok(self, token: str) -> bool:
        if self.tokens is not None:
            return token in self.tokens
        return token.startswith("xoxb-")

    def _take_fault(self, method: str) -> Fault | None:
        for fault in self._faults:
            if fault.method in (method, "*"):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _fault_result(fault: Fault) -> ApiResult:
        if fault.status == 429:
            return ApiResult(
                429,
                {"ok": False, "error": "ratelimited"},
                {"Retry-After": str(fault.retry_after)},
            )
        if fault.status >= 500:
            return ApiResult(fault.status, {"ok": False, "error": "service_unavailable"})
        return ApiResult(fault.status, {"ok": False, "error": fault.error or "fatal_error"})

    # ------------------------------------------------------------------ response_url

    def handle_response_url(
        self, rid: str, payload: Any, parse_errors: Iterable[str] = ()
    ) -> ApiResult:
        """A post to a response_url: ephemeral reply, in-channel post, replace or delete."""
        with self._lock:
            call = Call(
                seq=len(self._calls) + 1,
                method="response_url",
                args=copy.deepcopy(payload) if isinstance(payload, dict) else {"raw": payload},
                time=time.time(),
                http_method="POST",
                json_body=True,
            )
            result = self._answer_response_url(call, rid, payload, list(parse_errors))
            call.status = result.status
            call.response = result.body
            if call.violations:
                self._violations.append(
                    Violation(call.seq, call.method, list(call.violations), call.args)
                )
            self._calls.append(call)
            self._change("call", method="response_url", call_seq=call.seq, ok=result.status == 200)
            return result

    def _answer_response_url(
        self, call: Call, rid: str, payload: Any, parse_errors: list[str]
    ) -> ApiResult:
        target = self.response_urls.get(rid)
        if target is None:
            return ApiResult(404, "no_service")
        if target.uses >= RESPONSE_URL_MAX_USES:
            call.violations.append(f"response_url used more than {RESPONSE_URL_MAX_USES} times")
            return ApiResult(404, "used_url")
        if parse_errors or not isinstance(payload, dict):
            call.violations.extend(parse_errors or ["response_url payload must be a JSON object"])
            return ApiResult(400, "invalid_payload")
        delete = bool(payload.get("delete_original"))
        problems = [] if delete else check_message_payload(payload)
        if problems:
            call.violations.extend(problems)
            return ApiResult(400, "invalid_blocks")
        if self._forbidden and find_forbidden(self._forbidden, payload):
            call.violations.append("a registered secret value appears in the response_url post")
        target.uses += 1
        blocks = _as_blocks(payload.get("blocks"))
        text = str(payload.get("text", ""))
        if delete or payload.get("replace_original"):
            if target.message_ts is None:
                # From a slash command there is no original; Slack posts a new message.
                if delete:
                    return ApiResult(404, "message_not_found")
            else:
                message = self.find_message(target.channel, target.message_ts)
                if message is None:
                    return ApiResult(404, "message_not_found")
                if delete:
                    self._delete_message(message)
                else:
                    self._edit_message(message, text, blocks)
                return ApiResult(200, "ok")
        thread_ts = payload.get("thread_ts") or target.thread_ts
        if payload.get("response_type") == "in_channel":
            # Slash-command responses may post in channel without the bot being a member.
            self._store_message(target.channel, self.bot_user_id, text, blocks, thread_ts, bot=True)
        else:
            self._add_ephemeral(
                target.channel, target.user, text, blocks, thread_ts, "response_url"
            )
        return ApiResult(200, "ok")

    # ------------------------------------------------------------------ internals

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
        view = _as_view(raw)
        vid = f"V{next(self._ids):08d}"
        return ViewRecord(
            id=vid,
            user=user,
            type=str(view.get("type")),
            view=view,
            hash=_view_hash(vid, view),
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


# ---------------------------------------------------------------------- method implementations


def _as_blocks(raw: Any) -> list[dict[str, Any]]:
    value, _ = decode_json_argument(raw, "blocks")
    return list(value) if isinstance(value, list) else []


def _as_view(raw: Any) -> dict[str, Any]:
    value, _ = decode_json_argument(raw, "view")
    return dict(value) if isinstance(value, dict) else {}


def _as_list(raw: Any) -> list[Any]:
    value, _ = decode_json_argument(raw, "attachments")
    return list(value) if isinstance(value, list) else []


def _view_hash(vid: str, view: Mapping[str, Any]) -> str:
    digest = hashlib.sha256((vid + json.dumps(view, sort_keys=True)).encode()).hexdigest()
    return f"{int(time.time())}.{digest[:8]}"


def _error(error: str, **extra: Any) -> dict[str, Any]:
    return {"ok": False, "error": error, **extra}


def _auth_test(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "ok": True,
        "url": f"https://{s.team_name}.slack.com/",
        "team": s.team_name,
        "user": s.bot_name,
        "team_id": s.team_id,
        "user_id": s.bot_user_id,
        "bot_id": s.bot_id,
        "is_enterprise_install": False,
    }


def _post_message(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return _error("channel_not_found")
    if not channel.is_im and s.bot_user_id not in channel.members:
        return _error("not_in_channel")
    thread_ts = args.get("thread_ts") or None
    if thread_ts and s.find_message(channel.id, str(thread_ts)) is None:
        return _error("thread_not_found")
    message = s._store_message(
        channel.id,
        s.bot_user_id,
        str(args.get("text", "")),
        _as_blocks(args.get("blocks")),
        str(thread_ts) if thread_ts else None,
        bot=True,
        attachments=_as_list(args.get("attachments")),
        metadata=args.get("metadata"),
    )
    return {
        "ok": True,
        "channel": channel.id,
        "ts": message.ts,
        "message": message.to_api(s.team_id),
    }


def _update(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return _error("channel_not_found")
    message = s.find_message(channel.id, str(args["ts"]))
    if message is None:
        return _error("message_not_found")
    if message.user != s.bot_user_id:
        return _error("cant_update_message")
    # Omitted blocks keep the previous ones; an explicit empty list clears them.
    blocks = _as_blocks(args["blocks"]) if "blocks" in args else None
    s._edit_message(message, str(args.get("text", "")), blocks)
    return {
        "ok": True,
        "channel": channel.id,
        "ts": message.ts,
        "text": message.text,
        "message": message.to_api(s.team_id),
    }


def _post_ephemeral(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return _error("channel_not_found")
    user = str(args["user"])
    if user not in s.users:
        return _error("user_not_found")
    if not channel.is_im:
        if s.bot_user_id not in channel.members:
            return _error("not_in_channel")
        if user not in channel.members:
            return _error("user_not_in_channel")
    ephemeral = s._add_ephemeral(
        channel.id,
        user,
        str(args.get("text", "")),
        _as_blocks(args.get("blocks")),
        args.get("thread_ts") or None,
        "chat.postEphemeral",
    )
    return {"ok": True, "message_ts": ephemeral.ts}


def _delete(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return _error("channel_not_found")
    message = s.find_message(channel.id, str(args["ts"]))
    if message is None:
        return _error("message_not_found")
    if message.user != s.bot_user_id:
        return _error("cant_delete_message")
    s._delete_message(message)
    return {"ok": True, "channel": channel.id, "ts": message.ts}


def _get_permalink(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return _error("channel_not_found")
    message = s.find_message(channel.id, str(args["message_ts"]))
    if message is None:
        return _error("message_not_found")
    root = s.public_url or f"https://{s.team_name}.slack.com/"
    root = root if root.endswith("/") else root + "/"
    link = f"{root}archives/{channel.id}/p{message.ts.replace('.', '')}"
    if message.thread_ts and message.thread_ts != message.ts:
        link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
    return {"ok": True, "channel": channel.id, "permalink": link}


def _conversations_open(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    if args.get("channel"):
        channel = s.channels.get(str(args["channel"]))
        if channel is None:
            return _error("channel_not_found")
    else:
        raw = args["users"]
        users = [u.strip() for u in raw.split(",")] if isinstance(raw, str) else list(raw)
        if len(users) != 1:
            # Group DMs need mpim:write, which rotabot does not request.
            return _error("not_implemented", detail="the stand-in opens 1:1 DMs only")
        if users[0] not in s.users:
            return _error("user_not_found")
        channel = s._open_dm(users[0])
    if str(args.get("return_im", "")).lower() in ("1", "true"):
        return {"ok": True, "channel": channel.to_api(s.bot_user_id)}
    return {"ok": True, "channel": {"id": channel.id}}


def _conversations_info(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    channel = s.channels.get(str(args["channel"]))
    if channel is None:
        return _error("channel_not_found")
    with_count = str(args.get("include_num_members", "")).lower() in ("1", "true")
    return {"ok": True, "channel": channel.to_api(s.bot_user_id, num_members=with_count)}


def _conversations_members(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    channel = s.channels.get(str(args["channel"]))
    if channel is None:
        return _error("channel_not_found")
    members = sorted(channel.members)
    start = int(args.get("cursor") or 0)
    limit = int(args.get("limit") or 100)
    page = members[start : start + limit]
    next_cursor = str(start + limit) if start + limit < len(members) else ""
    return {"ok": True, "members": page, "response_metadata": {"next_cursor": next_cursor}}


def _users_info(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    user = s.users.get(str(args["user"]))
    if user is None:
        return _error("user_not_found")
    return {"ok": True, "user": user.to_api(s.team_id)}


def _usergroups_users_list(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    group = s.usergroups.get(str(args["usergroup"]))
    if group is None:
        return _error("no_such_subteam")
    return {"ok": True, "users": list(group.users)}


def _views_open(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    user, error = s._use_trigger(str(args["trigger_id"]))
    if error or user is None:
        return _error(error or "invalid_trigger_id")
    record = s._new_view(user, args["view"], previous=None, root=None)
    s.views[record.id] = record
    # views.open starts a new stack, replacing whatever modal was open.
    s.close_all_views(user)
    s.modal_stacks[user] = [record.id]
    s._change("view_opened", user=user, view_id=record.id)
    return {"ok": True, "view": record.to_api(s.team_id, s.bot_id)}


def _views_push(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    user, error = s._use_trigger(str(args["trigger_id"]))
    if error or user is None:
        return _error(error or "invalid_trigger_id")
    stack = s.modal_stacks.get(user, [])
    if not stack:
        return _error("not_found", detail="views.push needs an open modal")
    if len(stack) >= VIEW_STACK_LIMIT:
        return _error("push_limit_reached")
    record = s._new_view(user, args["view"], previous=stack[-1], root=stack[0])
    s.views[record.id] = record
    stack.append(record.id)
    s._change("view_opened", user=user, view_id=record.id)
    return {"ok": True, "view": record.to_api(s.team_id, s.bot_id)}


def _views_update(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    record: ViewRecord | None
    if args.get("view_id"):
        record = s.views.get(str(args["view_id"]))
    else:
        ext = str(args["external_id"])
        record = next((v for v in s.views.values() if v.external_id == ext), None)
    if record is None:
        return _error("not_found")
    if args.get("hash") and args["hash"] != record.hash:
        return _error("hash_conflict")
    view = _as_view(args["view"])
    record.view = view
    record.external_id = view.get("external_id", record.external_id)
    record.hash = _view_hash(record.id + str(time.monotonic_ns()), view)
    s._change("view_updated", user=record.user, view_id=record.id)
    return {"ok": True, "view": record.to_api(s.team_id, s.bot_id)}


def _views_publish(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    user = str(args["user_id"])
    if user not in s.users:
        return _error("user_not_found")
    view = _as_view(args["view"])
    existing = s.home_view(user)
    if existing is not None:
        if args.get("hash") and args["hash"] != existing.hash:
            return _error("hash_conflict")
        existing.view = view
        existing.hash = _view_hash(existing.id + str(time.monotonic_ns()), view)
        record = existing
    else:
        record = s._new_view(user, view, previous=None, root=None)
        s.views[record.id] = record
        s.home_views[user] = record.id
    s._change("home_published", user=user, view_id=record.id)
    return {"ok": True, "view": record.to_api(s.team_id, s.bot_id)}


def _reactions_add(s: StandinState, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return _error("channel_not_found")
    message = s.find_message(channel.id, str(args["timestamp"]))
    if message is None:
        return _error("message_not_found")
    users = message.reactions.setdefault(str(args["name"]), [])
    if s.bot_user_id in users:
        return _error("already_reacted")
    users.append(s.bot_user_id)
    s._change("message_changed", channel=channel.id, ts=message.ts)
    return {"ok": True}


_HANDLERS: dict[str, Callable[[StandinState, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": _auth_test,
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _post_ephemeral,
    "chat.delete": _delete,
    "chat.getPermalink": _get_permalink,
    "conversations.open": _conversations_open,
    "conversations.info": _conversations_info,
    "conversations.members": _conversations_members,
    "users.info": _users_info,
    "usergroups.users.list": _usergroups_users_list,
    "views.open": _views_open,
    "views.push": _views_push,
    "views.update": _views_update,
    "views.publish": _views_publish,
    "reactions.add": _reactions_add,
}

IMPLEMENTED_METHODS = frozenset(_HANDLERS)
