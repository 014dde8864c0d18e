"""manifest.yml: valid against Slack's manifest schema, scopes exactly cover the methods called."""

from __future__ import annotations

import inspect
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the dev extras
import pytest
import yaml
from slack_sdk.web.client import WebClient

from adapters.slack_scopes import (
    EVENT_SCOPES,
    FEATURE_SCOPES,
    IMPLICIT_METHODS,
    METHOD_SCOPES,
    METHODS_USED,
    SCOPE_REASONS,
    manifest_scopes,
    required_scopes,
)
from bot.sandbox.slack_standin import load_manifest_schema, load_web_api_spec

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "manifest.yml"
SCANNED_DIRS = ("bot", "handlers", "adapters")
# The stand-in implements Slack; it does not call it.
NOT_SCANNED = (ROOT / "bot" / "sandbox" / "slack_standin",)
# Bolt's say() posts to the event's channel; respond() uses response_url (no scope).
BOLT_HELPERS = {"say": "chat.postMessage"}


@lru_cache(maxsize=1)
def sdk_methods() -> dict[str, str]:
    """slack_sdk WebClient method name -> Web API method, read from slack_sdk's own source."""
    source = inspect.getsource(WebClient)
    mapping: dict[str, str] = {}
    for chunk in re.split(r"\n    def ", source)[1:]:
        name = re.match(r"\w+", chunk)
        call = re.search(r"api_call\(\s*[\"']([\w.]+)[\"']", chunk)
        if name and call:
            mapping[name.group(0)] = call.group(1)
    return mapping


CALL_RE = re.compile(r"\.\s*(\w+)\s*\(")
API_CALL_RE = re.compile(r"api_call\(\s*[\"']([\w.]+)[\"']")
HELPER_RE = re.compile(r"(?<![\w.])(say)\s*\(")


def methods_called(source: str) -> set[str]:
    """Web API methods a piece of Python source calls through slack_sdk or Bolt helpers."""
    mapping = sdk_methods()
    found = {mapping[name] for name in CALL_RE.findall(source) if name in mapping}
    found.update(API_CALL_RE.findall(source))
    found.update(BOLT_HELPERS[name] for name in HELPER_RE.findall(source))
    return found


def source_files() -> list[Path]:
    files = []
    for folder in SCANNED_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            if not any(path.is_relative_to(skip) for skip in NOT_SCANNED):
                files.append(path)
    return files


def scan() -> dict[str, set[str]]:
    """Method -> the files calling it."""
    where: dict[str, set[str]] = {}
    for path in source_files():
        for method in methods_called(path.read_text("utf-8")):
            where.setdefault(method, set()).add(str(path.relative_to(ROOT)))
    return where


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(MANIFEST.read_text("utf-8"))
    return loaded


def test_manifest_is_valid_against_slacks_schema(manifest: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(load_manifest_schema())
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(manifest)]
    assert errors == []


def test_schema_check_rejects_a_broken_manifest(manifest: dict[str, Any]) -> None:
    broken = {**manifest, "features": {**manifest["features"], "bot_user": {"always_online": True}}}
    validator = jsonschema.Draft7Validator(load_manifest_schema())
    assert any("display_name" in e.message for e in validator.iter_errors(broken))


def test_manifest_declares_what_rotabot_serves(manifest: dict[str, Any]) -> None:
    features = manifest["features"]
    [command] = features["slash_commands"]
    assert command["command"] == "/rotate"
    assert "start SECRET" in command["usage_hint"]
    assert command["url"].endswith("/slack/events")
    assert features["bot_user"]["always_online"] is True
    assert features["app_home"]["home_tab_enabled"] is True
    assert features["app_home"]["messages_tab_enabled"] is True
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"].endswith("/slack/events")
    assert settings["event_subscriptions"]["request_url"].endswith("/slack/events")
    assert settings["socket_mode_enabled"] is False
    assert settings["org_deploy_enabled"] is False
    # Slack requires 175+ characters when a long description is given.
    assert len(manifest["display_information"]["long_description"]) >= 175


def test_subscribed_events_are_known_and_need_no_undeclared_scope(manifest: dict[str, Any]) -> None:
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert set(events) == set(EVENT_SCOPES)


def test_manifest_requests_exactly_the_scopes_the_methods_need(manifest: dict[str, Any]) -> None:
    requested = set(manifest["oauth_config"]["scopes"]["bot"])
    needed = manifest_scopes(
        METHODS_USED, manifest["settings"]["event_subscriptions"]["bot_events"]
    )
    assert needed - requested == set(), "methods rotabot calls need these scopes in manifest.yml"
    assert requested - needed == set(), "manifest.yml requests scopes no called method needs"
    assert "chat:write.public" not in requested
    assert set(FEATURE_SCOPES) <= requested


def test_every_requested_scope_is_explained(manifest: dict[str, Any]) -> None:
    requested = manifest["oauth_config"]["scopes"]["bot"]
    assert all(SCOPE_REASONS.get(scope) for scope in requested)
    text = MANIFEST.read_text("utf-8")
    for scope in requested:
        assert re.search(rf"^\s*- {re.escape(scope)}\s+#\s*\S", text, re.M), scope


def test_declared_methods_exist_in_slacks_web_api_spec() -> None:
    spec = load_web_api_spec()
    assert sorted(m for m in METHODS_USED if m not in spec) == []
    assert sorted(m for m in METHOD_SCOPES if m not in spec) == []


def test_scanner_finds_sdk_calls_api_call_and_say() -> None:
    source = """
        resp = await client.chat_postMessage(channel=c, text=t)
        self._client.usergroups_users_list(usergroup=g)
        client.api_call("views.publish", json=args)
        say(text="hi")
        respond(text="only you")
        redis.client_list(); hvac.secrets.kv.v2.read_secret_version(path=p)
    """
    assert methods_called(source) == {
        "chat.postMessage",
        "usergroups.users.list",
        "views.publish",
    }
    assert sdk_methods()["conversations_open"] == "conversations.open"


def test_code_calls_only_declared_methods_and_every_scope_is_used() -> None:
    where = scan()
    called = set(where)
    unmapped = sorted(m for m in called if m not in METHOD_SCOPES)
    assert unmapped == [], f"add these to METHOD_SCOPES in adapters/slack_scopes.py: {unmapped}"
    undeclared = {m: sorted(where[m]) for m in called - METHODS_USED}
    assert undeclared == {}, (
        "the code calls Web API methods missing from METHODS_USED in adapters/slack_scopes.py "
        "(add them there and their scopes to manifest.yml)"
    )
    if not called:
        pytest.skip("no Slack calls in the code yet; scopes were checked against METHODS_USED")
    # A declared method that needs a scope but is never called would keep an unused scope.
    stale = sorted(m for m in METHODS_USED - called - IMPLICIT_METHODS if METHOD_SCOPES[m])
    assert stale == [], f"declared in METHODS_USED but not called anywhere: {stale}"
    assert required_scopes(called | IMPLICIT_METHODS) == required_scopes(METHODS_USED)


def test_slack_notifier_calls_are_found() -> None:
    notifier = ROOT / "adapters" / "slack_notifier.py"
    if not notifier.exists():
        pytest.skip("adapters/slack_notifier.py does not exist yet")
    found = methods_called(notifier.read_text("utf-8"))
    assert "chat.postMessage" in found
    assert found <= METHODS_USED


def test_paths_left_out_of_the_scan_exist() -> None:
    # A moved folder would otherwise silently be scanned (or a typo silently skip nothing).
    assert all(path.is_dir() for path in NOT_SCANNED), NOT_SCANNED
