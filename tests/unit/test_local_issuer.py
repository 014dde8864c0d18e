"""The local issuer mints random values under random key ids and remembers revocations."""

from __future__ import annotations

import pytest

from adapters.local_issuer import LocalIssuer
from bot.domain.credentials import IssuerError
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer


def test_is_an_issuer_that_keeps_both_valid() -> None:
    issuer = LocalIssuer()
    assert isinstance(issuer, Issuer)
    assert issuer.kind == "local"
    assert issuer.keeps_both_valid is True


def test_mints_the_configured_fields_with_fresh_random_values() -> None:
    issuer = LocalIssuer(fields=("username", "password"))

    first = issuer.mint(None).material
    second = issuer.mint(first).material

    assert first is not None and second is not None
    assert first.field_names() == ["password", "username"]
    a, b = first.reveal(), second.reveal()
    assert a["password"] != b["password"] and a["username"] != b["username"]
    assert a["password"] != a["username"]
    # token_urlsafe(32): 32 random bytes, 43 URL-safe characters.
    assert all(len(value) == 43 for value in (*a.values(), *b.values()))


def test_default_field_is_api_key() -> None:
    minted = LocalIssuer().mint(None).material
    assert minted is not None and minted.field_names() == ["api_key"]


def test_key_ids_are_short_unique_and_not_derived_from_the_value() -> None:
    issuer = LocalIssuer()
    minted = [issuer.mint(None) for _ in range(50)]

    key_ids = [m.key_id for m in minted]
    assert len(set(key_ids)) == 50
    for m in minted:
        assert m.key_id is not None and m.material is not None
        assert m.key_id.startswith("k-") and len(m.key_id) == 10
        int(m.key_id[2:], 16)
        value = m.material.reveal()["api_key"]
        assert m.key_id[2:] not in value
        assert m.key_id[2:] not in value.encode().hex()


def test_mint_names_the_key_it_replaces() -> None:
    issuer = LocalIssuer()
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    assert first.previous_key_id is None
    assert second.previous_key_id == first.key_id


def test_revoke_records_the_key_id_and_is_idempotent() -> None:
    issuer = LocalIssuer()
    old, new = issuer.mint(None), issuer.mint(None)
    assert old.key_id is not None and new.key_id is not None

    issuer.revoke(old.key_id)
    issuer.revoke(old.key_id)
    issuer.revoke(None)

    assert issuer.revoked == {old.key_id}
    assert issuer.is_revoked(old.key_id)
    assert not issuer.is_revoked(new.key_id)


def test_usage_cannot_tell() -> None:
    evidence = LocalIssuer().usage("k-00000000")
    assert evidence.in_use is None
    assert evidence.summary


def test_minted_values_appear_in_no_text() -> None:
    issuer = LocalIssuer(fields=("username", "password"))
    minted = issuer.mint(SecretMaterial({"password": "CANARY-current-value"}))
    assert minted.material is not None
    values = list(minted.material.reveal().values())

    texts = [repr(minted), str(minted), f"{minted}", repr(minted.material), repr(issuer),
             str(issuer.usage(minted.key_id))]
    assert [t for t in texts for value in [*values, "CANARY-current-value"] if value in t] == []


@pytest.mark.parametrize("fields", [(), ("a", "a")])
def test_bad_field_lists_are_refused(fields: tuple[str, ...]) -> None:
    with pytest.raises(IssuerError):
        LocalIssuer(fields=fields)
