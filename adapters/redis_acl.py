"""The ``redis-acl`` issuer: Redis 6+ ACL users hold several passwords at once.

A rotation adds a fresh password to an existing ACL user (``ACL SETUSER <user> >new``); the
old one stays valid, so consumers move at their own pace. Revocation removes the old password
by its SHA-256 hash (``ACL SETUSER <user> !<hash>``), the form Redis itself stores and shows in
``ACL GETUSER``, so the key id is never the password and is safe to keep in the audit log.

rotabot never creates users or changes their permissions: the user must exist, be enabled and
already have the rights its consumers need. What Redis does to connections that authenticated
with a removed password (it keeps them open) is in docs/issuers.md.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis

from bot.domain.credentials import IssuerError, Minted, UsageEvidence
from bot.domain.secret_material import REDACTED, SecretMaterial

log = logging.getLogger(__name__)

KIND = "redis-acl"
T = TypeVar("T")
# Seconds; an admin command that hangs must fail the step, not the bot.
DEFAULT_TIMEOUT = 10.0
# The ACL rights the bot's admin user needs; named in errors and docs/issuers.md.
ADMIN_RIGHTS = "+acl|getuser +acl|setuser +client|list +client|kill"


def password_hash(password: str) -> str:
    """The SHA-256 hex digest Redis ACL stores for ``password`` (usable as ``!<hash>``)."""
    return hashlib.sha256(password.encode()).hexdigest()


def _scrub(text: str, hidden: Iterable[str]) -> str:
    for value in hidden:
        if value:
            text = text.replace(value, REDACTED)
    return text


def _command(client: redis.Redis, *args: str) -> Any:
    # redis-py leaves execute_command untyped; the ACL subcommands used here have no typed
    # wrapper that would not also send 'on'/'off' (acl_setuser always does).
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _default_password() -> str:
    return secrets.token_urlsafe(32)


class RedisAclIssuer:
    """An :class:`bot.services.ports.Issuer` for one Redis ACL user (``kind = "redis-acl"``).

    ``admin_url`` (``redis://admin:pw@host:port/0``) comes from the environment variable the
    catalog names; that admin user needs ``+acl|getuser +acl|setuser +client|list`` (and
    ``+client|kill`` for :meth:`disconnect_sessions`). ``password_factory`` exists so tests can
    plant a canary value; production uses ``secrets.token_urlsafe(32)``.
    """

    kind: str = KIND

    def __init__(
        self,
        admin_url: str,
        user: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        password_factory: Callable[[], str] = _default_password,
    ) -> None:
        if not user:
            raise IssuerError(f"{KIND} issuer: the catalog must name the ACL user to rotate")
        self.user = user
        self._admin_url = admin_url
        self._timeout = timeout
        self._password_factory = password_factory
        parts = urlsplit(admin_url)
        # Shown in messages instead of the URL, which carries the admin password.
        try:
            port: int | str = parts.port or 6379
        except ValueError:
            port = "?"  # from_url reports the bad URL when the issuer is first used
        self._where = f"{parts.hostname or parts.path or '?'}:{port}"
        self._admin_secret = unquote(parts.password) if parts.password else ""

    def __repr__(self) -> str:
        return f"RedisAclIssuer(server={self._where!r}, user={self.user!r})"

    @property
    def keeps_both_valid(self) -> bool:
        return True

    # --- Issuer ----------------------------------------------------------------------------

    def mint(self, current: SecretMaterial | None) -> Minted:
        previous_key_id: str | None = None
        if current is not None:
            fields = current.reveal()
            if fields.get("username", self.user) != self.user:
                raise IssuerError(
                    f"{self._name()}: the current credential is for user "
                    f"{fields['username']!r}, not {self.user!r}; fix the catalog or the store"
                )
            if not fields.get("password"):
                raise IssuerError(
                    f"{self._name()}: the current credential has no 'password' field "
                    f"(fields: {current.field_names()})"
                )
            previous_key_id = password_hash(fields["password"])
        new_password = self._password_factory()
        key_id = password_hash(new_password)

        def add_password(client: redis.Redis) -> None:
            info = self._getuser(client)
            flags = set(info.get("flags") or ())
            if "off" in flags:
                raise IssuerError(
                    f"{self._name()}: user {self.user!r} is disabled (off); rotabot does not "
                    "enable users. Enable it deliberately or fix the catalog"
                )
            if "nopass" in flags:
                # '>pw' clears nopass, which would lock out every client that connects
                # without a password: a cliff, not an overlap.
                raise IssuerError(
                    f"{self._name()}: user {self.user!r} has 'nopass'; adding a password would "
                    "lock out every client that connects without one. Give it a password first"
                )
            if previous_key_id is not None and previous_key_id not in self._hashes(info):
                log.warning(
                    "%s: the current credential (key %s...) is not a password of user %s; "
                    "its consumers cannot authenticate with it now",
                    self._name(), previous_key_id[:12], self.user,
                )
            # A concurrent ACL DELUSER between GETUSER and SETUSER would make SETUSER create
            # the user again; without 'on' such a user is disabled and has no rights, so the
            # race cannot grant access.
            _command(client, "ACL", "SETUSER", self.user, f">{new_password}")

        self._call("mint", add_password, hidden=(new_password,))
        log.info("%s: added password %s...", self._name(), key_id[:12])
        return Minted(
            material=SecretMaterial({"username": self.user, "password": new_password}),
            key_id=key_id,
            previous_key_id=previous_key_id,
        )

    def revoke(self, key_id: str | None) -> None:
        if key_id is None:
            # The first rotation of a secret has no previous credential that rotabot knows;
            # there is nothing it could remove.
            log.info("%s: no previous key id; nothing to revoke", self._name())
            return
        key_id = self._check_key_id(key_id)

        def remove_password(client: redis.Redis) -> bool:
            hashes = self._hashes(self._getuser(client))
            if key_id not in hashes:
                return False
            if hashes == [key_id]:
                raise IssuerError(
                    f"{self._name()}: password {key_id[:12]}... is the only password of user "
                    f"{self.user!r}; removing it would lock out every consumer. Mint a new "
                    "credential first"
                )
            _command(client, "ACL", "SETUSER", self.user, f"!{key_id}")
            return True

        removed = self._call("revoke", remove_password)
        log.info(
            "%s: password %s... %s", self._name(), key_id[:12],
            "removed" if removed else "was already absent",
        )

    def usage(self, key_id: str | None) -> UsageEvidence:
        checked = self._check_key_id(key_id) if key_id is not None else None
        info, sessions = self._call(
            "usage", lambda client: (self._getuser(client), self._sessions(client))
        )
        details = [
            f"connection id={c.get('id')} addr={c.get('addr')} name={c.get('name') or '-'} "
            f"age={c.get('age')}s idle={c.get('idle')}s"
            for c in sessions
        ]
        if checked is not None:
            still = "still set" if checked in self._hashes(info) else "already removed"
            details.insert(0, f"password {checked[:12]}... is {still} on user {self.user}")
        addrs = sorted({str(c.get("addr", "?")).rsplit(":", 1)[0] for c in sessions})
        where = f" ({', '.join(addrs)})" if addrs else ""
        plural = "s" if len(sessions) != 1 else ""
        summary = (
            f"Redis cannot tell which password a connection used; {len(sessions)} "
            f"connection{plural} authenticated as {self.user} now{where}"
        )
        return UsageEvidence(in_use=None, summary=summary, details=tuple(details))

    # --- explicit admin action --------------------------------------------------------------

    def disconnect_sessions(self, min_age_seconds: int = 0) -> int:
        """Close connections authenticated as the user; returns how many were closed.

        Redis cannot tell which password a connection used, so this closes old-password and
        new-password connections alike; clients holding the new password reconnect. A
        connection opened after the revocation can only have used a remaining password, so
        passing the seconds since revocation as ``min_age_seconds`` spares those.
        """

        def kill(client: redis.Redis) -> int:
            closed = 0
            for conn in self._sessions(client):
                if int(conn.get("age", 0)) >= min_age_seconds:
                    closed += int(_command(client, "CLIENT", "KILL", "ID", conn["id"]))
            return closed

        closed = self._call("disconnect", kill)
        log.warning("%s: closed %d connection(s)", self._name(), closed)
        return closed

    # --- helpers ----------------------------------------------------------------------------

    def _name(self) -> str:
        return f"{KIND} issuer ({self._where}, user {self.user})"

    def _check_key_id(self, key_id: str) -> str:
        key_id = key_id.lower()
        if len(key_id) != 64 or any(ch not in "0123456789abcdef" for ch in key_id):
            raise IssuerError(
                f"{self._name()}: key id {key_id[:16]!r} is not a SHA-256 hex password hash"
            )
        return key_id

    def _getuser(self, client: redis.Redis) -> dict[str, Any]:
        info = _command(client, "ACL", "GETUSER", self.user)
        if not info:
            raise IssuerError(
                f"{self._name()}: ACL user {self.user!r} does not exist. rotabot does not create "
                "users or grant permissions: create it with the rights its consumers need "
                f"(ACL SETUSER {self.user} on >... ~... +...), then retry"
            )
        return dict(info)

    @staticmethod
    def _hashes(info: dict[str, Any]) -> list[str]:
        return [str(h) for h in info.get("passwords") or ()]

    def _sessions(self, client: redis.Redis) -> list[dict[str, Any]]:
        return [dict(c) for c in client.client_list() if c.get("user") == self.user]

    def _call(self, action: str, work: Callable[[redis.Redis], T], hidden: Iterable[str] = ()) -> T:
        """Run ``work`` on a short-lived admin connection; Redis errors become scrubbed
        :class:`IssuerError`."""
        try:
            client = redis.Redis.from_url(
                self._admin_url,
                decode_responses=True,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
            )
        except ValueError:
            # from_url's message may quote the URL and with it the admin password.
            raise IssuerError(
                f"{self._name()}: the admin URL is not a valid redis:// URL"
            ) from None
        failure = ""
        try:
            return work(client)
        except redis.RedisError as exc:
            # Redis echoes a failing ACL SETUSER modifier ('>password') in its error text.
            failure = _scrub(f"{type(exc).__name__}: {exc}", (*hidden, self._admin_secret))
            if isinstance(exc, redis.AuthenticationError):
                failure += " (the admin credential from the environment was refused)"
            elif isinstance(exc, redis.exceptions.NoPermissionError):
                failure += f" (the admin user needs {ADMIN_RIGHTS})"
        finally:
            client.close()
        # Raised outside the `except` block so the original exception is not kept as
        # __context__, where a logged traceback would print its unscrubbed message.
        raise IssuerError(f"{self._name()}: {action} failed: {failure}")
