"""Slack's side of the conversation: signed commands, clicks, view submissions and events.

The stand-in (:mod:`bot.sandbox.slack_standin.state`) plays Slack's *Web API*; this module plays the
other half, what Slack *sends to the app*: a slash command as a form post, a button click or a
modal submission as ``payload=<json>``, an Events API callback as JSON, each signed with the
app's signing secret exactly as Slack signs (``v0=`` HMAC-SHA256 over ``v0:timestamp:body``,
computed by slack_sdk's :class:`~slack_sdk.signature.SignatureVerifier`, which Bolt checks with).
Trigger ids and response_urls are minted by the stand-in, so ``views.open`` and ``respond()``
land back in the same workspace model. The sandbox page and the e2e tests both drive the bot
through this class.
"""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.slack_standin.model import Ephemeral, Message, ViewRecord
from bot.sandbox.slack_standin.state import StandinState

INPUT_ELEMENTS = ("plain_text_input", "static_select", "radio_buttons")


def slack_signature(signing_secret: str, timestamp: str, body: str) -> str:
    """``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``, as Slack signs requests."""
    # Signing with the SDK's own code keeps the stand-in in step with how Bolt verifies.
    verifier = SignatureVerifier(signing_secret)
    signature = verifier.generate_signature(timestamp=timestamp, body=body)
    if signature is None:  # only for a None timestamp, which the type already rules out
        raise ValueError("a Slack signature needs a timestamp")
    return signature


@dataclass
class BotReply:
    """What the bot answered to one request Slack sent it."""

    kind: str  # "command", "block_actions", "view_submission", "view_closed", "event"
    status: int
    body: str
    request: str  # the (form or JSON) body that was sent, for reports; holds no credential
    json: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "ok": self.ok,
            "body": self.body[:2000],
            "json": self.json,
            "notes": self.notes,
        }


class SlackSideError(Exception):
    """The page or test asked for something Slack could not send (no such message/button)."""


