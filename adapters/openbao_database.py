"""The ``openbao-database`` issuer: two static roles of OpenBao's (or Vault's) database secrets
engine alternate, as ``postgres-role`` alternates login roles.

Each static role maps one existing PostgreSQL user; the engine holds that user's password and
changes it on ``POST <mount>/rotate-role/<role>``. A rotation rotates the standby role (the
one whose user is not in the store now) and hands its fresh password out as the new
credential, so old and new are both valid until the old role is revoked by rotating its
password once more (the old password stops working; the engine keeps managing the user).
Key ids are static role names. Usage evidence comes from ``pg_stat_activity`` on a PostgreSQL
URL the catalog names (``usage_url_env``); without one the gate is told that nobody can tell.

The bot's token needs ``update`` on ``<mount>/rotate-role/<role>`` and ``read`` on
``<mount>/static-creds/<role>``, nothing else. See docs/issuers.md.

hvac exceptions carry the response body; none of it is forwarded (an engine error could
quote the database's answer to a password change): messages are built from the URL, mount,
role and HTTP status, and each IssuerError is raised after its except block, so neither the
hvac nor the psycopg exception rides along as ``__context__``.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import psycopg
import requests
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from adapters.postgres_role import sessions_of, who
from adapters.vault_store import make_vault_client
from bot import catalog
from bot.domain.credentials import IssuerError, Minted, StoreError, UsageEvidence
from bot.domain.secret_material import REDACTED, SecretMaterial

log = logging.getLogger(__name__)

KIND = "openbao-database"
T = TypeVar("T")
Conn = psycopg.Connection[tuple[object, ...]]
DEFAULT_CONNECT_TIMEOUT = 10
APPLICATION_NAME = "rotabot"

_STATUS_BY_EXCEPTION: dict[type[Exception], int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}


def _scrub(text: str, hidden: Iterable[str]) -> str:
    for value in hidden:
        if value:
            text = text.replace(value, REDACTED)
    return text


class OpenBaoDatabaseIssuer:
    """An :class:`bot.services.ports.Issuer` alternating two static roles of a database secrets
    engine mount (``kind = "openbao-database"``). Build it with :meth:`from_config`.

    ``usage_url`` (a libpq DSN or ``postgresql://`` URL, from the environment) is only read for
    evidence; its role needs ``pg_read_all_stats`` to see other users' client addresses.
    """

    kind: str = KIND

    def __init__(
        self,
        client: hvac.Client,
        *,
        roles: tuple[str, str] | list[str],
        mount: str = "database",
        usage_url: str | None = None,
    ) -> None:
        if len(roles) != 2 or roles[0] == roles[1] or not all(roles):
            raise IssuerError(f"{KIND} issuer: the catalog must name two different static roles")
        self._client = client
        self._db: Any = client.secrets.database
        self.mount = mount.strip("/")
        self.roles: tuple[str, str] = (roles[0], roles[1])
        self.url = str(client.url)
        self._usage_conninfo: str | None = None
        self._usage_secret = ""
        if usage_url is not None:
            params: dict[str, str | int | None] | None = None
            # A SQLAlchemy-style URL names its driver ('postgresql+psycopg://'); libpq does not.
            dsn = re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", usage_url)
            with contextlib.suppress(psycopg.ProgrammingError):
                params = conninfo_to_dict(dsn)
            if params is None:
                # Raised outside `except`: the parser's message can quote the URL's password.
                raise IssuerError(f"{self._name()}: the usage URL is not a valid PostgreSQL URL")
            self._usage_secret = str(params.get("password") or "")
            params.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
            params.setdefault("application_name", APPLICATION_NAME)
            self._usage_conninfo = make_conninfo("", **params)

    @classmethod
    def from_config(
        cls, config: catalog.OpenBaoDatabaseIssuer, *, env: Mapping[str, str]
    ) -> OpenBaoDatabaseIssuer:
        """The issuer the catalog describes; the token (``token_env``) and the usage URL
        (``usage_url_env``) come from ``env``. A missing variable is an IssuerError naming it."""
        failure = ""
        client: hvac.Client | None = None
        try:
            client = make_vault_client(config.url, env=env, token_env=config.token_env)
        except StoreError as exc:  # a missing variable; the message names it, never a value
            failure = str(exc)
        if client is None:
            raise IssuerError(f"{KIND} issuer ({config.url}, mount {config.mount}): {failure}")
        usage_url: str | None = None
        if config.usage_url_env is not None:
            usage_url = env.get(config.usage_url_env) or None
            if usage_url is None:
                raise IssuerError(
                    f"{KIND} issuer ({config.url}, mount {config.mount}): environment variable "
                    f"{config.usage_url_env} (usage_url_env, a PostgreSQL URL for usage "
                    "evidence) is not set"
                )
        return cls(client, roles=config.roles, mount=config.mount, usage_url=usage_url)

    def __repr__(self) -> str:
        return (f"OpenBaoDatabaseIssuer(url={self.url!r}, mount={self.mount!r}, "
                f"roles={self.roles!r})")

    @property
    def keeps_both_valid(self) -> bool:
        return True

    # --- Issuer ----------------------------------------------------------------------------

    def mint(self, current: SecretMaterial | None) -> Minted:
        """Rotate the standby role and return its fresh credential.

        The role in use is the one whose user is ``current["username"]``; the other one is
        rotated. With no current credential (an empty store) ``roles[1]`` is rotated and there
        is no previous key id: ``roles[0]`` may already be handed out by the engine to
        consumers that read it there, and rotabot leaves a credential it never issued alone.
        """
        if current is None:
            active, standby = None, self.roles[1]
        else:
            username = current.reveal().get("username", "")
            active = self._role_of(username)
            standby = self.roles[1] if active == self.roles[0] else self.roles[0]
        if self._usage_conninfo is not None:
            # Usually nobody: it was revoked at the end of the last rotation. A session means
            # an earlier rotation was rolled back or someone reads static-creds by hand, and a
            # new password would cut them off when they reconnect.
            user = self._creds(standby, "mint")["username"]
            live = self._usage_call("mint", lambda conn: sessions_of(conn, user))
            if live:
                raise IssuerError(
                    f"{self._name()}: static role {standby} (user {user}) has {len(live)} live "
                    f"session(s) ({who(live)}), so rotating it would cut them off; move "
                    f"those consumers and revoke {standby} first"
                )
        self._rotate(standby, "mint")
        creds = self._creds(standby, "mint")
        log.info("%s: rotated %s for the new credential (in use: %s)", self._name(), standby,
                 active or "none")
        return Minted(
            material=SecretMaterial({"username": creds["username"],
                                     "password": creds["password"]}),
            key_id=standby,
            previous_key_id=active,
        )

    def revoke(self, key_id: str | None) -> None:
        """Rotate ``key_id``'s password through the engine: the password handed out stops
        working. Idempotent (a repeat rotates again; the old password stays invalid)."""
        if key_id is None:
            log.info("%s: no previous key id; nothing to revoke", self._name())
            return
        role = self._check_role(key_id)
        self._rotate(role, "revoke")
        log.info("%s: rotated %s; the old password no longer logs in", self._name(), role)

    def usage(self, key_id: str | None) -> UsageEvidence:
        if key_id is None:
            return UsageEvidence(in_use=None, summary="no previous role to check")
        role = self._check_role(key_id)
        if self._usage_conninfo is None:
            return UsageEvidence(
                in_use=None,
                summary=f"cannot tell whether {role} is still in use: set usage_url_env "
                "(a PostgreSQL URL for pg_stat_activity) on this issuer in the catalog",
            )
        creds = self._creds(role, "usage")
        user = creds["username"]
        sessions = self._usage_call("usage", lambda conn: sessions_of(conn, user))
        details = (f"static role {role} is PostgreSQL user {user}",
                   *(s.describe() for s in sessions))
        if not sessions:
            return UsageEvidence(in_use=False, summary=f"no sessions use {user} now",
                                 details=details)
        plural = "s" if len(sessions) != 1 else ""
        verb = "uses" if len(sessions) == 1 else "use"
        return UsageEvidence(
            in_use=True,
            summary=f"{len(sessions)} session{plural} still {verb} {user} ({who(sessions)})",
            details=details,
            seen=tuple(s.seen(user) for s in sessions),
        )

    # --- engine calls -----------------------------------------------------------------------

    def _role_of(self, username: str) -> str:
        for role in self.roles:
            if self._creds(role, "mint")["username"] == username:
                return role
        raise IssuerError(
            f"{self._name()}: the current credential's username {username!r} belongs to "
            f"neither static role {self.roles[0]} nor {self.roles[1]}; the store must hold one "
            "of their users"
        )

    def _rotate(self, role: str, action: str) -> None:
        self._engine(action, role, "rotate-role",
                     lambda: self._db.rotate_static_role_credentials(role,
                                                                     mount_point=self.mount))

    def _creds(self, role: str, action: str) -> dict[str, str]:
        response = self._engine(
            action, role, "static-creds",
            lambda: self._db.get_static_credentials(role, mount_point=self.mount))
        data = response.get("data") if isinstance(response, dict) else None
        if (not isinstance(data, dict) or not isinstance(data.get("username"), str)
                or not isinstance(data.get("password"), str)):
            raise IssuerError(
                f"{self._name()}: {action} failed: {self.mount}/static-creds/{role} returned no "
                "username and password (is it a static role of a password credential?)"
            )
        return {"username": data["username"], "password": data["password"]}

    def _engine(self, action: str, role: str, endpoint: str, call: Callable[[], T]) -> T:
        path = f"{self.mount}/{endpoint}/{role}"
        failure = ""
        try:
            return call()
        except hvac.exceptions.VaultError as exc:
            status = _STATUS_BY_EXCEPTION.get(type(exc))
            failure = f"HTTP {status}" if status else "unexpected status"
            if status == 403:
                failure += (f": permission denied; the token needs update on "
                            f"{self.mount}/rotate-role/* and read on {self.mount}/static-creds/*")
            elif status == 400:
                failure += f": is {role} a static role on {self.mount}?"
            elif status == 404:
                failure += f": is a database secrets engine mounted at {self.mount}?"
            elif status == 503:
                failure += ": OpenBao/Vault is sealed or unavailable"
            elif status is not None and status >= 500:
                failure += ": see the OpenBao/Vault server log"
        except requests.exceptions.Timeout:
            failure = "no answer in time"
        except requests.exceptions.RequestException as exc:
            failure = f"cannot reach it ({type(exc).__name__})"
        # Raised outside the except block: the hvac exception (with the response body) must
        # not be kept as __context__.
        raise IssuerError(f"{self._name()}: {action} failed on {path}: {failure}")

    # --- pg_stat_activity -------------------------------------------------------------------

    def _usage_call(self, action: str, work: Callable[[Conn], T]) -> T:
        assert self._usage_conninfo is not None
        failure = ""
        try:
            with psycopg.connect(self._usage_conninfo, autocommit=True) as conn:
                return work(conn)
        except psycopg.Error as exc:
            failure = _scrub(f"{type(exc).__name__}: {exc}", (self._usage_secret,))
        # Raised outside `except`: the psycopg exception is not kept as __context__.
        raise IssuerError(
            f"{self._name()}: {action} failed reading pg_stat_activity (usage URL): {failure}"
        )

    # --- helpers ----------------------------------------------------------------------------

    def _name(self) -> str:
        return f"{KIND} issuer ({self.url}, mount {self.mount})"

    def _check_role(self, key_id: str) -> str:
        # Only our two static roles: a bad key id must never rotate someone else's password.
        if key_id not in self.roles:
            raise IssuerError(
                f"{self._name()}: {key_id!r} is not static role {self.roles[0]} or "
                f"{self.roles[1]}"
            )
        return key_id
