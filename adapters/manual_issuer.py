"""The ``manual`` issuer: a person creates the credential and writes it into the store.

rotabot never sees this credential's value. The person creates it at the provider and writes
it to the store as a new version (for the ``file`` store: :meth:`FileStore.put`); the bot
notices that version (:func:`find_new_version`), labels it pending and carries on. Revocation
is likewise done by the person at the provider, after the gate opens.
"""

from __future__ import annotations

from adapters.base import Minted, StoreState, UsageEvidence
from bot.secret_material import SecretMaterial

USAGE_UNKNOWN = "manual issuer: the platform cannot tell whether the old credential is still used"


class ManualIssuer:
    """An :class:`adapters.base.Issuer` that touches no system (``kind = "manual"``)."""

    kind: str = "manual"

    def __init__(self, keeps_both_valid: bool = True) -> None:
        # Whether the provider lets old and new credentials coexist is a fact about the
        # provider that only the catalog author knows; say False for a hard cutover.
        self._keeps_both_valid = keeps_both_valid

    def __repr__(self) -> str:
        return f"ManualIssuer(keeps_both_valid={self._keeps_both_valid})"

    @property
    def keeps_both_valid(self) -> bool:
        return self._keeps_both_valid

    def mint(self, current: SecretMaterial | None) -> Minted:
        # Nothing to mint and nothing to learn from `current`: the person writes the value.
        return Minted(material=None, key_id=None)

    def revoke(self, key_id: str | None) -> None:
        # The person revokes at the provider; there is no system for us to call, so calling
        # this any number of times changes nothing.
        return None

    def usage(self, key_id: str | None) -> UsageEvidence:
        return UsageEvidence(in_use=None, summary=USAGE_UNKNOWN)


def find_new_version(state: StoreState) -> str | None:
    """The version a person wrote for this rotation, or ``None`` while there is none yet.

    That is the newest live (neither destroyed nor deleted) version that is newer than the
    current one and carries no label: a version already labelled pending, previous or revoked
    belongs to a rotation, and one older than current is history, not a new credential.
    """
    floor = int(state.current) if state.current is not None else 0
    candidates = [
        int(v.version)
        for v in state.versions
        if not v.destroyed and not v.deleted and not v.labels and int(v.version) > floor
    ]
    return str(max(candidates)) if candidates else None