class SlackSide:
    """Builds, signs and posts Slack's requests to the app at ``events_url``."""

    def __init__(
        self,
        state: StandinState,
        events_url: str,
        signing_secret: str,
        *,
        api_app_id: str = "A0ROTABOT",
        verification_token: str = "sandbox-verification-token",  # noqa: S107 - not a secret
        http: httpx.Client | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = state
        self.events_url = events_url
        self.signing_secret = signing_secret
        self.api_app_id = api_app_id
        # Slack still sends the deprecated verification token in every payload.
        self.verification_token = verification_token
        self.http = http or httpx.Client(timeout=30)
        self.clock = clock

    # ------------------------------------------------------------------ transport

    def sign(self, body: str, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(self.clock()) if timestamp is None else timestamp)
        return {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(self.signing_secret, ts, body),
        }

    def post(
        self,
        kind: str,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> BotReply:
        """Post one signed request; `timestamp`/`signature` let tests forge or age one."""
        headers = {"Content-Type": content_type, **self.sign(body, timestamp)}
        if signature is not None:
            headers["X-Slack-Signature"] = signature
        response = self.http.post(self.events_url, content=body.encode(), headers=headers)
        parsed: Any = None
        if response.content and response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            try:
                parsed = response.json()
            except ValueError:
                parsed = None
        return BotReply(kind, response.status_code, response.text, body, parsed)

    def _post_payload(self, kind: str, payload: Mapping[str, Any]) -> BotReply:
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))})
        return self.post(kind, body, "application/x-www-form-urlencoded")

    # ------------------------------------------------------------------ who

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self.state.users.get(user_id)
        if user is None:
            raise SlackSideError(f"no user {user_id} in the workspace")
        return {
            "id": user.id,
            "username": user.name,
            "name": user.name,
            "team_id": self.state.team_id,
        }

    def _team(self) -> dict[str, Any]:
        return {"id": self.state.team_id, "domain": self.state.team_name}

    def _channel(self, channel_id: str) -> dict[str, Any]:
        channel = self.state.channels.get(channel_id)
        if channel is None:
            raise SlackSideError(f"no channel {channel_id} in the workspace")
        name = channel.name or "directmessage"
        return {"id": channel.id, "name": name}

    # ------------------------------------------------------------------ slash commands

    def command(self, user: str, channel: str, text: str, *, command: str = "/rotate") -> BotReply:
        """A slash command, form-encoded as Slack posts it."""
        info = self._user(user)
        chan = self._channel(channel)
        form = {
            "token": self.verification_token,
            "team_id": self.state.team_id,
            "team_domain": self.state.team_name,
            "channel_id": channel,
            "channel_name": chan["name"],
            "user_id": user,
            "user_name": info["name"],
            "command": command,
            "text": text,
            "api_app_id": self.api_app_id,
            "is_enterprise_install": "false",
            "response_url": self.state.new_response_url(channel, user),
            "trigger_id": self.state.new_trigger_id(user),
        }
        return self.post("command", urlencode(form), "application/x-www-form-urlencoded")

    # ------------------------------------------------------------------ block_actions

    def click(
        self,
        user: str,
        *,
        channel: str | None = None,
        message_ts: str | None = None,
        ephemeral_seq: int | None = None,
        view_id: str | None = None,
        action_id: str | None = None,
        value: str | None = None,
        block_id: str | None = None,
        index: int = 0,
    ) -> BotReply:
        """Click a button in a channel message, an ephemeral message or a view.

        The button is found in the stored blocks by ``action_id`` (and ``value`` or
        ``block_id`` when several match; else the ``index``-th match), so a test clicks what
        the bot really rendered.
        """
        if view_id is not None:
            record = self._view(view_id)
            blocks = record.view.get("blocks", [])
            block, element = self._find_button(blocks, action_id, value, block_id, index)
            return self._send_view_action(user, record, block, element)
        if ephemeral_seq is not None:
            eph = self._ephemeral(ephemeral_seq, user)
            block, element = self._find_button(eph.blocks, action_id, value, block_id, index)
            return self._send_message_action(user, eph.channel, eph, block, element)
        if channel is None or message_ts is None:
            raise SlackSideError("a click needs channel and message_ts, ephemeral_seq or view_id")
        message = self.state.find_message(channel, message_ts)
        if message is None:
            raise SlackSideError(f"no message {message_ts} in {channel}")
        block, element = self._find_button(message.blocks, action_id, value, block_id, index)
        return self._send_message_action(user, channel, message, block, element)

    def _action(self, block: Mapping[str, Any], element: Mapping[str, Any]) -> dict[str, Any]:
        action: dict[str, Any] = {
            "action_id": element.get("action_id", ""),
            "block_id": block.get("block_id", ""),
            "type": element.get("type", "button"),
            "action_ts": f"{self.clock():.6f}",
        }
        if element.get("type") == "button":
            action["text"] = copy.deepcopy(element.get("text", {}))
            if "value" in element:
                action["value"] = element["value"]
            if "style" in element:
                action["style"] = element["style"]
        return action

    def _send_message_action(
        self,
        user: str,
        channel: str,
        message: Message | Ephemeral,
        block: Mapping[str, Any],
        element: Mapping[str, Any],
    ) -> BotReply:
        is_ephemeral = isinstance(message, Ephemeral)
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": {
                "type": "message",
                "message_ts": message.ts,
                "channel_id": channel,
                "is_ephemeral": is_ephemeral,
            },
            "trigger_id": self.state.new_trigger_id(user),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": self._channel(channel),
            "state": {"values": {}},
            "actions": [self._action(block, element)],
        }
        thread_ts = message.thread_ts if message.thread_ts != message.ts else None
        if isinstance(message, Message):
            # Slack includes the message for channel messages, not for ephemeral ones.
            payload["message"] = message.to_api(self.state.team_id)
            if thread_ts:
                payload["container"]["thread_ts"] = thread_ts
        payload["response_url"] = self.state.new_response_url(
            channel,
            user,
            message_ts=None if is_ephemeral else message.ts,
            thread_ts=thread_ts,
        )
        return self._post_payload("block_actions", payload)

    def _send_view_action(
        self, user: str, record: ViewRecord, block: Mapping[str, Any], element: Mapping[str, Any]
    ) -> BotReply:
        payload = {
            "type": "block_actions",
            "user": self._user(user),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "container": {"type": "view", "view_id": record.id},
            "trigger_id": self.state.new_trigger_id(user),
            "team": self._team(),
            "enterprise": None,
            "is_enterprise_install": False,
            "view": record.to_api(self.state.team_id, self.state.bot_id),
            "actions": [self._action(block, element)],
        }
        return self._post_payload("block_actions", payload)

    @staticmethod
    def _find_button(
        blocks: list[dict[str, Any]],
        action_id: str | None,
        value: str | None,
        block_id: str | None,
        index: int,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        matches: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for block in blocks:
            if block_id is not None and block.get("block_id") != block_id:
                continue
            elements: list[dict[str, Any]] = []
            if block.get("type") == "actions":
                elements = list(block.get("elements", []))
            elif block.get("type") == "section" and isinstance(block.get("accessory"), dict):
                elements = [block["accessory"]]
            for element in elements:
                if action_id is not None and element.get("action_id") != action_id:
                    continue
                if value is not None and element.get("value") != value:
                    continue
                matches.append((block, element))
        if len(matches) <= index:
            raise SlackSideError(
                f"no button action_id={action_id!r} value={value!r} block_id={block_id!r} "
                "in that message"
            )
        return matches[index]

    def _view(self, view_id: str) -> ViewRecord:
        record = self.state.views.get(view_id)
        if record is None:
            raise SlackSideError(f"no open view {view_id}")
        return record

    def _ephemeral(self, seq: int, user: str) -> Ephemeral:
        for eph in self.state.ephemerals_for(user):
            if eph.seq == seq:
                return eph
        raise SlackSideError(f"no ephemeral message {seq} for {user}")

    # ------------------------------------------------------------------ views

    def view_state(
        self, record: ViewRecord, values: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """``state.values`` for a submission: ``values`` maps block_id to the typed text or the
        chosen option value; inputs not given keep their initial value, as in Slack."""
        values = values or {}
        out: dict[str, Any] = {}
        for block in record.view.get("blocks", []):
            if block.get("type") != "input":
                continue
            element = block.get("element", {})
            kind = element.get("type")
            block_id = block.get("block_id", "")
            action_id = element.get("action_id", "")
            given = values.get(block_id)
            entry: dict[str, Any] = {"type": kind}
            if kind in ("static_select", "radio_buttons"):
                option = None
                if given is not None and given != "":
                    option = next(
                        (o for o in _options(element) if o.get("value") == str(given)), None
                    )
                    if option is None:
                        raise SlackSideError(f"{block_id}: no option {given!r}")
                elif element.get("initial_option"):
                    option = element["initial_option"]
                entry["selected_option"] = copy.deepcopy(option) if option else None
            else:
                text = given if given is not None else element.get("initial_value")
                entry["value"] = None if text in (None, "") else str(text)
            out[block_id] = {action_id: entry}
        return out

    def submit_view(
        self, user: str, view_id: str, values: Mapping[str, Any] | None = None
    ) -> BotReply:
        """Submit a modal; Slack closes it unless the app answers with errors/update/push."""
        record = self._view(view_id)
        api_view = record.to_api(self.state.team_id, self.state.bot_id)
        api_view["state"] = {"values": self.view_state(record, values)}
        payload = {
            "type": "view_submission",
            "team": self._team(),
            "user": self._user(user),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "trigger_id": self.state.new_trigger_id(user),
            "view": api_view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        reply = self._post_payload("view_submission", payload)
        if not reply.ok:
            return reply
        action = reply.json.get("response_action") if isinstance(reply.json, dict) else None
        if action == "errors":
            reply.notes.append("the modal stays open with errors")
        elif action == "update":
            self._replace_view(record, reply.json.get("view"))
        elif action == "push":
            self._push_view(record, reply.json.get("view"))
        elif action == "clear":
            self.state.close_all_views(user)
        else:
            self.state.close_view(view_id)
        return reply

    def close_view(self, user: str, view_id: str) -> BotReply | None:
        """The user closed the modal; the app hears of it only with notify_on_close."""
        record = self._view(view_id)
        notify = bool(record.view.get("notify_on_close"))
        self.state.close_view(view_id)
        if not notify:
            return None
        payload = {
            "type": "view_closed",
            "team": self._team(),
            "user": self._user(user),
            "api_app_id": self.api_app_id,
            "token": self.verification_token,
            "view": record.to_api(self.state.team_id, self.state.bot_id),
            "is_cleared": False,
            "is_enterprise_install": False,
        }
        return self._post_payload("view_closed", payload)

    # response_action update/push is Slack acting on the app's answer, not a Web API call by
    # the app, so it must not appear in the call log; the state has no public hook for it yet.
    def _replace_view(self, record: ViewRecord, view: Any) -> None:
        if not isinstance(view, dict):
            return
        state = self.state
        with state._lock:
            record.view = view
            record.hash = f"{int(self.clock())}.{uuid.uuid4().hex[:8]}"
            state._change("view_updated", user=record.user, view_id=record.id)

    def _push_view(self, record: ViewRecord, view: Any) -> None:
        if not isinstance(view, dict):
            return
        state = self.state
        with state._lock:
            stack = state.modal_stacks.setdefault(record.user, [])
            pushed = state._new_view(
                record.user, view, previous=stack[-1] if stack else None, root=record.root_view_id
            )
            state.views[pushed.id] = pushed
            stack.append(pushed.id)
            state._change("view_opened", user=record.user, view_id=pushed.id)

    # ------------------------------------------------------------------ events

    def event(self, event: Mapping[str, Any]) -> BotReply:
        """An Events API ``event_callback`` wrapping ``event``."""
        body = {
            "token": self.verification_token,
            "team_id": self.state.team_id,
            "api_app_id": self.api_app_id,
            "event": dict(event),
            "type": "event_callback",
            "event_id": "Ev" + uuid.uuid4().hex[:10].upper(),
            "event_time": int(self.clock()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.state.team_id,
                    "user_id": self.state.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        return self.post("event", json.dumps(body), "application/json")

    def open_home(self, user: str) -> BotReply:
        """The user opened the app's Home tab: ``app_home_opened``."""
        self._user(user)
        home = self.state.home_view(user)
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user,
            "channel": self._dm_channel(user),
            "tab": "home",
            "event_ts": f"{self.clock():.6f}",
        }
        if home is not None:
            event["view"] = home.to_api(self.state.team_id, self.state.bot_id)
        return self.event(event)

    def _dm_channel(self, user: str) -> str:
        for channel in self.state.channels.values():
            if channel.is_im and channel.im_user == user:
                return channel.id
        # The app's DM exists in Slack before anyone writes in it; mirror that. (The state has
        # no public way to open a DM without logging a Web API call, hence the private one.)
        with self.state._lock:
            return str(self.state._open_dm(user).id)


def _options(element: Mapping[str, Any]) -> list[dict[str, Any]]:
    options = list(element.get("options", []))
    for group in element.get("option_groups", []):
        options.extend(group.get("options", []))
    return options
