"""The ``redis-acl`` issuer: Redis 6+ ACL users hold several passwords at once.

A rotation adds a fresh password to an existing ACL user (``ACL SETUSER <user> >new``); the
old one stays valid, so consumers move at their own pace. Revocation removes the old password
by its SHA-256 hash (``ACL SETUSER <user> !<hash>``), the form Redis itself stores and shows in
``ACL GETUSER``, so the key id is never the password and is safe to keep in the audit log.

rotabot never creates users or changes their permissions: the user must exist, be enabled and
already have the rights its consumers need. What Redis does to connections that authenticated
with a removed password (it keeps them open) is in docs/issuers.md.

Redis cannot tell which password a connection used, so one user gives no usage evidence. The
optional two-user mode (:class:`RedisAclPairIssuer`, ``users: [a, b]``) alternates users as
postgres-role alternates roles: connections still authenticated as the old user are evidence.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis

from bot.domain.credentials import IssuerError, Minted, UsageEvidence, UsageSeen, standby_of
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


class _RedisAdmin:
    """A short-lived admin connection per call, with scrubbed errors; shared by both modes."""

    def __init__(self, admin_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._admin_url = admin_url
        self._timeout = timeout
        parts = urlsplit(admin_url)
        # Shown in messages instead of the URL, which carries the admin password.
        try:
            port: int | str = parts.port or 6379
        except ValueError:
            port = "?"  # from_url reports the bad URL when the issuer is first used
        self._where = f"{parts.hostname or parts.path or '?'}:{port}"
        self._admin_secret = unquote(parts.password) if parts.password else ""

    def _name(self) -> str:
        raise NotImplementedError

    def _getuser(self, client: redis.Redis, user: str) -> dict[str, Any]:
        info = _command(client, "ACL", "GETUSER", user)
        if not info:
            raise IssuerError(
                f"{self._name()}: ACL user {user!r} does not exist. rotabot does not create "
                "users or grant permissions: create it with the rights its consumers need "
                f"(ACL SETUSER {user} on >... ~... +...), then retry"
            )
        return dict(info)

    @staticmethod
    def _hashes(info: dict[str, Any]) -> list[str]:
        return [str(h) for h in info.get("passwords") or ()]

    @staticmethod
    def _sessions(client: redis.Redis, user: str) -> list[dict[str, Any]]:
        return [dict(c) for c in client.client_list() if c.get("user") == user]

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


class RedisAclIssuer(_RedisAdmin):
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
        super().__init__(admin_url, timeout=timeout)
        self.user = user
        self._password_factory = password_factory

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
            info = self._getuser(client, self.user)
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
            hashes = self._hashes(self._getuser(client, self.user))
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
            "usage",
            lambda client: (self._getuser(client, self.user), self._sessions(client, self.user)),
        )
        details = [_describe(c) for c in sessions]
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
            for conn in self._sessions(client, self.user):
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


class RedisAclPairIssuer(_RedisAdmin):
    """An :class:`bot.services.ports.Issuer` alternating two ACL users (``users: [a, b]`` in
    the catalog), as postgres-role alternates login roles. Key ids are user names.

    The new password goes to the user consumers do not use now (its old passwords replaced);
    consumers move to it, so ``CLIENT LIST`` shows who still authenticates as the old user:
    that is the usage evidence. Revocation removes every password of the old user
    (``resetpass``: nobody can AUTH as it); its open connections stay until closed
    (:meth:`disconnect_sessions`), and keep showing as usage until then. An operator creates
    both users, enabled and with the same rights; rotabot never grants rights.
    """

    kind: str = KIND

    def __init__(
        self,
        admin_url: str,
        users: tuple[str, str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        password_factory: Callable[[], str] = _default_password,
    ) -> None:
        if len(users) != 2 or users[0] == users[1] or not all(users):
            raise IssuerError(f"{KIND} issuer: the catalog must name two different ACL users")
        super().__init__(admin_url, timeout=timeout)
        self.users = users
        self._password_factory = password_factory

    def __repr__(self) -> str:
        return f"RedisAclPairIssuer(server={self._where!r}, users={self.users!r})"

    @property
    def keeps_both_valid(self) -> bool:
        return True

    def mint(self, current: SecretMaterial | None) -> Minted:
        active, inactive = standby_of(current, self.users, self._name())
        password = self._password_factory()

        def set_password(client: redis.Redis) -> None:
            info = self._getuser(client, inactive)
            flags = set(info.get("flags") or ())
            if "off" in flags:
                raise IssuerError(
                    f"{self._name()}: user {inactive!r} is disabled (off); rotabot does not "
                    "enable users. Enable it (with the same rights as its sibling) and retry"
                )
            live = self._sessions(client, inactive)
            if (self._hashes(info) or "nopass" in flags) and live:
                # Still usable from an earlier rotation that was rolled back or never revoked:
                # replacing its password would cut off whoever still authenticates with it.
                raise IssuerError(
                    f"{self._name()}: {inactive} still has a password and {len(live)} live "
                    f"connection(s) ({_addresses(live)}); an earlier rotation left it in use. "
                    f"Move those clients and revoke {inactive} first"
                )
            # resetpass drops leftovers (and nopass) so only the new password opens it.
            _command(client, "ACL", "SETUSER", inactive, "resetpass", f">{password}")

        self._call("mint", set_password, hidden=(password,))
        log.info("%s: %s has a new password (active: %s)", self._name(), inactive,
                 active or "none")
        return Minted(
            material=SecretMaterial({"username": inactive, "password": password}),
            key_id=inactive,
            previous_key_id=active,
        )

    def revoke(self, key_id: str | None) -> None:
        if key_id is None:
            log.info("%s: no previous key id; nothing to revoke", self._name())
            return
        user = self._check_user(key_id)
        sibling = self._sibling(user)

        def remove_passwords(client: redis.Redis) -> None:
            info = self._getuser(client, user)
            other = self._getuser(client, sibling)
            if (self._hashes(info) or "nopass" in (info.get("flags") or ())) and not (
                self._hashes(other) and "off" not in (other.get("flags") or ())
            ):
                raise IssuerError(
                    f"{self._name()}: {sibling} has no password or is disabled, so revoking "
                    f"{user} would leave no user for the consumers. Mint a new credential first"
                )
            _command(client, "ACL", "SETUSER", user, "resetpass")

        self._call("revoke", remove_passwords)
        log.info("%s: %s has no password now", self._name(), user)

    def usage(self, key_id: str | None) -> UsageEvidence:
        if key_id is None:
            return UsageEvidence(in_use=None, summary="no previous ACL user to check")
        user = self._check_user(key_id)
        info, sessions = self._call(
            "usage", lambda client: (self._getuser(client, user), self._sessions(client, user))
        )
        state = "has a password" if self._hashes(info) else "has no password (revoked)"
        details = (f"{user} {state}", *(_describe(c) for c in sessions))
        seen = tuple(
            UsageSeen(
                address=_address(c),
                application_name=str(c.get("name") or "") or None,
                user=user,
                how=f"connection id={c.get('id')}, open {c.get('age')}s, idle {c.get('idle')}s",
            )
            for c in sessions
        )
        if not sessions:
            return UsageEvidence(
                in_use=False, summary=f"no connections authenticated as {user} now",
                details=details,
            )
        plural = "s" if len(sessions) != 1 else ""
        return UsageEvidence(
            in_use=True,
            summary=f"{len(sessions)} connection{plural} still authenticated as {user}",
            details=details,
            seen=seen,
        )

    def disconnect_sessions(self, user: str) -> int:
        """Close every connection authenticated as ``user`` (one of the pair); returns how
        many. Revocation alone leaves them open: Redis checks passwords only at AUTH."""
        checked = self._check_user(user)

        def kill(client: redis.Redis) -> int:
            return sum(
                int(_command(client, "CLIENT", "KILL", "ID", c["id"]))
                for c in self._sessions(client, checked)
            )

        closed = self._call("disconnect", kill)
        log.warning("%s: closed %d connection(s) of %s", self._name(), closed, checked)
        return closed

    def _name(self) -> str:
        return f"{KIND} issuer ({self._where}, users {self.users[0]}/{self.users[1]})"

    def _sibling(self, user: str) -> str:
        return self.users[1] if user == self.users[0] else self.users[0]

    def _check_user(self, key_id: str) -> str:
        # Only our two users: a bad key id must never strip someone else's passwords.
        if key_id not in self.users:
            raise IssuerError(
                f"{self._name()}: {key_id!r} is not {self.users[0]} or {self.users[1]}"
            )
        return key_id


def _address(conn: dict[str, Any]) -> str | None:
    addr = str(conn.get("addr") or "")
    return addr.rsplit(":", 1)[0] or None if ":" in addr else None


def _addresses(conns: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({_address(c) or "?" for c in conns}))


def _describe(conn: dict[str, Any]) -> str:
    return (
        f"connection id={conn.get('id')} addr={conn.get('addr')} name={conn.get('name') or '-'} "
        f"age={conn.get('age')}s idle={conn.get('idle')}s"
    )
