"""auth.test, conversations.*, users.info and usergroups.users.list in the stand-in."""

from __future__ import annotations

from typing import Any

from bot.sandbox.slack_standin.model import api_error
from bot.sandbox.slack_standin.workspace import Handler, Workspace


def _auth_test(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
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


def _conversations_open(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    if args.get("channel"):
        channel = s.channels.get(str(args["channel"]))
        if channel is None:
            return api_error("channel_not_found")
    else:
        raw = args["users"]
        users = [u.strip() for u in raw.split(",")] if isinstance(raw, str) else list(raw)
        if len(users) != 1:
            # Group DMs need mpim:write, which rotabot does not request.
            return api_error("not_implemented", detail="the stand-in opens 1:1 DMs only")
        if users[0] not in s.users:
            return api_error("user_not_found")
        channel = s._open_dm(users[0])
    if str(args.get("return_im", "")).lower() in ("1", "true"):
        return {"ok": True, "channel": channel.to_api(s.bot_user_id)}
    return {"ok": True, "channel": {"id": channel.id}}


def _conversations_info(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = s.channels.get(str(args["channel"]))
    if channel is None:
        return api_error("channel_not_found")
    with_count = str(args.get("include_num_members", "")).lower() in ("1", "true")
    return {"ok": True, "channel": channel.to_api(s.bot_user_id, num_members=with_count)}


def _conversations_members(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    channel = s.channels.get(str(args["channel"]))
    if channel is None:
        return api_error("channel_not_found")
    members = sorted(channel.members)
    start = int(args.get("cursor") or 0)
    limit = int(args.get("limit") or 100)
    page = members[start : start + limit]
    next_cursor = str(start + limit) if start + limit < len(members) else ""
    return {"ok": True, "members": page, "response_metadata": {"next_cursor": next_cursor}}


def _users_info(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    user = s.users.get(str(args["user"]))
    if user is None:
        return api_error("user_not_found")
    return {"ok": True, "user": user.to_api(s.team_id)}


def _usergroups_users_list(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    group = s.usergroups.get(str(args["usergroup"]))
    if group is None:
        return api_error("no_such_subteam")
    return {"ok": True, "users": list(group.users)}


HANDLERS: dict[str, Handler] = {
    "auth.test": _auth_test,
    "conversations.open": _conversations_open,
    "conversations.info": _conversations_info,
    "conversations.members": _conversations_members,
    "users.info": _users_info,
    "usergroups.users.list": _usergroups_users_list,
}
