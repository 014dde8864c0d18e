"""Alertmanager as a sender, without a server: its token, its notification alert by alert, the
de-duplication keys, the label names, and the settings and catalog that configure them."""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

import pytest

from bot.catalog.model import Defaults
from bot.domain.alert_intake import (
    DEFAULT_AM_LABELS,
    SchemaError,
    SignatureError,
    alertmanager_source,
    parse_alertmanager_notification,
    parse_body,
    parse_tokens,
    verify_authorization,
)
from bot.runtime.settings import Settings, SettingsError

TOKEN = "t" * 40
OLD = "o" * 40


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def notification(*alerts: dict[str, Any], **top: Any) -> bytes:
    body: dict[str, Any] = {
        "version": "4",
        "groupKey": '{}:{consumer="inference-api"}',
        "status": "firing",
        "receiver": "rotabot",
        "alerts": list(alerts),
        **top,
    }
    return json.dumps({k: v for k, v in body.items() if v is not None}).encode()


def am_alert(fingerprint: str = "0123456789abcdef", status: str = "firing",
             starts: str = "2026-11-25T08:59:00Z", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "ConsumerAuthFailing", "consumer": "inference-api", **labels},
        "annotations": {"summary": "401 from the model provider"},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


# --- the token ------------------------------------------------------------------------------


def test_tokens_are_split_on_commas_and_whitespace_without_repeats() -> None:
    assert parse_tokens(f" {TOKEN}, {OLD}\n{TOKEN} ") == (TOKEN, OLD)
    assert parse_tokens("") == () and parse_tokens(None) == ()


def test_bearer_and_basic_carry_the_token_and_any_configured_one_is_accepted() -> None:
    assert verify_authorization([TOKEN], f"Bearer {TOKEN}") == TOKEN
    assert verify_authorization([OLD, TOKEN], f"bearer  {TOKEN} ") == TOKEN
    assert verify_authorization([OLD, TOKEN], f"Bearer {OLD}") == OLD  # during a rotation
    assert verify_authorization([TOKEN], basic("alertmanager", TOKEN)) == TOKEN
    assert verify_authorization([TOKEN], basic("", TOKEN)) == TOKEN


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (None, "missing Authorization"),
        ("   ", "missing Authorization"),
        (f"Token {TOKEN}", "Bearer or Basic"),
        ("Bearer", "no token"),
        ("Basic %%%", "base64"),
        ("Basic " + base64.b64encode(TOKEN.encode()).decode(), "user:password"),
        ("Bearer " + "x" * 40, "does not carry a token"),
        ("Bearer " + TOKEN[:-1], "does not carry a token"),
        (basic("alertmanager", "nope"), "does not carry a token"),
    ],
)
def test_a_wrong_authorization_is_refused_without_echoing_it(header: str | None,
                                                             says: str) -> None:
    with pytest.raises(SignatureError) as err:
        verify_authorization([TOKEN], header)
    assert says in str(err.value)
    assert "x" * 10 not in str(err.value) and "nope" not in str(err.value)


def test_no_configured_token_accepts_nothing() -> None:
    with pytest.raises(SignatureError):
        verify_authorization([], f"Bearer {TOKEN}")
    with pytest.raises(SignatureError):
        verify_authorization([""], "Bearer ")


# --- the notification -----------------------------------------------------------------------


def test_a_notification_is_taken_alert_by_alert_firing_and_resolved() -> None:
    note = parse_alertmanager_notification(notification(
        am_alert("aaaa000000000001", secret="model-api-key", lane="prod", status_code="401"),
        am_alert("AAAA000000000002", status="resolved", consumer="retriever"),
    ))
    assert note.group_key == '{}:{consumer="inference-api"}' and note.receiver == "rotabot"
    first, second = note.alerts
    assert first.firing and not second.firing
    assert first.report.consumer == "inference-api" and first.report.secret == "model-api-key"
    assert first.report.lane == "prod" and first.report.status_code == 401
    assert first.report.message == "ConsumerAuthFailing 401 from the model provider"
    assert first.report.source == "alertmanager/rotabot#aaaa000000000001"
    assert second.fingerprint == "aaaa000000000002"  # lower case: one source per alert
    assert second.report.consumer == "retriever"
    assert first.key.startswith("am:") and first.key != second.key


