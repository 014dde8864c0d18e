"""The manual issuer mints nothing, revokes nothing, and notices a version a person wrote."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.manual_issuer import ManualIssuer, find_new_version
from bot.domain.credentials import StoreState, VersionInfo, VersionLabel
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer

CURRENT = frozenset({VersionLabel.CURRENT})
PENDING = frozenset({VersionLabel.PENDING})
PREVIOUS = frozenset({VersionLabel.PREVIOUS})
REVOKED = frozenset({VersionLabel.REVOKED})


def v(version: int, labels: frozenset[VersionLabel] = frozenset(), *, destroyed: bool = False,
      deleted: bool = False) -> VersionInfo:
    return VersionInfo(str(version), labels, datetime(2024, 5, 1, tzinfo=UTC), destroyed, deleted)


def state(*versions: VersionInfo) -> StoreState:
    def holder(label: VersionLabel) -> str | None:
        return next((x.version for x in versions if label in x.labels), None)

    return StoreState(versions=versions, current=holder(VersionLabel.CURRENT),
                      pending=holder(VersionLabel.PENDING), previous=holder(VersionLabel.PREVIOUS))


def test_is_an_issuer_named_manual() -> None:
    issuer = ManualIssuer()
    assert isinstance(issuer, Issuer)
    assert issuer.kind == "manual"


@pytest.mark.parametrize("keeps_both_valid", [True, False])
def test_keeps_both_valid_is_what_the_catalog_says(keeps_both_valid: bool) -> None:
    assert ManualIssuer(keeps_both_valid=keeps_both_valid).keeps_both_valid is keeps_both_valid


def test_keeps_both_valid_by_default() -> None:
    assert ManualIssuer().keeps_both_valid is True


def test_mint_returns_no_material_and_no_key_id_even_given_the_current_value() -> None:
    value = "CANARY-manual-mint"
    minted = ManualIssuer().mint(SecretMaterial({"api_key": value}))

    assert minted.material is None
    assert minted.key_id is None
    assert minted.previous_key_id is None
    assert value not in repr(minted)


def test_mint_on_an_empty_store() -> None:
    assert ManualIssuer().mint(None).material is None


def test_revoke_is_idempotent_and_touches_nothing() -> None:
    issuer = ManualIssuer()
    before = repr(issuer)
    for key_id in ("k-1", "k-1", None):
        issuer.revoke(key_id)
    assert repr(issuer) == before
    assert issuer.usage("k-1").in_use is None  # still cannot tell: revoking learnt nothing


def test_usage_says_the_platform_cannot_tell() -> None:
    evidence = ManualIssuer().usage("k-1")
    assert evidence.in_use is None
    assert evidence.summary == (
        "manual issuer: the platform cannot tell whether the old credential is still used"
    )


# --- noticing the version a person wrote ---------------------------------------------------


def test_nothing_to_notice_on_an_empty_path() -> None:
    assert find_new_version(StoreState()) is None


def test_nothing_to_notice_while_only_current_exists() -> None:
    assert find_new_version(state(v(1, PREVIOUS), v(2, CURRENT))) is None


def test_notices_an_unlabelled_version_newer_than_current() -> None:
    assert find_new_version(state(v(1, PREVIOUS), v(2, CURRENT), v(3))) == "3"


def test_notices_the_first_version_on_a_path_without_current() -> None:
    assert find_new_version(state(v(1))) == "1"


def test_picks_the_newest_when_a_person_wrote_twice() -> None:
    # The second write is the correction of the first: take the latest.
    assert find_new_version(state(v(2, CURRENT), v(3), v(4))) == "4"


def test_compares_versions_as_numbers_not_strings() -> None:
    assert find_new_version(state(v(9, CURRENT), v(10))) == "10"
    assert find_new_version(state(v(10, CURRENT), v(9))) is None


def test_ignores_older_unlabelled_versions() -> None:
    # An unlabelled version older than current is history (e.g. the source of a rollback).
    assert find_new_version(state(v(1), v(2, PREVIOUS), v(3, CURRENT))) is None


@pytest.mark.parametrize("labels", [PENDING, PREVIOUS, REVOKED, CURRENT])
def test_ignores_labelled_versions(labels: frozenset[VersionLabel]) -> None:
    assert find_new_version(state(v(2, CURRENT), v(3, labels))) is None


def test_ignores_destroyed_and_deleted_versions() -> None:
    assert find_new_version(state(v(2, CURRENT), v(3, destroyed=True))) is None
    assert find_new_version(state(v(2, CURRENT), v(3, deleted=True))) is None
    assert find_new_version(state(v(2, CURRENT), v(3), v(4, destroyed=True))) == "3"


def test_an_unlabelled_version_beside_a_pending_one_is_still_noticed() -> None:
    assert find_new_version(state(v(2, CURRENT), v(3, PENDING), v(4))) == "4"
