"""The ``local`` issuer: random credentials minted in process, for the sandbox and trials.

Nothing outside rotabot accepts these values; the issuer exists so a whole rotation can run
with nothing installed. It remembers which key ids it revoked, so a test or the sandbox can
check that revocation happened. With ``keeps_both_valid=False`` it stands in for a platform
that holds one valid value (a hard cutover): minting invalidates the previous key at once.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable

from bot.domain.credentials import IssuerError, Minted, UsageEvidence
from bot.domain.secret_material import SecretMaterial

USAGE_UNKNOWN = "local issuer: nothing reports use of these credentials"


class LocalIssuer:
    """An :class:`bot.services.ports.Issuer` minting ``secrets.token_urlsafe(32)`` per field."""

    kind: str = "local"

    def __init__(
        self, fields: Iterable[str] = ("api_key",), *, keeps_both_valid: bool = True
    ) -> None:
        self.fields = tuple(fields)
        self._both_valid = keeps_both_valid
        if not self.fields:
            raise IssuerError("local issuer: needs at least one field name to mint")
        if len(set(self.fields)) != len(self.fields):
            raise IssuerError(f"local issuer: duplicate field names in {list(self.fields)}")
        self.minted: list[str] = []
        self.revoked: set[str] = set()

    def __repr__(self) -> str:
        return f"LocalIssuer(fields={list(self.fields)}, minted={len(self.minted)})"

    @property
    def keeps_both_valid(self) -> bool:
        # Nothing checks these values, so old and new are equally "valid" unless told otherwise.
        return self._both_valid

    def mint(self, current: SecretMaterial | None) -> Minted:
        material = SecretMaterial({name: secrets.token_urlsafe(32) for name in self.fields})
        # The key id is a label for people and the audit log: random, never derived from the
        # value, so it reveals nothing about it.
        key_id = f"k-{uuid.uuid4().hex[:8]}"
        # The previous credential is the last one still valid, not one taken back.
        live = [k for k in self.minted if k not in self.revoked]
        previous = live[-1] if live else None
        self.minted.append(key_id)
        if not self._both_valid:
            self.revoked.update(live)  # one valid value: the new one replaces every other
        return Minted(material=material, key_id=key_id, previous_key_id=previous)

    def revoke(self, key_id: str | None) -> None:
        if key_id is not None:
            self.revoked.add(key_id)  # a set: revoking twice is the same as once

    def is_revoked(self, key_id: str) -> bool:
        return key_id in self.revoked

    def usage(self, key_id: str | None) -> UsageEvidence:
        return UsageEvidence(in_use=None, summary=USAGE_UNKNOWN)