def test_the_key_is_the_group_the_fingerprint_the_status_and_the_start() -> None:
    def key(alert: dict[str, Any], **top: Any) -> str:
        return parse_alertmanager_notification(notification(alert, **top)).alerts[0].key

    base = key(am_alert())
    assert key(am_alert()) == base  # Alertmanager's retry or repeat: a duplicate
    assert key(am_alert(), status="resolved") == base  # the group's status is not the alert's
    assert key(am_alert(starts="2026-11-25T10:00:00Z")) != base  # firing again
    assert key(am_alert(status="resolved")) != base  # resolving
    assert key(am_alert(fingerprint="fedcba9876543210")) != base
    assert key(am_alert(), groupKey='{}:{consumer="other"}') != base
    assert "inference-api" not in base  # a digest: no label value in the stored key


def test_labels_can_be_renamed_by_the_catalog() -> None:
    labels = {**DEFAULT_AM_LABELS, "consumer": "service", "secret": "credential",
              "lane": "env"}
    alert = am_alert(service="embedder", credential="model-api-key", env="dev")
    (taken,) = parse_alertmanager_notification(notification(alert), labels).alerts
    assert (taken.report.consumer, taken.report.secret, taken.report.lane) == (
        "embedder", "model-api-key", "dev")
    without = am_alert()
    del without["labels"]["consumer"]
    with pytest.raises(SchemaError) as err:
        parse_alertmanager_notification(notification(without), labels)
    assert err.value.field == "alerts[0].labels.service"
    bad = am_alert(service="no spaces allowed")
    with pytest.raises(SchemaError) as err:
        parse_alertmanager_notification(notification(bad), labels)
    assert err.value.field == "alerts[0].labels.service"
    # The signed path (a connector forwarding Alertmanager's payload) maps them the same way.
    (report,) = parse_body(notification(alert), labels).reports
    assert report.consumer == "embedder"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (json.dumps({"consumer": "inference-api"}).encode(), "body"),
        (notification(am_alert(), version="3"), "version"),
        (notification(am_alert(), groupKey=""), "groupKey"),
        (notification({**am_alert(), "fingerprint": None}), "alerts[0].fingerprint"),
        (notification({**am_alert(), "fingerprint": "not-hex!"}), "alerts[0].fingerprint"),
        (notification({**am_alert(), "status": "pending"}), "alerts[0].status"),
        (notification({**am_alert(), "labels": {"alertname": "x"}}), "alerts[0].labels.consumer"),
    ],
)
def test_what_is_not_a_version_4_notification_is_refused(body: bytes, field: str) -> None:
    with pytest.raises(SchemaError) as err:
        parse_alertmanager_notification(body)
    assert err.value.field == field


def test_the_source_always_keeps_the_whole_fingerprint() -> None:
    source = alertmanager_source("r" * 200, "ABCDEF0123456789")
    assert len(source) == 100 and source.endswith("#abcdef0123456789")
    assert alertmanager_source(None, "ab") == "alertmanager#ab"


# --- settings and catalog -------------------------------------------------------------------


def serve_env(**extra: str) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": "xoxb-1-2", "SLACK_SIGNING_SECRET": "0" * 32, **extra}


def test_settings_read_several_tokens_and_never_show_them() -> None:
    a, b = secrets.token_hex(20), secrets.token_hex(20)
    settings = Settings.from_env(serve_env(ROTABOT_ALERTMANAGER_TOKEN=f"{a},{b}"))
    assert settings.alertmanager_tokens == (a, b)
    assert a not in repr(settings)
    settings.check_for_serve()
    assert Settings.from_env(serve_env()).alertmanager_tokens == ()


def test_serve_refuses_a_short_alertmanager_token() -> None:
    settings = Settings.from_env(
        serve_env(ROTABOT_ALERTMANAGER_TOKEN=f"{secrets.token_hex(20)} short-one"))
    with pytest.raises(SettingsError) as err:
        settings.check_for_serve()
    assert "ROTABOT_ALERTMANAGER_TOKEN" in str(err.value) and "short-one" not in str(err.value)


def test_the_catalog_may_rename_the_labels_and_names_a_typo() -> None:
    defaults = Defaults.model_validate(
        {"channel": "C0", "alertmanager": {"labels": {"consumer": "service"}}})
    assert dict(defaults.alertmanager.labels) == {"consumer": "service"}
    assert dict(Defaults.model_validate({"channel": "C0"}).alertmanager.labels) == {}
    with pytest.raises(ValueError):
        Defaults.model_validate({"channel": "C0", "alertmanager": {"labels": {"owner": "x"}}})
    with pytest.raises(ValueError):
        Defaults.model_validate(
            {"channel": "C0", "alertmanager": {"labels": {"consumer": "bad-label"}}})
