"""Slack Web API methods rotabot calls and the least-privilege bot scopes they need."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# Bot scopes rotabot would request for each method (granular bot-token scopes from Slack's method
# docs). Where Slack accepts one of several scopes by conversation type, this names the ones
# rotabot needs: rotation channels may be public or private, reminders go to 1:1 DMs only.
# An empty tuple means the method needs no scope. Methods rotabot does not call are listed so a
# new call gets a precise message from tests/unit/test_manifest.py instead of a KeyError.
METHOD_SCOPES: Mapping[str, tuple[str, ...]] = {
    "auth.test": (),
    "chat.postMessage": ("chat:write",),
    "chat.update": ("chat:write",),
    "chat.postEphemeral": ("chat:write",),
    "chat.delete": ("chat:write",),
    "chat.scheduleMessage": ("chat:write",),
    "chat.getPermalink": (),
    "conversations.open": ("im:write",),
    "conversations.info": ("channels:read", "groups:read"),
    "conversations.members": ("channels:read", "groups:read"),
    "conversations.list": ("channels:read", "groups:read"),
    "conversations.join": ("channels:join",),
    "users.info": ("users:read",),
    "users.list": ("users:read",),
    "users.lookupByEmail": ("users:read", "users:read.email"),
    "usergroups.users.list": ("usergroups:read",),
    "usergroups.list": ("usergroups:read",),
    "views.open": (),
    "views.push": (),
    "views.update": (),
    "views.publish": (),
    "reactions.add": ("reactions:write",),
    "reactions.remove": ("reactions:write",),
    "pins.add": ("pins:write",),
    "team.info": ("team:read",),
}

# Called by slack_bolt itself, not by our code: App() verifies the token with auth.test.
IMPLICIT_METHODS: frozenset[str] = frozenset({"auth.test"})

# Every Web API method rotabot calls. tests/unit/test_manifest.py checks that the methods found
# in bot/, handlers/ and adapters/ are a subset of this, that each scope-bearing method here is
# really called, and that manifest.yml requests exactly the scopes these need.
METHODS_USED: frozenset[str] = IMPLICIT_METHODS | frozenset(
    {
        "chat.postMessage",  # rotation message, thread turns, alerts, reminder DMs
        "chat.update",  # the rotation message is updated in place
        "conversations.open",  # opens the DM for owner reminders
        "usergroups.users.list",  # is the clicker in the owning user group?
        "views.open",  # /rotate start modal, Report a problem modal
        "views.publish",  # App Home dashboard
    }
)

# Scopes a feature needs rather than a method.
FEATURE_SCOPES: Mapping[str, str] = {
    "commands": "the /rotate slash command",
}

# Events rotabot subscribes to and the scopes each needs.
EVENT_SCOPES: Mapping[str, tuple[str, ...]] = {
    "app_home_opened": (),  # render the App Home dashboard when a user opens it
}

# Why each requested scope is needed (README and manifest comments say the same).
SCOPE_REASONS: Mapping[str, str] = {
    "commands": "receive the /rotate slash command",
    "chat:write": (
        "post and update the rotation message and its thread, alerts and reminder DMs in "
        "conversations the bot is a member of (chat:write.public is not requested: the bot "
        "must be invited to the rotation and incident channels)"
    ),
    "im:write": "open a direct message (conversations.open) to remind an owner of a pending step",
    "usergroups:read": (
        "list the members of an owner user group (usergroups.users.list) to authorize clicks"
    ),
    "users:read": "look up users (users.info)",
    "channels:read": "read public channel details (conversations.info)",
    "groups:read": "read private channel details (conversations.info)",
}


class UnmappedMethod(KeyError):
    """A Web API method with no entry in METHOD_SCOPES: its scopes must be looked up first."""


def required_scopes(methods: Iterable[str]) -> set[str]:
    """The bot scopes the given Web API methods need."""
    scopes: set[str] = set()
    for method in methods:
        if method not in METHOD_SCOPES:
            raise UnmappedMethod(method)
        scopes.update(METHOD_SCOPES[method])
    return scopes


def manifest_scopes(
    methods: Iterable[str] = METHODS_USED, events: Iterable[str] = EVENT_SCOPES
) -> set[str]:
    """Every bot scope manifest.yml should request: methods, events and features."""
    scopes = required_scopes(methods) | set(FEATURE_SCOPES)
    for event in events:
        scopes.update(EVENT_SCOPES[event])
    return scopes
