"""The webhook-hmac issuer: the secret, the list receivers accept (newest first, at most one
previous) and a random key id; after revocation the list is trimmed to the newest, once."""

from __future__ import annotations

import base64
import json

import pytest

from adapters.webhook_hmac import USAGE_UNKNOWN, WebhookHmacIssuer
from bot.domain.credentials import IssuerError, Minted
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer, TrimsAfterRevoke


def fields(minted: Minted) -> dict[str, str]:
    assert minted.material is not None
    return minted.material.reveal()


def listed(material: SecretMaterial) -> list[str]:
    value = json.loads(material.reveal()["secrets"])
    assert isinstance(value, list)
    return value


def test_is_an_issuer_that_trims_after_revoke_and_keeps_both_valid() -> None:
    issuer = WebhookHmacIssuer()
    assert isinstance(issuer, Issuer) and isinstance(issuer, TrimsAfterRevoke)
    assert issuer.kind == "webhook-hmac"
    assert issuer.keeps_both_valid is True


def test_first_mint_has_the_documented_shape() -> None:
    minted = WebhookHmacIssuer().mint(None)
    f = fields(minted)
    assert sorted(f) == ["key_id", "secret", "secrets"]
    assert all(isinstance(v, str) for v in f.values())
    assert f["secret"].startswith("whsec_")
    # 32 random bytes as URL-safe base64 without padding: 43 characters.
    body = f["secret"].removeprefix("whsec_")
    assert len(body) == 43 and len(base64.urlsafe_b64decode(body + "=")) == 32
    assert json.loads(f["secrets"]) == [f["secret"]]
    assert minted.key_id == f["key_id"] and minted.previous_key_id is None


def test_prefix_and_bytes_are_configurable() -> None:
    f = fields(WebhookHmacIssuer(prefix="hook-", nbytes=64).mint(None))
    body = f["secret"].removeprefix("hook-")
    assert f["secret"].startswith("hook-")
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 64
    assert len(fields(WebhookHmacIssuer(prefix="").mint(None))["secret"]) == 43


def test_mint_lists_new_then_old_and_names_the_previous_id() -> None:
    issuer = WebhookHmacIssuer()
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    a, b = fields(first), fields(second)
    assert b["secret"] != a["secret"]
    assert json.loads(b["secrets"]) == [b["secret"], a["secret"]]
    assert second.key_id == b["key_id"] != a["key_id"]
    assert second.previous_key_id == a["key_id"]


def test_only_the_one_before_is_kept() -> None:
    issuer = WebhookHmacIssuer()
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    third = issuer.mint(second.material)  # e.g. after a rollback of the second, or no trim
    assert json.loads(fields(third)["secrets"]) == [fields(third)["secret"],
                                                   fields(second)["secret"]]
    assert fields(first)["secret"] not in fields(third)["secrets"]


def test_secret_and_key_id_from_a_person_written_current_credential() -> None:
    # Taking over: the store holds only the secret senders use today, without a key id.
    minted = WebhookHmacIssuer().mint(SecretMaterial({"secret": "whsec_before-rotabot"}))
    assert json.loads(fields(minted)["secrets"])[1] == "whsec_before-rotabot"
    assert minted.previous_key_id is None


def test_a_current_credential_without_secret_is_refused_without_values() -> None:
    with pytest.raises(IssuerError) as caught:
        WebhookHmacIssuer().mint(SecretMaterial({"api_key": "CANARY-wrong-field"}))
    assert "no `secret` field" in str(caught.value) and "api_key" in str(caught.value)
    assert "CANARY" not in str(caught.value)


def test_key_ids_are_random_and_not_derived_from_the_value() -> None:
    issuer = WebhookHmacIssuer()
    minted = [issuer.mint(None) for _ in range(50)]
    ids = [m.key_id for m in minted]
    assert len(set(ids)) == 50
    for m in minted:
        assert m.key_id is not None and m.key_id.startswith("wh_") and len(m.key_id) == 11
        int(m.key_id[3:], 16)
        value = fields(m)["secret"]
        assert m.key_id[3:] not in value
        assert m.key_id[3:] not in value.encode().hex()
        assert m.key_id[3:] not in base64.urlsafe_b64decode(
            value.removeprefix("whsec_") + "=").hex()
    # The same value minted into twice gives different ids: ids belong to mints, not values.
    current = SecretMaterial({"secret": "whsec_same"})
    assert issuer.mint(current).key_id != issuer.mint(current).key_id


def test_after_revoke_keeps_only_the_newest_and_is_idempotent() -> None:
    issuer = WebhookHmacIssuer()
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    assert second.material is not None

    trimmed = issuer.after_revoke(second.material)

    assert trimmed is not None
    t = trimmed.reveal()
    assert listed(trimmed) == [fields(second)["secret"]]
    assert (t["secret"], t["key_id"]) == (fields(second)["secret"], fields(second)["key_id"])
    assert issuer.after_revoke(trimmed) is None
    assert issuer.after_revoke(first.material or SecretMaterial({})) is None


def test_after_revoke_without_a_list_has_nothing_to_drop() -> None:
    assert WebhookHmacIssuer().after_revoke(SecretMaterial({"secret": "whsec_x"})) is None


@pytest.mark.parametrize("bad", ["not json CANARY-list", '{"a": "CANARY-list"}', '[1, 2]'])
def test_after_revoke_refuses_a_broken_list_without_quoting_it(bad: str) -> None:
    with pytest.raises(IssuerError) as caught:
        WebhookHmacIssuer().after_revoke(SecretMaterial({"secret": "whsec_x", "secrets": bad}))
    assert "CANARY" not in str(caught.value) and caught.value.__cause__ is None
    assert caught.value.__context__ is None or "CANARY" not in str(caught.value.__context__)


def test_revoke_is_a_no_op_and_usage_cannot_tell() -> None:
    issuer = WebhookHmacIssuer()
    issuer.revoke("wh_00000000")
    issuer.revoke(None)
    evidence = issuer.usage("wh_00000000")
    assert evidence.in_use is None and evidence.summary == USAGE_UNKNOWN
    assert "cannot see which secret" in evidence.summary


@pytest.mark.parametrize(("prefix", "nbytes"), [("has space", 32), ("x" * 17, 32),
                                                ("whsec_", 8), ("whsec_", 129)])
def test_bad_settings_are_refused(prefix: str, nbytes: int) -> None:
    with pytest.raises(IssuerError):
        WebhookHmacIssuer(prefix=prefix, nbytes=nbytes)


def test_no_value_appears_in_any_text() -> None:
    issuer = WebhookHmacIssuer()
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    assert second.material is not None
    trimmed = issuer.after_revoke(second.material)
    assert trimmed is not None
    values = [fields(first)["secret"], fields(second)["secret"]]
    values += [v.removeprefix("whsec_") for v in values]

    texts = [repr(first), str(second), f"{second}", repr(second.material),
             str(second.material), f"{second.material}", repr(trimmed), str(trimmed),
             f"{trimmed:>80}", repr(issuer), str(issuer.usage(second.key_id))]
    assert [t for t in texts for value in values if value in t] == []
    assert fields(second)["key_id"] not in repr(second.material)
