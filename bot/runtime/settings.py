"""Process settings, read once from the environment by the composition root."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


class SettingsError(Exception):
    """A missing or malformed setting; the message says what to set."""


@dataclass(frozen=True)
class Settings:
    catalog_path: str
    database_url: str
    slack_api_url: str = DEFAULT_SLACK_API_URL
    slack_bot_token: str | None = None
    slack_signing_secret: str | None = None
    slack_app_token: str | None = None
    alert_secret: str | None = None
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            catalog_path=env.get("ROTABOT_CATALOG", "./catalog.yml"),
            database_url=env.get("DATABASE_URL", "sqlite:///./rotabot.db"),
            slack_api_url=env.get("SLACK_API_URL", DEFAULT_SLACK_API_URL),
            slack_bot_token=env.get("SLACK_BOT_TOKEN") or None,
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            slack_app_token=env.get("SLACK_APP_TOKEN") or None,
            alert_secret=env.get("ROTABOT_ALERT_SECRET") or None,
            log_level=env.get("ROTABOT_LOG_LEVEL", "INFO"),
        )

    def check_for_serve(self) -> None:
        """Fail fast, in one line, on credentials `rotabot serve` cannot run without."""
        if not self.slack_bot_token:
            raise SettingsError(
                "SLACK_BOT_TOKEN is not set: set it to the app's Bot User "
                "OAuth Token (xoxb-...), or run `rotabot sandbox` to try without Slack"
            )
        if not re.fullmatch(r"xoxb-[A-Za-z0-9-]+", self.slack_bot_token):
            raise SettingsError(
                "SLACK_BOT_TOKEN is malformed: expected the Bot User OAuth Token "
                "starting with xoxb- (OAuth & Permissions page)"
            )
        if self.slack_app_token is not None:
            if not self.slack_app_token.startswith("xapp-"):
                raise SettingsError(
                    "SLACK_APP_TOKEN is malformed: expected an app-level token "
                    "starting with xapp- with the connections:write scope"
                )
            return
        if not self.slack_signing_secret:
            raise SettingsError(
                "SLACK_SIGNING_SECRET is not set: copy the Signing Secret from "
                "the app's Basic Information page"
            )
        if not re.fullmatch(r"[0-9a-f]{32}", self.slack_signing_secret):
            raise SettingsError(
                "SLACK_SIGNING_SECRET is malformed: expected the 32 hex "
                "characters from the app's Basic Information page"
            )
