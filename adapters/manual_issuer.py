"""The ``manual`` issuer: a person creates the credential and writes it into the store.

rotabot never sees this credential's value. The person creates it at the provider and writes
it to the store as a new version (for the ``file`` store: :meth:`FileStore.put`); the bot
notices that version (:func:`bot.domain.credentials.find_new_version`), labels it pending
and carries on. Revocation is likewise done by the person at the provider, after the gate
opens.
"""

from __future__ import annotations

from bot.domain.credentials import Minted, UsageEvidence, find_new_version
from bot.domain.secret_material import SecretMaterial

__all__ = ["USAGE_UNKNOWN", "ManualIssuer", "find_new_version"]

USAGE_UNKNOWN = "manual issuer: the platform cannot tell whether the old credential is still used"


class ManualIssuer:
    """An :class:`bot.services.ports.Issuer` that touches no system (``kind = "manual"``)."""

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
