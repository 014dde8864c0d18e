"""Loopback Slack Web API stand-in, shared by the e2e tests and `rotabot sandbox`."""

from bot.sandbox.slack_standin.model import (
    Call,
    Channel,
    Ephemeral,
    Message,
    User,
    UserGroup,
    ViewRecord,
    Violation,
)
from bot.sandbox.slack_standin.server import StandinServer, create_standin_app
from bot.sandbox.slack_standin.spec import WebApiSpec, load_manifest_schema, load_web_api_spec
from bot.sandbox.slack_standin.state import IMPLEMENTED_METHODS, StandinState

__all__ = [
    "IMPLEMENTED_METHODS",
    "Call",
    "Channel",
    "Ephemeral",
    "Message",
    "StandinServer",
    "StandinState",
    "User",
    "UserGroup",
    "ViewRecord",
    "Violation",
    "WebApiSpec",
    "create_standin_app",
    "load_manifest_schema",
    "load_web_api_spec",
]
