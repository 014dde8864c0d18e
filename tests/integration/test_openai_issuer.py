"""The ``openai`` issuer against a loopback stand-in of OpenAI's organization admin API that
checks every request against OpenAI's published OpenAPI description
(tests/harness/openai_standin.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from harness.openai_standin import Fault, OpenAIStandin, description, started

from adapters.openai_issuer import USAGE_WINDOW, OpenAIIssuer, redaction_matches
from bot import catalog
from bot.domain.credentials import IssuerError
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer

SECRET = "model-api-key"
A, B = f"rotabot-{SECRET}-a", f"rotabot-{SECRET}-b"
SA = "/organization/projects/{project_id}/service_accounts"
SA_ONE = SA + "/{service_account_id}"
SA_KEYS = SA_ONE + "/api_keys"
KEYS = "/organization/projects/{project_id}/api_keys"
KEY_ONE = KEYS + "/{api_key_id}"


@pytest.fixture
def standin() -> Iterator[OpenAIStandin]:
    yield from started()


def project(standin: OpenAIStandin) -> str:
    return next(iter(standin.projects))


def make(standin: OpenAIStandin, sleeps: list[float] | None = None,
         env: dict[str, str] | None = None, **extra: object) -> OpenAIIssuer:
    config = catalog.OpenAIIssuer.model_validate({
        "kind": "openai", "admin_key_env": "OPENAI_ADMIN_KEY", "project_id": project(standin),
        "base_url": standin.base_url, **extra})
    return OpenAIIssuer.from_config(
        config, env={"OPENAI_ADMIN_KEY": standin.admin_key} if env is None else env,
        secret=SECRET, sleep=(sleeps if sleeps is not None else []).append)


def value(material: SecretMaterial | None) -> str:
    assert material is not None
    return material.reveal()["api_key"]


def assert_spec_clean(standin: OpenAIStandin) -> None:
    assert standin.violations == []
    assert standin.response_violations == []
    # The description says a service account's key cannot be deleted by itself.
    assert ("DELETE", KEY_ONE) not in standin.calls()


# --- minting and revoking ------------------------------------------------------------------


def test_first_mint_creates_account_a_and_returns_only_the_key(standin: OpenAIStandin) -> None:
    issuer = make(standin)
    assert isinstance(issuer, Issuer)
    assert (issuer.kind, issuer.keeps_both_valid) == ("openai", True)

    minted = issuer.mint(None)

    account = standin.account_named(A)
    assert account is not None and standin.account_named(B) is None
    [key] = standin.keys_of(account.id)
    assert minted.key_id == key.id
    assert minted.previous_key_id is None
    assert minted.material is not None and minted.material.reveal() == {"api_key": key.value}
    assert standin.valid(value(minted.material))
    assert key.value not in repr(minted) and standin.admin_key not in repr(issuer)
    assert_spec_clean(standin)


def test_mint_twice_alternates_accounts_and_both_keys_stay_valid(
    standin: OpenAIStandin,
) -> None:
    issuer = make(standin)
    first = issuer.mint(None)
    second = issuer.mint(first.material)

    a, b = standin.account_named(A), standin.account_named(B)
    assert a is not None and b is not None
    assert [k.id for k in standin.keys_of(b.id)] == [second.key_id]
    assert second.previous_key_id == first.key_id
    assert standin.valid(value(first.material)) and standin.valid(value(second.material))

    issuer.revoke(second.previous_key_id)
    assert standin.account_named(A) is None  # revoke deleted a, and its key with it
    assert not standin.valid(value(first.material))

    third = issuer.mint(second.material)  # back to a, created afresh
    a_again = standin.account_named(A)
    assert a_again is not None and a_again.id != a.id
    assert (third.key_id, third.previous_key_id) == (standin.keys_of(a_again.id)[0].id,
                                                     second.key_id)
    assert_spec_clean(standin)


def test_a_hand_made_current_key_has_no_previous_id(standin: OpenAIStandin) -> None:
    by_hand = standin.seed_user_key(project(standin))
    minted = make(standin).mint(SecretMaterial({"api_key": by_hand.value}))
    assert minted.previous_key_id is None  # rotabot will not revoke a user's key
    assert standin.account_named(A) is not None
    with pytest.raises(IssuerError, match="belongs to a user"):
        make(standin).revoke(by_hand.id)
    assert standin.valid(by_hand.value)
    assert_spec_clean(standin)


def test_an_existing_account_is_found_from_the_stored_value(standin: OpenAIStandin) -> None:
    # b holds the current key (seeded as a person's earlier setup would be): the new one goes
    # to a, and the previous key id is b's key.
    _, current = standin.seed_service_account(project(standin), B)
    minted = make(standin).mint(SecretMaterial({"api_key": current.value}))
    assert minted.previous_key_id == current.id
    a = standin.account_named(A)
    assert a is not None and [k.id for k in standin.keys_of(a.id)] == [minted.key_id]
    assert_spec_clean(standin)


def test_a_stale_account_left_by_a_rollback_is_recreated(standin: OpenAIStandin) -> None:
    issuer = make(standin)
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    # Rolled back without revoking the new key: the store holds `first` again, b still exists.
    stale = standin.account_named(B)
    assert stale is not None
    again = issuer.mint(first.material)
    fresh = standin.account_named(B)
    assert fresh is not None and fresh.id != stale.id
    assert not standin.valid(value(second.material))
    assert again.previous_key_id == first.key_id
    assert_spec_clean(standin)


def test_a_stale_account_in_recent_use_is_not_deleted(standin: OpenAIStandin) -> None:
    issuer = make(standin)
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    assert second.key_id is not None
    standin.use(second.key_id)  # a consumer moved to b before the rollback
    with pytest.raises(IssuerError, match=f"{B} .* is left from an earlier rotation") as info:
        issuer.mint(first.material)
    assert "last used at" in str(info.value)
    assert standin.valid(value(second.material))
    assert_spec_clean(standin)


def test_revoke_is_idempotent_and_refuses_foreign_accounts(standin: OpenAIStandin) -> None:
    issuer = make(standin)
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    issuer.revoke(first.key_id)
    issuer.revoke(first.key_id)  # the key is gone: nothing to do
    issuer.revoke(None)
    assert standin.account_named(A) is None and standin.account_named(B) is not None
    assert standin.valid(value(second.material))

    _, foreign = standin.seed_service_account(project(standin), "billing-exporter")
    with pytest.raises(IssuerError, match="'billing-exporter'"):
        issuer.revoke(foreign.id)
    assert standin.valid(foreign.value)
    deletes = [c for c in standin.calls() if c[0] == "DELETE"]
    assert deletes == [("DELETE", SA_ONE)]  # once, and never a key
    assert_spec_clean(standin)


def test_revoke_of_an_account_deleted_meanwhile_is_success(standin: OpenAIStandin) -> None:
    issuer = make(standin)
    first = issuer.mint(None)
    issuer.mint(first.material)
    a = standin.account_named(A)
    assert a is not None
    # The key is still listed, but its account went away in between (a racing replica).
    original = standin.answer

    def account_gone_first(checked, method):  # type: ignore[no-untyped-def]
        if method == "DELETE" and a.id in standin.accounts:
            del standin.accounts[a.id]
        return original(checked, method)

    standin.answer = account_gone_first  # type: ignore[method-assign]
    issuer.revoke(first.key_id)
    assert [s.status for s in standin.seen if s.method == "DELETE"] == [404]
    assert_spec_clean(standin)


def test_a_key_is_asked_for_when_the_account_comes_without_one(
    standin: OpenAIStandin,
) -> None:
    standin.key_on_create = False
    minted = make(standin).mint(None)
    account = standin.account_named(A)
    assert account is not None
    assert [k.id for k in standin.keys_of(account.id)] == [minted.key_id]
    assert ("POST", SA_KEYS) in standin.calls()
    assert_spec_clean(standin)


def test_lists_are_paged(standin: OpenAIStandin) -> None:
    for n in range(130):
        standin.seed_service_account(project(standin), f"other-{n}")
    _, current = standin.seed_service_account(project(standin), A)
    minted = make(standin).mint(SecretMaterial({"api_key": current.value}))
    assert minted.previous_key_id == current.id
    pages = [s for s in standin.seen if s.template == SA]
    assert [s.query.get("after") is not None for s in pages[:2]] == [False, True]
    assert all(s.query["limit"] == 100 for s in pages if s.method == "GET")
    assert_spec_clean(standin)


# --- usage evidence ------------------------------------------------------------------------


def test_usage_from_last_used_at(standin: OpenAIStandin) -> None:
    issuer = make(standin)
    minted = issuer.mint(None)
    assert minted.key_id is not None

    never = issuer.usage(minted.key_id)
    assert never.in_use is False and "never been used" in never.summary

    standin.use(minted.key_id)
    recent = issuer.usage(minted.key_id)
    assert recent.in_use is True
    assert "last used at" in recent.summary and "within the last 15 minutes" in recent.summary
    assert A in recent.details[0]

    old = time.time() - USAGE_WINDOW.total_seconds() - 120
    standin.use(minted.key_id, at=old)
    stale = issuer.usage(minted.key_id)
    assert stale.in_use is False
    stamp = datetime.fromtimestamp(int(old), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f"last used at {stamp}" in stale.summary and "not in the last 15 minutes" in (
        stale.summary)

    issuer.revoke(minted.key_id)
    gone = issuer.usage(minted.key_id)
    assert gone.in_use is False and "no longer exists" in gone.summary
    assert issuer.usage(None).in_use is None
    assert_spec_clean(standin)


# --- failures ------------------------------------------------------------------------------


def test_429_waits_what_retry_after_says_then_succeeds(standin: OpenAIStandin) -> None:
    sleeps: list[float] = []
    issuer = make(standin, sleeps)
    standin.fail_next(Fault(429, retry_after="7"))
    minted = issuer.mint(None)
    assert sleeps == [7.0]
    assert minted.key_id is not None
    standin.fail_next(Fault(429, retry_after="3600"))
    issuer.usage(minted.key_id)
    assert sleeps == [7.0, 30.0]  # capped
    assert_spec_clean(standin)


def test_429_twice_is_an_error_after_one_retry(
    standin: OpenAIStandin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sleeps: list[float] = []
    standin.fail_next(Fault(429), Fault(429, retry_after="2"))
    with pytest.raises(IssuerError) as info:
        make(standin, sleeps).mint(None)
    assert sleeps == [1.0]
    assert "rate limited (HTTP 429 rate_limit_exceeded) after 2 attempts" in str(info.value)
    assert standin.admin_key not in str(info.value) + caplog.text
    assert standin.accounts == {}


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_a_provider_error_without_the_body(
    standin: OpenAIStandin, caplog: pytest.LogCaptureFixture, status: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer = make(standin)
    standin.fail_next(Fault(status))
    with pytest.raises(IssuerError) as info:
        issuer.mint(None)
    message = str(info.value)
    assert f"provider error HTTP {status}, retry later" in message
    assert "GET http://127.0.0.1:" in message and "/service_accounts" in message
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert standin.admin_key not in message + caplog.text
    assert_spec_clean(standin)


def test_refused_admin_key_names_the_variable_not_the_key(
    standin: OpenAIStandin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "sk-admin-CANARY-wrong-" + "9" * 20
    issuer = make(standin, env={"OPENAI_ADMIN_KEY": wrong})
    with pytest.raises(IssuerError) as info:
        issuer.mint(None)
    message = str(info.value)
    assert "the admin key in $OPENAI_ADMIN_KEY was refused (HTTP 401 invalid_api_key)" in message
    assert wrong not in message + caplog.text
    # The right key, then refused by a fault whose body quotes it.
    standin.fail_next(Fault(401))
    with pytest.raises(IssuerError, match=r"\$OPENAI_ADMIN_KEY was refused") as info:
        make(standin).usage("key_x")
    assert standin.admin_key not in str(info.value) + caplog.text
    assert_spec_clean(standin)


def test_minted_key_never_reaches_a_log_line(
    standin: OpenAIStandin, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    issuer = make(standin)
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    issuer.revoke(second.previous_key_id)
    for secret in (value(first.material), value(second.material), standin.admin_key):
        assert secret not in caplog.text
    assert str(second.key_id) in caplog.text  # ids are references, logged


def test_unset_admin_key_variable_is_named(standin: OpenAIStandin) -> None:
    with pytest.raises(IssuerError, match=r"OPENAI_ADMIN_KEY .* is not set"):
        make(standin, env={})


def test_unreachable_api_is_an_error_without_a_chain() -> None:
    config = catalog.OpenAIIssuer.model_validate({
        "kind": "openai", "admin_key_env": "K", "project_id": "proj_abc",
        "base_url": "http://127.0.0.1:9/v1"})
    issuer = OpenAIIssuer.from_config(config, env={"K": "sk-admin-x"}, secret=SECRET)
    with pytest.raises(IssuerError, match="could not reach OpenAI") as info:
        issuer.revoke("key_abc")
    assert info.value.__context__ is None


# --- the stand-in itself -------------------------------------------------------------------


def test_the_standin_flags_requests_the_description_refuses(standin: OpenAIStandin) -> None:
    import httpx

    base, p = standin.base_url, project(standin)
    auth = {"Authorization": f"Bearer {standin.admin_key}"}
    with httpx.Client() as http:
        assert http.post(f"{base}/organization/projects/{p}/service_accounts", headers=auth,
                         json={"nom": "x"}).status_code == 400
        assert http.get(f"{base}/organization/projects/{p}/api_keys", headers=auth,
                        params={"limit": "many"}).status_code == 400
        assert http.get(f"{base}/organization/projects/{p}/api_keys", headers=auth,
                        params={"owner": "me"}).status_code == 400
        assert http.get(f"{base}/organization/projects/{p}/api_keys").status_code == 400
        assert http.put(f"{base}/organization/projects/{p}", headers=auth).status_code == 400
        assert http.get(f"{base}/organization/widgets", headers=auth).status_code == 400
    problems = "\n".join(standin.violations)
    assert "request body (root): 'name' is a required property" in problems
    assert "query parameter limit: (root): 'many' is not of type 'integer'" in problems
    assert "query parameter owner is not in the description" in problems
    assert "no Authorization: Bearer header" in problems
    assert "PUT is not an operation of /organization/projects/{project_id}" in problems
    assert "no path template in the description matches /organization/widgets" in problems
    assert standin.response_violations == []


def test_the_standin_refuses_to_delete_a_service_account_key(standin: OpenAIStandin) -> None:
    import httpx

    _, key = standin.seed_service_account(project(standin), A)
    url = f"{standin.base_url}/organization/projects/{project(standin)}/api_keys/{key.id}"
    answer = httpx.delete(url, headers={"Authorization": f"Bearer {standin.admin_key}"})
    assert answer.status_code == 400
    assert standin.valid(key.value)
    assert standin.violations == [] and standin.response_violations == []


def test_description_response_schemas_reject_a_wrong_answer() -> None:
    spec = description()
    op = next(o for o in spec.operations if (o.method, o.template) == ("GET", KEY_ONE))
    assert spec.check_response(op, 200, {"object": "organization.project.api_key"})
    assert spec.check_response(None, 404, {"error": {"message": "x", "type": "t", "param": None,
                                                     "code": None}}) == []


def test_redaction_matching() -> None:
    assert redaction_matches("sk-abc...xyz", "sk-abc0123456789xyz")
    assert not redaction_matches("sk-abc...xyz", "sk-abd0123456789xyz")
    assert redaction_matches("sk-...wxyz", "sk-proj-000wxyz")
    assert not redaction_matches("sk-...", "sk-a123")  # too little shown to conclude
    assert not redaction_matches("sk-abcdef", "sk-abcdef")  # no ellipsis: not a redaction
    assert redaction_matches("sk-p****abcd", "sk-p0000abcd")


def test_usage_window_is_fifteen_minutes() -> None:
    assert timedelta(minutes=15) == USAGE_WINDOW
