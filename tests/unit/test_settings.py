"""Settings: defaults, the environment mapping, one-line errors, secrets kept out of repr."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.runtime.settings import DEFAULT_SLACK_API_URL, Settings, SettingsError

BOT_TOKEN = "xoxb-123-456-TOKENVALUE"
SIGNING = "0123456789abcdef0123456789abcdef"
APP_TOKEN = "xapp-1-APPTOKENVALUE"
ALERT = "alert-hmac-VALUE-0123456789abcdef0123"
CREDENTIAL = "sk-live-CREDENTIALVALUE"
FULL = {
    "ROTABOT_CATALOG": "/etc/rotabot/catalog.yml",
    "DATABASE_URL": "postgresql+psycopg://db/rotabot",
    "SLACK_API_URL": "http://127.0.0.1:8080/api/",
    "SLACK_BOT_TOKEN": BOT_TOKEN,
    "SLACK_SIGNING_SECRET": SIGNING,
    "SLACK_APP_TOKEN": APP_TOKEN,
    "ROTABOT_ALERT_SECRET": ALERT,
    "ROTABOT_LOG_LEVEL": "DEBUG",
    "ROTABOT_LIBRARY_LOG_LEVEL": "info",
    "PORT": "8080",
    "ROTABOT_HEALTH_INTERVAL": "2m",
    "MODEL_API_TOKEN": CREDENTIAL,  # a catalog token_env: only in credentials_env
}


def test_defaults_from_an_empty_mapping() -> None:
    s = Settings.from_env({})
    assert s.catalog_path == "./catalog.yml"
    assert s.database_url == "sqlite:///./rotabot.db"
    assert s.slack_api_url == DEFAULT_SLACK_API_URL
    assert s.slack_bot_token is None and s.slack_signing_secret is None
    assert s.slack_app_token is None and s.alert_secret is None
    assert s.log_level == "INFO"
    assert s.library_log_level == "WARNING"
    assert s.port == 3000
    assert s.health_interval == timedelta(seconds=60)
    assert s.credentials_env == {}


def test_every_variable_maps_to_its_field() -> None:
    s = Settings.from_env(FULL)
    assert s.catalog_path == "/etc/rotabot/catalog.yml"
    assert s.database_url == "postgresql+psycopg://db/rotabot"
    assert s.slack_api_url == "http://127.0.0.1:8080/api/"
    assert s.slack_bot_token == BOT_TOKEN
    assert s.slack_signing_secret == SIGNING
    assert s.slack_app_token == APP_TOKEN
    assert s.alert_secret == ALERT
    assert s.log_level == "DEBUG"
    assert s.library_log_level == "INFO"
    assert s.port == 8080
    assert s.health_interval == timedelta(minutes=2)
    assert s.credentials_env == FULL  # the whole mapping, for catalog-named variables


def test_an_explicit_mapping_never_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("PORT", "abc")  # would fail if it were read
    monkeypatch.setenv("MODEL_API_TOKEN", CREDENTIAL)
    s = Settings.from_env({"DATABASE_URL": "sqlite://"})
    assert s.slack_bot_token is None and s.port == 3000
    assert s.credentials_env == {"DATABASE_URL": "sqlite://"}


def test_without_a_mapping_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("PORT", "4000")
    monkeypatch.setenv("MODEL_API_TOKEN", CREDENTIAL)
    for s in (Settings.from_env(), Settings()):
        assert s.slack_bot_token == BOT_TOKEN and s.port == 4000
        assert s.credentials_env["MODEL_API_TOKEN"] == CREDENTIAL


def test_snapshot_is_taken_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_API_TOKEN", "before")
    s = Settings()
    monkeypatch.setenv("MODEL_API_TOKEN", "after")
    assert s.credentials_env["MODEL_API_TOKEN"] == "before"


def test_keyword_arguments_override_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROTABOT_ALERT_SECRET", raising=False)
    s = Settings(catalog_path="c.yml", database_url="sqlite://", slack_bot_token=BOT_TOKEN,
                 port=9000, health_interval=timedelta(seconds=30))
    assert (s.catalog_path, s.database_url, s.slack_bot_token) == ("c.yml", "sqlite://",
                                                                   BOT_TOKEN)
    assert s.port == 9000 and s.health_interval == timedelta(seconds=30)
    assert s.alert_secret is None


def test_empty_means_unset() -> None:
    s = Settings.from_env({name: "" for name in FULL})
    assert s.slack_bot_token is None and s.slack_signing_secret is None
    assert s.slack_app_token is None and s.alert_secret is None
    assert s.catalog_path == "./catalog.yml" and s.port == 3000
    assert s.health_interval == timedelta(seconds=60)
    assert Settings(slack_app_token="").slack_app_token is None


@pytest.mark.parametrize(("raw", "expected"), [
    ("15", timedelta(seconds=15)),
    ("2.5", timedelta(seconds=2.5)),
    ("2m", timedelta(minutes=2)),
    ("1h 30m", timedelta(hours=1, minutes=30)),
    (" 30s ", timedelta(seconds=30)),
    ("0", timedelta(seconds=1)),  # raised to the floor
    ("0.2", timedelta(seconds=1)),
])
def test_health_interval_parsing(raw: str, expected: timedelta) -> None:
    assert Settings.from_env({"ROTABOT_HEALTH_INTERVAL": raw}).health_interval == expected


@pytest.mark.parametrize("raw", ["soon", "-5", "5 minutes", "1e400", "9" * 30])
def test_a_malformed_health_interval_is_one_line_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ROTABOT_HEALTH_INTERVAL": raw})
    message = str(caught.value)
    assert message == (
        f"ROTABOT_HEALTH_INTERVAL={raw.strip()!r} is not a duration; use e.g. 30s, 2m or 60")
    assert caught.value.__cause__ is None and caught.value.__context__ is None


@pytest.mark.parametrize(("raw", "expected"), [("8080", 8080), (" 443 ", 443), ("65535", 65535)])
def test_port_parsing(raw: str, expected: int) -> None:
    assert Settings.from_env({"PORT": raw}).port == expected


@pytest.mark.parametrize("raw", ["abc", "0", "65536", "-1", "80.5", "٣٠٠٠"])
def test_a_malformed_port_is_one_line_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PORT": raw})
    message = str(caught.value)
    assert message.startswith(f"PORT={raw!r} is not a port number")
    assert "\n" not in message and "pydantic" not in message
    assert caught.value.__context__ is None


def test_several_problems_share_one_line() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PORT": "abc", "ROTABOT_HEALTH_INTERVAL": "soon"})
    message = str(caught.value)
    assert "\n" not in message
    assert "PORT='abc'" in message and "ROTABOT_HEALTH_INTERVAL='soon'" in message


def test_a_wrong_type_names_the_variable_but_not_the_value() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings(slack_bot_token=12345)  # type: ignore[arg-type]
    assert str(caught.value) == "SLACK_BOT_TOKEN is invalid: Input should be a valid string"
    with pytest.raises(SettingsError, match=r"^nope is not a setting$"):
        Settings(nope="x")  # type: ignore[call-arg]


def test_repr_and_str_hide_secrets_and_the_environment() -> None:
    s = Settings.from_env(FULL)
    for text in (repr(s), str(s)):
        for hidden in (BOT_TOKEN, SIGNING, APP_TOKEN, ALERT, CREDENTIAL, "credentials_env"):
            assert hidden not in text
        assert "port=8080" in text and "postgresql+psycopg://db/rotabot" in text


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(ValueError, match="frozen"):
        s.port = 1


def test_check_for_serve_messages_are_unchanged() -> None:
    def problem(env: dict[str, str]) -> str:
        with pytest.raises(SettingsError) as caught:
            Settings.from_env(env).check_for_serve()
        return str(caught.value)

    assert problem({}).startswith("SLACK_BOT_TOKEN is not set: set it to the app's Bot User")
    assert problem({"SLACK_BOT_TOKEN": "xoxp-1"}).startswith("SLACK_BOT_TOKEN is malformed")
    assert problem({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": "nope"}).startswith(
        "SLACK_APP_TOKEN is malformed")
    assert problem({"SLACK_BOT_TOKEN": BOT_TOKEN}).startswith(
        "SLACK_SIGNING_SECRET is not set")
    assert problem({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": "XYZ"}).startswith(
        "SLACK_SIGNING_SECRET is malformed")
    Settings.from_env({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING}
                      ).check_for_serve()
    Settings.from_env({"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN}
                      ).check_for_serve()
    for env in ({}, {"SLACK_BOT_TOKEN": "xoxp-1"}, {"SLACK_BOT_TOKEN": BOT_TOKEN}):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env(env | {"SLACK_SIGNING_SECRET": "not-hex-SECRET"}).check_for_serve()
        assert "not-hex-SECRET" not in str(caught.value)


def test_a_malformed_library_log_level_is_one_line_naming_the_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"ROTABOT_LIBRARY_LOG_LEVEL": "loud"})
    assert str(caught.value) == (
        "ROTABOT_LIBRARY_LOG_LEVEL='loud' is not a log level; use one of DEBUG, INFO, WARNING, "
        "ERROR, CRITICAL")


@pytest.mark.parametrize("length", [8, 16, 31])
def test_serve_refuses_an_alert_secret_under_32_characters(length: int) -> None:
    short = ("k9Zq" * 8)[:length]
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING,
           "ROTABOT_ALERT_SECRET": short}
    for extra in ({}, {"SLACK_APP_TOKEN": APP_TOKEN}):  # Socket Mode too
        with pytest.raises(SettingsError) as caught:
            Settings.from_env(env | extra).check_for_serve()
        message = str(caught.value)
        assert message.startswith("ROTABOT_ALERT_SECRET is too short: use at least 32 characters")
        assert "\n" not in message and short not in message


def test_serve_accepts_an_alert_secret_of_32_characters_or_none() -> None:
    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING}
    Settings.from_env(env | {"ROTABOT_ALERT_SECRET": "S" * 32}).check_for_serve()
    Settings.from_env(env).check_for_serve()
    Settings.from_env(env | {"ROTABOT_ALERT_SECRET": ""}).check_for_serve()  # unset
