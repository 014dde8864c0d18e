"""chat.* and reactions.add in the stand-in: posting, editing and deleting messages."""

from __future__ import annotations

from typing import Any

from bot.sandbox.slack_standin.model import api_error
from bot.sandbox.slack_standin.spec import as_blocks, as_list
from bot.sandbox.slack_standin.workspace import Handler, Workspace


def _post_message(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return api_error("channel_not_found")
    if not channel.is_im and s.bot_user_id not in channel.members:
        return api_error("not_in_channel")
    thread_ts = args.get("thread_ts") or None
    if thread_ts and s.find_message(channel.id, str(thread_ts)) is None:
        return api_error("thread_not_found")
    message = s._store_message(
        channel.id,
        s.bot_user_id,
        str(args.get("text", "")),
        as_blocks(args.get("blocks")),
        str(thread_ts) if thread_ts else None,
        bot=True,
        attachments=as_list(args.get("attachments")),
        metadata=args.get("metadata"),
    )
    return {
        "ok": True,
        "channel": channel.id,
        "ts": message.ts,
        "message": message.to_api(s.team_id),
    }


def _update(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return api_error("channel_not_found")
    message = s.find_message(channel.id, str(args["ts"]))
    if message is None:
        return api_error("message_not_found")
    if message.user != s.bot_user_id:
        return api_error("cant_update_message")
    # Omitted blocks keep the previous ones; an explicit empty list clears them.
    blocks = as_blocks(args["blocks"]) if "blocks" in args else None
    s._edit_message(message, str(args.get("text", "")), blocks)
    return {
        "ok": True,
        "channel": channel.id,
        "ts": message.ts,
        "text": message.text,
        "message": message.to_api(s.team_id),
    }


def _post_ephemeral(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return api_error("channel_not_found")
    user = str(args["user"])
    if user not in s.users:
        return api_error("user_not_found")
    if not channel.is_im:
        if s.bot_user_id not in channel.members:
            return api_error("not_in_channel")
        if user not in channel.members:
            return api_error("user_not_in_channel")
    ephemeral = s._add_ephemeral(
        channel.id,
        user,
        str(args.get("text", "")),
        as_blocks(args.get("blocks")),
        args.get("thread_ts") or None,
        "chat.postEphemeral",
    )
    return {"ok": True, "message_ts": ephemeral.ts}


def _delete(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return api_error("channel_not_found")
    message = s.find_message(channel.id, str(args["ts"]))
    if message is None:
        return api_error("message_not_found")
    if message.user != s.bot_user_id:
        return api_error("cant_delete_message")
    s._delete_message(message)
    return {"ok": True, "channel": channel.id, "ts": message.ts}


def _get_permalink(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return api_error("channel_not_found")
    message = s.find_message(channel.id, str(args["message_ts"]))
    if message is None:
        return api_error("message_not_found")
    root = s.public_url or f"https://{s.team_name}.slack.com/"
    root = root if root.endswith("/") else root + "/"
    link = f"{root}archives/{channel.id}/p{message.ts.replace('.', '')}"
    if message.thread_ts and message.thread_ts != message.ts:
        link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
    return {"ok": True, "channel": channel.id, "permalink": link}


def _reactions_add(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = s._resolve_channel(str(args["channel"]))
    if channel is None:
        return api_error("channel_not_found")
    message = s.find_message(channel.id, str(args["timestamp"]))
    if message is None:
        return api_error("message_not_found")
    users = message.reactions.setdefault(str(args["name"]), [])
    if s.bot_user_id in users:
        return api_error("already_reacted")
    users.append(s.bot_user_id)
    s._change("message_changed", channel=channel.id, ts=message.ts)
    return {"ok": True}


HANDLERS: dict[str, Handler] = {
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.postEphemeral": _post_ephemeral,
    "chat.delete": _delete,
    "chat.getPermalink": _get_permalink,
    "reactions.add": _reactions_add,
}
