"""Data model of the Slack stand-in: users, channels, messages, views, call log, faults."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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


def view_hash(vid: str, view: Mapping[str, Any]) -> str:
    """A view's `hash`, as views.update/views.publish compare it to refuse stale updates."""
    digest = hashlib.sha256((vid + json.dumps(view, sort_keys=True)).encode()).hexdigest()
    return f"{int(time.time())}.{digest[:8]}"


def api_error(error: str, **extra: Any) -> dict[str, Any]:
    """An `ok: false` Web API answer."""
    return {"ok": False, "error": error, **extra}
