"""Process settings: the one place the environment is read, once, by the composition root."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any, Self

from pydantic import (
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.domain.alert_intake import parse_tokens
from bot.domain.durations import parse_duration
from bot.services.health_schedule import DEFAULT_INTERVAL as DEFAULT_HEALTH_INTERVAL
from bot.services.health_schedule import MIN_INTERVAL as MIN_HEALTH_INTERVAL

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
# An HMAC key anyone could guess by brute force is no key: `serve` refuses shorter ones.
MIN_ALERT_SECRET_LENGTH = 32
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Field -> the environment variable it is read from. credentials_env is not listed: it is the
# whole environment, not one variable.
ENV_NAMES: Mapping[str, str] = {
    "catalog_path": "ROTABOT_CATALOG",
    "database_url": "DATABASE_URL",
    "slack_api_url": "SLACK_API_URL",
    "slack_bot_token": "SLACK_BOT_TOKEN",
    "slack_signing_secret": "SLACK_SIGNING_SECRET",
    "slack_app_token": "SLACK_APP_TOKEN",
    "alert_secret": "ROTABOT_ALERT_SECRET",
    "alertmanager_tokens": "ROTABOT_ALERTMANAGER_TOKEN",
    "alert_flood_limit": "ROTABOT_ALERT_FLOOD_LIMIT",
    "log_level": "ROTABOT_LOG_LEVEL",
    "library_log_level": "ROTABOT_LIBRARY_LOG_LEVEL",
    "port": "PORT",
    "health_interval": "ROTABOT_HEALTH_INTERVAL",
}

# The environment `Settings()` reads: os.environ, unless from_env was handed a mapping. A
# context variable (not a class attribute) so concurrent from_env calls cannot see each other's.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("rotabot_settings_env", default=None)


class SettingsError(Exception):
    """A missing or malformed setting; the message says what to set."""


class _Environment(PydanticBaseSettingsSource):
    """Reads ENV_NAMES from one mapping (empty means unset) and snapshots it as credentials_env.

    Used instead of pydantic-settings' env, dotenv and secrets-dir sources so that nothing but
    this mapping is read (no .env file, no JSON decoding of a variable named like a field).
    """

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        name = ENV_NAMES.get(field_name)
        raw = self._environ.get(name) if name is not None else None
        return (raw or None), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for field_name in ENV_NAMES:
            raw, key, _ = self.get_field_value(self.settings_cls.model_fields[field_name],
                                               field_name)
            if raw is not None:
                values[key] = raw
        values["credentials_env"] = dict(self._environ)
        return values


class Settings(BaseSettings):
    """Everything `rotabot` reads from its environment, validated once at start-up.

    ``Settings()`` reads ``os.environ``; keyword arguments override single fields (tests, the
    sandbox). ``Settings.from_env(mapping)`` reads only that mapping. Secrets stay plain
    strings for their readers but are left out of ``repr``, as is ``credentials_env``.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    catalog_path: str = "./catalog.yml"
    database_url: str = "sqlite:///./rotabot.db"
    slack_api_url: str = DEFAULT_SLACK_API_URL
    slack_bot_token: str | None = Field(default=None, repr=False)
    slack_signing_secret: str | None = Field(default=None, repr=False)
    slack_app_token: str | None = Field(default=None, repr=False)
    alert_secret: str | None = Field(default=None, repr=False)
    # Prometheus Alertmanager's tokens for `POST /alerts` (`Authorization: Bearer <token>`, or
    # Basic auth with the token as the password): one or more, separated by commas or
    # whitespace, so Alertmanager's token can itself be rotated (add the new one, switch
    # Alertmanager, remove the old one). Empty: Alertmanager's requests are refused.
    alertmanager_tokens: tuple[str, ...] = Field(default=(), repr=False)
    # `POST /alerts` flood limit per sender (address and signing key): RATE/BURST, reports a
    # second after a burst of BURST, e.g. "20/1000" (the default). A site whose connectors
    # all send from one address through one key raises it.
    alert_flood_limit: tuple[float, float] = (20.0, 1000.0)
    log_level: str = "INFO"
    # Slack, HTTP, Vault, scheduler and server libraries log request bodies below WARNING.
    library_log_level: str = "WARNING"
    port: int = 3000
    health_interval: timedelta = DEFAULT_HEALTH_INTERVAL
    # A snapshot of the process environment taken here, from which adapters look up the
    # credential variables the catalog names (token_env, url_env, headers_env), so that no
    # other module reads os.environ. Never shown: it holds those credentials.
    credentials_env: Mapping[str, str] = Field(default_factory=dict, repr=False)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        environ = _ENVIRON.get()
        return init_settings, _Environment(settings_cls, os.environ if environ is None else environ)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Self:
        """Settings from ``env`` only (never os.environ), or from os.environ when None."""
        if env is None:
            return cls()
        with _reading(env):
            return cls()

    # --- validation -------------------------------------------------------------------

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # pydantic lets non-ValueError exceptions through unchanged, so SettingsError reaches
        # the caller as one line naming the variable instead of a validation traceback.
        try:
            return handler(data)
        except ValidationError as exc:
            problem = _describe(exc)
        raise SettingsError(problem)  # outside `except`: no chained pydantic error

    @field_validator("slack_bot_token", "slack_signing_secret", "slack_app_token",
                     "alert_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("alertmanager_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return parse_tokens(value)
        return value

    @field_validator("alert_flood_limit", mode="before")
    @classmethod
    def _flood_limit(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        rate, sep, burst = value.strip().partition("/")
        try:
            parsed = (float(rate), float(burst))
        except ValueError:
            parsed = (0.0, 0.0)
        if not sep or parsed[0] <= 0 or parsed[1] < 1:
            raise ValueError(
                f"ROTABOT_ALERT_FLOOD_LIMIT={value!r} must be RATE/BURST, reports a second "
                "after a burst, e.g. 20/1000 (RATE above 0, BURST at least 1)"
            )
        return parsed

    @field_validator("library_log_level", mode="before")
    @classmethod
    def _library_log_level(cls, value: Any) -> str:
        raw = str(value).strip().upper()
        if raw in LOG_LEVELS:
            return raw
        raise ValueError(
            f"ROTABOT_LIBRARY_LOG_LEVEL={value!r} is not a log level; use one of "
            f"{', '.join(LOG_LEVELS)}"
        )

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> int:
        raw = value.strip() if isinstance(value, str) else value
        if isinstance(raw, str) and raw.isascii() and raw.isdigit():
            raw = int(raw)
        if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 65535:
            return raw
        raise ValueError(f"PORT={value!r} is not a port number; use 1-65535, e.g. 3000")

    @field_validator("health_interval", mode="before")
    @classmethod
    def _health_interval(cls, value: Any) -> timedelta:
        if isinstance(value, timedelta):
            return max(value, MIN_HEALTH_INTERVAL)
        raw = str(value).strip()
        if not raw:
            return DEFAULT_HEALTH_INTERVAL
        try:
            # Plain seconds ("60", "0.5") or a catalog duration ("30s", "2m").
            interval = (timedelta(seconds=float(raw)) if raw.replace(".", "", 1).isdigit()
                        else parse_duration(raw))
        except (ValueError, OverflowError):
            raise ValueError(
                f"ROTABOT_HEALTH_INTERVAL={raw!r} is not a duration; use e.g. 30s, 2m or 60"
            ) from None
        return max(interval, MIN_HEALTH_INTERVAL)

    # --- use ----------------------------------------------------------------------------

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
        if self.alert_secret is not None and len(self.alert_secret) < MIN_ALERT_SECRET_LENGTH:
            raise SettingsError(
                f"ROTABOT_ALERT_SECRET is too short: use at least {MIN_ALERT_SECRET_LENGTH} "
                "characters (e.g. the output of `openssl rand -hex 32`), or unset it to turn "
                "alert intake off"
            )
        if any(len(t) < MIN_ALERT_SECRET_LENGTH for t in self.alertmanager_tokens):
            raise SettingsError(
                f"ROTABOT_ALERTMANAGER_TOKEN holds a token shorter than "
                f"{MIN_ALERT_SECRET_LENGTH} characters: use e.g. the output of "
                "`openssl rand -hex 32` for each, or unset it to refuse Alertmanager"
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


@contextmanager
def _reading(env: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRON.set(env)
    try:
        yield
    finally:
        _ENVIRON.reset(token)


def _describe(exc: ValidationError) -> str:
    """One line per problem, naming the variable; never the value (it may be a secret)."""
    problems: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = ENV_NAMES.get(field, field)
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ValueError) and field in ("port", "health_interval",
                                                       "library_log_level"):
            problems.append(str(cause))  # our own wording, which shows the (non-secret) value
        elif error["type"] == "extra_forbidden":
            problems.append(f"{field} is not a setting")
        else:
            problems.append(f"{name} is invalid: {error['msg']}")
    return "; ".join(problems)
