"""views.* in the stand-in: modal stacks (open, push, update) and Home tabs (publish)."""

from __future__ import annotations

import time
from typing import Any

from bot.sandbox.slack_standin.model import VIEW_STACK_LIMIT, ViewRecord, api_error, view_hash
from bot.sandbox.slack_standin.spec import as_view
from bot.sandbox.slack_standin.workspace import Handler, Workspace


def _views_open(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    user, error = s._use_trigger(str(args["trigger_id"]))
    if error or user is None:
        return api_error(error or "invalid_trigger_id")
    record = s._new_view(user, args["view"], previous=None, root=None)
    s.views[record.id] = record
    # views.open starts a new stack, replacing whatever modal was open.
    s.close_all_views(user)
    s.modal_stacks[user] = [record.id]
    s._change("view_opened", user=user, view_id=record.id)
    return {"ok": True, "view": record.to_api(s.team_id, s.bot_id)}


def _views_push(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    user, error = s._use_trigger(str(args["trigger_id"]))
    if error or user is None:
        return api_error(error or "invalid_trigger_id")
    stack = s.modal_stacks.get(user, [])
    if not stack:
        return api_error("not_found", detail="views.push needs an open modal")
    if len(stack) >= VIEW_STACK_LIMIT:
        return api_error("push_limit_reached")
    record = s._new_view(user, args["view"], previous=stack[-1], root=stack[0])
    s.views[record.id] = record
    stack.append(record.id)
    s._change("view_opened", user=user, view_id=record.id)
    return {"ok": True, "view": record.to_api(s.team_id, s.bot_id)}


def _views_update(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    record: ViewRecord | None
    if args.get("view_id"):
        record = s.views.get(str(args["view_id"]))
    else:
        ext = str(args["external_id"])
        record = next((v for v in s.views.values() if v.external_id == ext), None)
    if record is None:
        return api_error("not_found")
    if args.get("hash") and args["hash"] != record.hash:
        return api_error("hash_conflict")
    view = as_view(args["view"])
    record.view = view
    record.external_id = view.get("external_id", record.external_id)
    record.hash = view_hash(record.id + str(time.monotonic_ns()), view)
    s._change("view_updated", user=record.user, view_id=record.id)
    return {"ok": True, "view": record.to_api(s.team_id, s.bot_id)}


def _views_publish(s: Workspace, args: dict[str, Any]) -> dict[str, Any]:
    user = str(args["user_id"])
    if user not in s.users:
        return api_error("user_not_found")
    view = as_view(args["view"])
    existing = s.home_view(user)
    if existing is not None:
        if args.get("hash") and args["hash"] != existing.hash:
            return api_error("hash_conflict")
        existing.view = view
        existing.hash = view_hash(existing.id + str(time.monotonic_ns()), view)
        record = existing
    else:
        record = s._new_view(user, view, previous=None, root=None)
        s.views[record.id] = record
        s.home_views[user] = record.id
    s._change("home_published", user=user, view_id=record.id)
    return {"ok": True, "view": record.to_api(s.team_id, s.bot_id)}


HANDLERS: dict[str, Handler] = {
    "views.open": _views_open,
    "views.push": _views_push,
    "views.update": _views_update,
    "views.publish": _views_publish,
}
