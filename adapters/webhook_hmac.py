"""The ``webhook-hmac`` issuer: signing secrets for webhooks whose receivers accept several.

There is no provider to call: rotabot mints the secret itself and the list of secrets the
receivers accept is part of the credential. The material has three string fields:

* ``secret``: the newest secret; senders sign with it;
* ``secrets``: a JSON array of the secrets receivers accept, newest first: ``[new, old]``
  during the overlap, ``[new]`` once the old one is revoked;
* ``key_id``: a random, non-secret id of the newest secret (``wh_`` and 8 hex digits), so the
  next rotation knows the id of the one it replaces. It is never derived from the value.

Revoking the old secret is done by :meth:`WebhookHmacIssuer.after_revoke`: the rotation writes
the list without it as a new current version and to every target it wrote. ``revoke`` itself
has nothing to call. Neither a value nor a part of one is put in a message.
"""

from __future__ import annotations

import json
import re
import secrets

from bot.domain.credentials import IssuerError, Minted, UsageEvidence
from bot.domain.secret_material import SecretMaterial

SECRET, SECRETS, KEY_ID = "secret", "secrets", "key_id"
USAGE_UNKNOWN = (
    "rotabot cannot see which secret a receiver verified with; ask the receivers' owners or "
    "check their logs before revoking"
)
_PREFIX = re.compile(r"[A-Za-z0-9_-]{0,16}")
MIN_BYTES, MAX_BYTES = 16, 128


class WebhookHmacIssuer:
    """An :class:`bot.services.ports.Issuer` (and ``TrimsAfterRevoke``) minting
    ``prefix + secrets.token_urlsafe(nbytes)``: URL-safe base64 without padding."""

    kind: str = "webhook-hmac"

    def __init__(self, prefix: str = "whsec_", nbytes: int = 32) -> None:
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            raise IssuerError(
                "webhook-hmac issuer: the prefix must be at most 16 letters, digits, _ or -"
            )
        if not MIN_BYTES <= nbytes <= MAX_BYTES:
            raise IssuerError(
                f"webhook-hmac issuer: bytes must be between {MIN_BYTES} and {MAX_BYTES}"
            )
        self.prefix = prefix
        self.nbytes = nbytes

    def __repr__(self) -> str:
        return f"WebhookHmacIssuer(prefix={self.prefix!r}, bytes={self.nbytes})"

    @property
    def keeps_both_valid(self) -> bool:
        return True  # receivers accept every secret of the list

    def mint(self, current: SecretMaterial | None) -> Minted:
        new = self.prefix + secrets.token_urlsafe(self.nbytes)
        key_id = f"wh_{secrets.token_hex(4)}"
        if current is None:
            accepted, previous_key_id = [new], None
        else:
            fields = current.reveal()
            old = fields.get(SECRET)
            if not old:
                # Dropping the old secret here would break every sender still signing with it.
                raise IssuerError(
                    "webhook-hmac issuer: the current credential has no `secret` field (it has "
                    f"{', '.join(sorted(fields)) or 'none'}); store the secret senders sign with "
                    "as `secret` before the first rotation"
                )
            accepted, previous_key_id = [new, old], fields.get(KEY_ID) or None
        material = SecretMaterial({SECRET: new, SECRETS: _dump(accepted), KEY_ID: key_id})
        return Minted(material=material, key_id=key_id, previous_key_id=previous_key_id)

    def revoke(self, key_id: str | None) -> None:
        """Nothing to call: the old secret leaves the list in :meth:`after_revoke`."""

    def usage(self, key_id: str | None) -> UsageEvidence:
        return UsageEvidence(in_use=None, summary=USAGE_UNKNOWN)

    def after_revoke(self, current: SecretMaterial) -> SecretMaterial | None:
        """``current`` with ``secrets`` = ``[secret]``; None when it lists nothing else."""
        fields = current.reveal()
        newest = fields.get(SECRET)
        if not newest:
            raise IssuerError(
                "webhook-hmac issuer: the current credential has no `secret` field; cannot "
                "tell which secret to keep"
            )
        if SECRETS not in fields:
            return None
        if _load(fields[SECRETS]) == [newest]:
            return None
        return SecretMaterial({**fields, SECRETS: _dump([newest])})


def _dump(accepted: list[str]) -> str:
    # Compact: no blanks, so a dotenv file or a header holds it without surprises.
    return json.dumps(accepted, separators=(",", ":"))


def _load(text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError:
        value = None  # the decoder's message quotes the text: not chained, not shown
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise IssuerError(
            "webhook-hmac issuer: the current credential's `secrets` is not a JSON array of "
            "strings"
        )
    return value
