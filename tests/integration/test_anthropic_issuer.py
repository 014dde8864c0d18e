"""The ``anthropic`` issuer against a loopback stand-in of Anthropic's Admin API that checks
every request and builds every answer with the official SDK's types
(tests/harness/anthropic_standin.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from harness.anthropic_standin import (
    KEY_ONE,
    KEYS,
    USAGE,
    AnthropicStandin,
    Fault,
    conform,
    hint_of,
    started,
)

from adapters.anthropic_issuer import USAGE_WINDOW, AnthropicIssuer, hint_matches
from bot import catalog
from bot.domain.credentials import IssuerError
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import PERSON_WRITES, IdentifiesKeys, Issuer

ENV = "ANTHROPIC_ADMIN_KEY"


@pytest.fixture
def standin() -> Iterator[AnthropicStandin]:
    yield from started()


def make(standin: AnthropicStandin, sleeps: list[float] | None = None,
         env: dict[str, str] | None = None, **extra: object) -> AnthropicIssuer:
    config = catalog.AnthropicIssuer.model_validate({
        "kind": "anthropic", "admin_key_env": ENV, "base_url": standin.base_url, **extra})
    return AnthropicIssuer.from_config(
        config, env={ENV: standin.admin_key} if env is None else env,
        sleep=(sleeps if sleeps is not None else []).append)


def stored(value: str) -> SecretMaterial:
    return SecretMaterial({"api_key": value})


def assert_contract_clean(standin: AnthropicStandin) -> None:
    assert standin.violations == []


# --- identify -------------------------------------------------------------------------------


def test_identify_finds_the_key_by_its_partial_hint(standin: AnthropicStandin) -> None:
    old, new = standin.seed_key(), standin.create_key()
    for n in range(3):
        standin.seed_key(name=f"other-{n}")
    issuer = make(standin)
    assert isinstance(issuer, Issuer) and isinstance(issuer, IdentifiesKeys)
    assert (issuer.kind, issuer.keeps_both_valid) == ("anthropic", True)
    assert issuer.kind in PERSON_WRITES
    assert issuer.identify(stored(old.value)) == old.id
    assert issuer.identify(stored(new.value)) == new.id
    # A single field under another name is taken as the key.
    assert issuer.identify(SecretMaterial({"ANTHROPIC_API_KEY": new.value})) == new.id
    assert ("GET", KEYS) in standin.calls()
    assert all(s.query == {"limit": 100} for s in standin.seen)
    assert_contract_clean(standin)


def test_identify_without_a_match_is_none(standin: AnthropicStandin) -> None:
    standin.seed_key()
    issuer = make(standin)
    assert issuer.identify(stored("sk-ant-api03-NOT-A-KEY-OF-THIS-ORGANIZATION-xyzAA")) is None
    assert issuer.identify(SecretMaterial({"api_key": ""})) is None
    assert_contract_clean(standin)


def test_ambiguous_hints_are_none_with_a_warning(
    standin: AnthropicStandin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    value = "sk-ant-api03-SAME" + "x" * 60 + "igAA"
    twin = "sk-ant-api03-SAME" + "y" * 60 + "igAA"  # another key, the same hint
    assert hint_of(value) == hint_of(twin)
    first, second = standin.seed_key(value), standin.seed_key(twin)
    issuer = make(standin)
    assert issuer.identify(stored(value)) is None
    assert "fits the partial hint of 2 API keys" in caplog.text
    assert first.id in caplog.text and second.id in caplog.text
    # When only one of them is active, that one is meant.
    standin.keys[second.id].status = "archived"
    assert issuer.identify(stored(value)) == first.id
    for secret in (value, twin, standin.admin_key):
        assert secret not in caplog.text
    assert_contract_clean(standin)


def test_identify_looks_only_in_the_configured_workspace(standin: AnthropicStandin) -> None:
    here = standin.seed_key(workspace_id="wrkspc_01Here")
    there = standin.seed_key(workspace_id="wrkspc_01There")
    issuer = make(standin, workspace_id="wrkspc_01Here")
    assert issuer.identify(stored(here.value)) == here.id
    assert issuer.identify(stored(there.value)) is None
    assert {s.query.get("workspace_id") for s in standin.seen} == {"wrkspc_01Here"}
    assert_contract_clean(standin)


def test_identify_follows_pages(standin: AnthropicStandin) -> None:
    for n in range(230):
        standin.seed_key(name=f"other-{n}")
    last = standin.seed_key()
    assert make(standin).identify(stored(last.value)) == last.id
    pages = [s for s in standin.seen if s.route == KEYS]
    assert len(pages) == 3
    assert [s.query.get("after_id") is not None for s in pages] == [False, True, True]
    assert_contract_clean(standin)


# --- revoke ---------------------------------------------------------------------------------


def test_revoke_sets_the_key_inactive_and_is_idempotent(standin: AnthropicStandin) -> None:
    old, new = standin.seed_key(), standin.create_key()
    issuer = make(standin)
    issuer.revoke(old.id)
    assert standin.status_of(old.id) == "inactive"
    assert not standin.valid(old.value) and standin.valid(new.value)
    issuer.revoke(old.id)  # already inactive: nothing sent
    issuer.revoke(None)
    posts = [s for s in standin.seen if s.method == "POST"]
    assert [(s.route, s.body) for s in posts] == [(KEY_ONE, {"status": "inactive"})]

    archived = standin.seed_key(status="archived")
    issuer.revoke(archived.id)  # archived is as good as inactive
    assert standin.status_of(archived.id) == "archived"
    issuer.revoke("apikey_01NoSuchKey")  # gone: nothing to do
    assert len([s for s in standin.seen if s.method == "POST"]) == 1
    assert_contract_clean(standin)


def test_revoke_refuses_a_key_of_another_workspace(standin: AnthropicStandin) -> None:
    there = standin.seed_key(workspace_id="wrkspc_01There")
    issuer = make(standin, workspace_id="wrkspc_01Here")
    with pytest.raises(IssuerError, match="belongs to workspace wrkspc_01There"):
        issuer.revoke(there.id)
    assert standin.status_of(there.id) == "active"
    assert_contract_clean(standin)


def test_mint_creates_nothing(standin: AnthropicStandin) -> None:
    minted = make(standin).mint(stored("sk-ant-api03-whatever"))
    assert (minted.material, minted.key_id, minted.previous_key_id) == (None, None, None)
    assert standin.seen == []


# --- usage evidence -------------------------------------------------------------------------


def test_usage_from_the_usage_report(standin: AnthropicStandin) -> None:
    old, other = standin.seed_key(), standin.seed_key()
    issuer = make(standin)

    quiet = issuer.usage(old.id)
    assert quiet.in_use is False
    assert quiet.summary == f"key {old.id} has no usage in the last 15 minutes"

    standin.use(other.id)  # another key's use is not this one's
    assert issuer.usage(old.id).in_use is False

    standin.use(old.id, requests=3, tokens=900)
    busy = issuer.usage(old.id)
    assert busy.in_use is True
    assert f"key {old.id} made 3 requests (900 tokens) in the last 15 minutes" in busy.summary
    assert "one-minute buckets" in busy.details[0]

    standin.forget_usage(old.id)
    standin.use(old.id, at=datetime.now(UTC) - USAGE_WINDOW - timedelta(minutes=3))
    assert issuer.usage(old.id).in_use is False  # used, but before the window

    [request, *_] = [s for s in standin.seen if s.route == USAGE]
    assert request.query["group_by"] == ["api_key_id"]
    assert request.query["api_key_ids"] == [old.id]
    assert request.query["time_bucket_width"] == "1m"
    start = datetime.fromisoformat(request.query["starting_at"])
    end = datetime.fromisoformat(request.query["ending_at"])
    assert timedelta(minutes=15) < end - start <= timedelta(minutes=17)
    assert issuer.usage(None).in_use is None
    assert_contract_clean(standin)


def test_usage_report_behind_the_window_cannot_tell(standin: AnthropicStandin) -> None:
    old = standin.seed_key()
    standin.data_lag = timedelta(minutes=40)
    evidence = make(standin).usage(old.id)
    assert evidence.in_use is None
    assert "current only to" in evidence.summary and "cannot tell" in evidence.summary
    assert_contract_clean(standin)


@pytest.mark.parametrize("status", [400, 403, 404])
def test_usage_report_not_available_cannot_tell(standin: AnthropicStandin, status: int) -> None:
    old = standin.seed_key()
    standin.usage_unavailable = status
    evidence = make(standin).usage(old.id)
    assert evidence.in_use is None
    assert "usage report is not available" in evidence.summary
    assert_contract_clean(standin)


# --- failures -------------------------------------------------------------------------------


def test_429_waits_what_retry_after_says_then_succeeds(standin: AnthropicStandin) -> None:
    old = standin.seed_key()
    sleeps: list[float] = []
    issuer = make(standin, sleeps)
    standin.fail_next(Fault(429, retry_after="7"))
    assert issuer.identify(stored(old.value)) == old.id
    assert sleeps == [7.0]
    standin.fail_next(Fault(429, retry_after="3600"))
    issuer.revoke(old.id)
    assert sleeps == [7.0, 30.0]  # capped
    assert standin.status_of(old.id) == "inactive"
    assert_contract_clean(standin)


def test_429_twice_is_an_error_after_one_retry(
    standin: AnthropicStandin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    old = standin.seed_key()
    sleeps: list[float] = []
    standin.fail_next(Fault(429), Fault(429, retry_after="2"))
    with pytest.raises(IssuerError) as info:
        make(standin, sleeps).revoke(old.id)
    assert sleeps == [1.0]
    message = str(info.value)
    assert "rate limited (HTTP 429 rate_limit_error) after 2 attempts" in message
    assert f"GET {standin.base_url}/v1/organizations/api_keys/{old.id}" in message
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert standin.admin_key not in message + caplog.text
    assert standin.status_of(old.id) == "active"
    assert_contract_clean(standin)


@pytest.mark.parametrize("status", [500, 503, 529])
def test_5xx_is_a_provider_error_without_the_body(
    standin: AnthropicStandin, caplog: pytest.LogCaptureFixture, status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    old = standin.seed_key()
    sleeps: list[float] = []
    standin.fail_next(Fault(status), Fault(status))
    with pytest.raises(IssuerError) as info:
        make(standin, sleeps).identify(stored(old.value))
    message = str(info.value)
    assert f"provider error (HTTP {status} " in message and "retry later" in message
    assert f"identify (GET {standin.base_url}/v1/organizations/api_keys)" in message
    assert sleeps == [1.0]
    assert info.value.__cause__ is None and info.value.__context__ is None
    for secret in (standin.admin_key, old.value):
        assert secret not in message + caplog.text
    assert_contract_clean(standin)


def test_refused_admin_key_names_the_variable_not_the_key(
    standin: AnthropicStandin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    old = standin.seed_key()
    wrong = "sk-ant-admin01-CANARY-wrong-" + "9" * 20
    with pytest.raises(IssuerError) as info:
        make(standin, env={ENV: wrong}).revoke(old.id)
    message = str(info.value)
    assert (f"the admin key in ${ENV} was refused (HTTP 401 authentication_error)"
            in message)
    assert wrong not in message + caplog.text
    # The right key, then refused by a fault whose body quotes it.
    standin.fail_next(Fault(401))
    with pytest.raises(IssuerError, match=rf"\${ENV} was refused") as info:
        make(standin).identify(stored(old.value))
    for secret in (standin.admin_key, old.value):
        assert secret not in str(info.value) + caplog.text
    assert standin.status_of(old.id) == "active"
    assert_contract_clean(standin)


def test_usage_failure_raises_for_the_gate_to_report(standin: AnthropicStandin) -> None:
    old = standin.seed_key()
    standin.fail_next(Fault(503), Fault(503))
    with pytest.raises(IssuerError, match=r"usage \(GET .*/v1/organizations/analytics/usage\)"):
        make(standin).usage(old.id)


def test_no_key_value_reaches_a_log_line(
    standin: AnthropicStandin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    old, new = standin.seed_key(), standin.create_key()
    issuer = make(standin)
    assert issuer.identify(stored(new.value)) == new.id
    assert issuer.identify(stored(old.value)) == old.id
    standin.use(old.id)
    assert issuer.usage(old.id).in_use is True
    issuer.revoke(old.id)
    for secret in (old.value, new.value, standin.admin_key):
        assert secret not in caplog.text
    assert old.id in caplog.text and new.id in caplog.text  # ids are references, logged
    assert standin.admin_key not in repr(issuer)


def test_unset_admin_key_variable_is_named(standin: AnthropicStandin) -> None:
    with pytest.raises(IssuerError, match=rf"{ENV} \(the Admin API key\) is not set"):
        make(standin, env={})


def test_unreachable_api_is_an_error_without_a_chain() -> None:
    config = catalog.AnthropicIssuer.model_validate({
        "kind": "anthropic", "admin_key_env": "K", "base_url": "http://127.0.0.1:9"})
    sleeps: list[float] = []
    issuer = AnthropicIssuer.from_config(config, env={"K": "sk-ant-admin01-x"},
                                         sleep=sleeps.append)
    with pytest.raises(IssuerError, match="could not reach Anthropic") as info:
        issuer.revoke("apikey_01abc")
    assert sleeps == [1.0]  # retried once: a read or an idempotent update
    assert info.value.__context__ is None


# --- the stand-in itself --------------------------------------------------------------------


def test_the_standin_flags_requests_the_sdk_types_refuse(standin: AnthropicStandin) -> None:
    key = standin.seed_key()
    base = standin.base_url
    auth = {"x-api-key": standin.admin_key, "anthropic-version": "2023-06-01"}
    beta = {**auth, "anthropic-beta": "analytics-usage-cost-2026-08-24"}
    with httpx.Client() as http:
        assert http.get(f"{base}{KEYS}", headers=auth,
                        params={"limit": "many"}).status_code == 400
        assert http.get(f"{base}{KEYS}", headers=auth,
                        params={"owner": "me"}).status_code == 400
        assert http.get(f"{base}{KEYS}", headers=auth,
                        params={"limit": "5000"}).status_code == 400
        assert http.post(f"{base}{KEYS}/{key.id}", headers=auth,
                         json={"status": "deleted"}).status_code == 400
        assert http.post(f"{base}{KEYS}/{key.id}", headers=auth,
                         json={"status": "inactive", "colour": "red"}).status_code == 400
        assert http.delete(f"{base}{KEYS}/{key.id}", headers=auth).status_code == 400
        assert http.get(f"{base}{KEYS}").status_code == 400
        assert http.get(f"{base}{USAGE}", headers=auth,
                        params={"starting_at": "2026-11-01T00:00:00Z"}).status_code == 400
        assert http.get(f"{base}{USAGE}", headers=beta, params={
            "starting_at": "2026-11-01T00:00:00Z", "group_by": "api_key_id"}).status_code == 400
        assert http.get(f"{base}{USAGE}", headers=beta, params={
            "starting_at": "2026-11-01T00:00:00Z", "group_by[]": "api_key_id",
            "time_bucket_width": "1m"}).status_code == 400
        assert http.get(f"{base}/v1/organizations/widgets", headers=auth).status_code == 400
    problems = "\n".join(standin.violations)
    assert "query limit: Input should be a valid integer" in problems
    assert "query parameter owner is not one of APIKeyListParams's" in problems
    assert "query limit: 5000 is not within 1 to 1000" in problems
    assert "body status: Input should be 'active', 'archived' or 'inactive'" in problems
    assert "body field colour is not one of APIKeyUpdateParams's" in problems
    assert "DELETE is not a method of /v1/organizations/api_keys/{api_key_id}" in problems
    assert "no anthropic-version header" in problems
    assert "no x-api-key or Authorization: Bearer header" in problems
    assert "no anthropic-beta: analytics-usage-cost-2026-08-24 header" in problems
    assert "query parameter group_by is a list: send it as group_by[]" in problems
    assert "query ending_at is required with time_bucket_width" in problems
    assert "no Admin API route the issuer uses matches /v1/organizations/widgets" in problems
    assert standin.status_of(key.id) == "active"


def test_the_standin_answers_only_what_the_sdk_types_accept() -> None:
    from anthropic.types.organization.api_key import APIKey
    from anthropic.types.shared.error_response import ErrorResponse

    good = {"id": "apikey_01x", "type": "api_key", "name": "n",
            "created_at": "2026-11-01T00:00:00Z", "created_by": {"id": "user_01", "type": "user"},
            "expires_at": None, "partial_key_hint": "sk-ant-api03-R2D...igAA", "principal": None,
            "scope": {"type": "workspace", "workspace_id": "wrkspc_01"}, "status": "active"}
    assert conform(APIKey, good)[1] == []
    assert conform(APIKey, {**good, "status": "revoked"})[1]
    assert conform(APIKey, {**good, "value": "sk-ant-api03-leak"})[1] == [
        "APIKey.value is not a field of APIKey"]
    assert conform(APIKey, {**good, "scope": {"type": "workspace", "workspace_id": "w",
                                              "extra": 1}})[1]
    error = {"type": "error", "error": {"type": "authentication_error", "message": "x"}}
    assert conform(ErrorResponse, error)[1] == []
    assert conform(ErrorResponse, {"error": {"type": "nope", "message": "x"}})[1]


def test_hint_matching() -> None:
    value = "sk-ant-api03-R2D" + "q" * 80 + "igAA"
    assert hint_of(value) == "sk-ant-api03-R2D...igAA"
    assert hint_matches("sk-ant-api03-R2D...igAA", value)
    assert not hint_matches("sk-ant-api03-R2E...igAA", value)
    assert not hint_matches("sk-ant-api03-R2D...igAB", value)
    assert not hint_matches("sk-...AA", value)  # too little shown to conclude
    assert not hint_matches("sk-ant-api03-R2D", "sk-ant-api03-R2D")  # no ellipsis
    assert not hint_matches(None, value)
    assert not hint_matches("sk-ant-api03-R2D...igAA", "sk-ant-api03-R2DigAA"[:18])
