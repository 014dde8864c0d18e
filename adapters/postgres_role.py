"""The ``postgres-role`` issuer: two login roles alternate under one group role.

The group role ``<base>`` (NOLOGIN) owns the privileges; ``<base>_a`` and ``<base>_b`` are
login roles in it. A rotation gives the role consumers do not use now a fresh password and
LOGIN, so old and new credentials are both valid until the old role is revoked (NOLOGIN and a
random password). Usage evidence comes from ``pg_stat_activity``; ending sessions is a separate,
explicit admin action (:meth:`PostgresRoleIssuer.terminate_sessions`).

Passwords never reach the server in plaintext: the SCRAM-SHA-256 verifier is computed on the
client (libpq's ``PQencryptPasswordConn``, as psql's ``\\password`` does) and sent instead, so a
failing ``ALTER ROLE`` logged by the server with its statement, ``pg_stat_activity.query`` or
``log_statement = 'all'`` show a salted verifier, never the password. See docs/issuers.md.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from bot.domain.credentials import IssuerError, Minted, UsageEvidence, UsageSeen, standby_of
from bot.domain.secret_material import REDACTED, SecretMaterial

log = logging.getLogger(__name__)

KIND = "postgres-role"
T = TypeVar("T")
Conn = psycopg.Connection[tuple[object, ...]]
# PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes; '<base>_a' must survive that.
MAX_ROLE_BYTES = 63
DEFAULT_CONNECT_TIMEOUT = 10
APPLICATION_NAME = "rotabot"


def _default_password() -> str:
    return secrets.token_urlsafe(32)


def _scrub(text: str, hidden: Iterable[str]) -> str:
    for value in hidden:
        if value:
            text = text.replace(value, REDACTED)
    return text


@dataclass(frozen=True)
class Session:
    """One server session of a login role, as ``pg_stat_activity`` shows it."""

    pid: int
    client_addr: str | None
    application_name: str
    backend_start: datetime | None
    state: str | None

    def seen(self, user: str) -> UsageSeen:
        """This session as usage evidence: who (address, application_name, role), live now."""
        since = self.backend_start.isoformat(timespec="seconds") if self.backend_start else "?"
        return UsageSeen(
            address=self.client_addr, application_name=self.application_name or None,
            user=user, how=f"session pid {self.pid} since {since}",
        )

    def describe(self) -> str:
        addr = self.client_addr or "local socket"
        app = self.application_name or "no application_name"
        since = self.backend_start.isoformat(timespec="seconds") if self.backend_start else "?"
        return f"pid {self.pid}: {app} from {addr}, since {since}, {self.state or 'unknown'}"


class PostgresRoleIssuer:
    """An :class:`bot.services.ports.Issuer` alternating ``<base>_a``/``<base>_b`` (``kind =
    "postgres-role"``). Key ids are role names.

    ``admin_dsn`` (a libpq DSN or ``postgresql://`` URL) comes from the environment variable
    the catalog names. Its role needs CREATEROLE, ``pg_read_all_stats`` (client addresses in
    usage evidence) and ``pg_signal_backend`` (:meth:`terminate_sessions`); docs/issuers.md.
    ``password_factory`` exists so tests can plant a canary value.
    """

    kind: str = KIND

    def __init__(
        self,
        admin_dsn: str,
        base_role: str,
        *,
        password_factory: Callable[[], str] = _default_password,
    ) -> None:
        if not base_role:
            raise IssuerError(f"{KIND} issuer: the catalog must name the base (group) role")
        if len(f"{base_role}_a".encode()) > MAX_ROLE_BYTES:
            raise IssuerError(
                f"{KIND} issuer: base role {base_role!r} is too long; '<base>_a' must fit in "
                f"{MAX_ROLE_BYTES} bytes"
            )
        self.base_role = base_role
        self.roles = (f"{base_role}_a", f"{base_role}_b")
        self._password_factory = password_factory
        params: dict[str, str | int | None] | None = None
        # A SQLAlchemy-style URL names its driver ('postgresql+psycopg://'); libpq does not.
        dsn = re.sub(r"^postgres(ql)?\+\w+://", "postgresql://", admin_dsn)
        with contextlib.suppress(psycopg.ProgrammingError):
            params = conninfo_to_dict(dsn)
        if params is None:
            # Raised outside `except`: the parser's message can quote the DSN and its password.
            raise IssuerError(f"{KIND} issuer: the admin DSN is not a valid libpq DSN")
        self._admin_secret = str(params.get("password") or "")
        params.setdefault("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
        params.setdefault("application_name", APPLICATION_NAME)
        self._conninfo = make_conninfo("", **params)
        host = params.get("host") or "local socket"
        self._where = f"{host}:{params.get('port') or 5432}"

    def __repr__(self) -> str:
        return f"PostgresRoleIssuer(server={self._where!r}, base_role={self.base_role!r})"

    @property
    def keeps_both_valid(self) -> bool:
        return True

    # --- one-time admin step ----------------------------------------------------------------

    def ensure_roles(self) -> list[str]:
        """Create the group role and both login roles where missing (all NOLOGIN) and make
        the login roles members of the group. Idempotent; returns what it changed.

        Grant the group role its privileges (``GRANT ... TO <base>``) yourself: rotabot does
        not decide what the credential may do.
        """

        def work(conn: Conn) -> list[str]:
            self._lock(conn)
            changed: list[str] = []
            existing = self._role_rows(conn)
            if self.base_role not in existing:
                conn.execute(
                    sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(self.base_role))
                )
                changed.append(f"created group role {self.base_role} (NOLOGIN)")
            for role in self.roles:
                if role not in existing:
                    conn.execute(
                        sql.SQL("CREATE ROLE {} NOLOGIN IN ROLE {}").format(
                            sql.Identifier(role), sql.Identifier(self.base_role)
                        )
                    )
                    changed.append(f"created login role {role} (NOLOGIN) in {self.base_role}")
                elif not existing[role][1]:
                    conn.execute(
                        sql.SQL("GRANT {} TO {}").format(
                            sql.Identifier(self.base_role), sql.Identifier(role)
                        )
                    )
                    changed.append(f"made {role} a member of {self.base_role}")
            return changed

        changed = self._call("ensure_roles", work)
        for line in changed:
            log.info("%s: %s", self._name(), line)
        return changed

    # --- Issuer ----------------------------------------------------------------------------

    def mint(self, current: SecretMaterial | None) -> Minted:
        active, inactive = standby_of(current, self.roles, self._name())
        password = self._password_factory()
        hidden: list[str] = [password]

        def work(conn: Conn) -> None:
            self._lock(conn)
            roles = self._role_rows(conn)
            self._require_roles(roles)
            can_login, _ = roles[inactive]
            if can_login:
                # LOGIN left on from an earlier rotation that was rolled back or never
                # revoked: resetting its password would cut off whoever still uses it.
                live = sessions_of(conn, inactive)
                if live:
                    raise IssuerError(
                        f"{self._name()}: {inactive} can still log in and has {len(live)} live "
                        f"session(s) ({who(live)}); an earlier rotation left it in use. "
                        f"Move those consumers and revoke {inactive} first"
                    )
            verifier = self._verifier(conn, inactive, password)
            hidden.append(verifier)
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(inactive), sql.Literal(verifier)
                )
            )

        self._call("mint", work, hidden=hidden)
        log.info("%s: %s has a new password and LOGIN (active: %s)", self._name(), inactive,
                 active or "none")
        return Minted(
            material=SecretMaterial({"username": inactive, "password": password}),
            key_id=inactive,
            previous_key_id=active,
        )

    def revoke(self, key_id: str | None) -> None:
        if key_id is None:
            # A first rotation has no previous role rotabot knows about; nothing to revoke.
            log.info("%s: no previous key id; nothing to revoke", self._name())
            return
        role = self._check_role(key_id)
        sibling = self.roles[1] if role == self.roles[0] else self.roles[0]
        password = self._password_factory()
        hidden: list[str] = [password]

        def work(conn: Conn) -> None:
            self._lock(conn)
            roles = self._role_rows(conn)
            if role not in roles:
                log.warning("%s: role %s does not exist; nothing to revoke", self._name(), role)
                return
            if roles[role][0] and not roles.get(sibling, (False, False))[0]:
                raise IssuerError(
                    f"{self._name()}: {sibling} cannot log in, so revoking {role} would leave "
                    f"no login role for {self.base_role}. Mint a new credential first"
                )
            verifier = self._verifier(conn, role, password)
            hidden.append(verifier)
            # A random password nobody knows as well as NOLOGIN, so that re-enabling LOGIN by
            # hand does not bring the old credential back.
            conn.execute(
                sql.SQL("ALTER ROLE {} WITH NOLOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(verifier)
                )
            )

        self._call("revoke", work, hidden=hidden)
        log.info("%s: %s is NOLOGIN with a random password", self._name(), role)

    def usage(self, key_id: str | None) -> UsageEvidence:
        if key_id is None:
            return UsageEvidence(in_use=None, summary="no previous role to check")
        role = self._check_role(key_id)

        def work(
            conn: Conn,
        ) -> tuple[list[Session], tuple[bool, bool] | None]:
            return sessions_of(conn, role), self._role_rows(conn).get(role)

        sessions, row = self._call("usage", work)
        login = "no such role" if row is None else (
            "can log in" if row[0] else "cannot log in (NOLOGIN)")
        details = (f"{role} {login}", *(s.describe() for s in sessions))
        if not sessions:
            return UsageEvidence(
                in_use=False,
                summary=f"no sessions use {role} now",
                details=details,
            )
        plural = "s" if len(sessions) != 1 else ""
        verb = "uses" if len(sessions) == 1 else "use"
        return UsageEvidence(
            in_use=True,
            summary=f"{len(sessions)} session{plural} still {verb} {role} ({who(sessions)})",
            details=details,
            seen=tuple(s.seen(role) for s in sessions),
        )

    # --- explicit admin action --------------------------------------------------------------

    def sessions(self, role: str) -> list[Session]:
        """Live sessions of ``role`` (one of the two login roles)."""
        checked = self._check_role(role)
        return self._call("sessions", lambda conn: sessions_of(conn, checked))

    def terminate_sessions(self, role: str) -> int:
        """End every session of ``role`` (``pg_terminate_backend``); returns how many ended.
        Revocation alone leaves them open: PostgreSQL checks LOGIN only when connecting."""
        checked = self._check_role(role)

        def work(conn: Conn) -> int:
            rows = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE usename = %s AND pid <> pg_backend_pid()",
                (checked,),
            ).fetchall()
            return sum(1 for (ended,) in rows if ended)

        ended = self._call("terminate_sessions", work)
        log.warning("%s: terminated %d session(s) of %s", self._name(), ended, checked)
        return ended

    # --- helpers ----------------------------------------------------------------------------

    def _name(self) -> str:
        return f"{KIND} issuer ({self._where}, role {self.base_role})"

    def _check_role(self, key_id: str) -> str:
        # Only our two login roles: a bad key id must never NOLOGIN or kill someone else.
        if key_id not in self.roles:
            raise IssuerError(
                f"{self._name()}: {key_id!r} is not {self.roles[0]} or {self.roles[1]}"
            )
        return key_id

    def _require_roles(self, roles: dict[str, tuple[bool, bool]]) -> None:
        missing = [r for r in (self.base_role, *self.roles) if r not in roles]
        if missing:
            raise IssuerError(
                f"{self._name()}: role(s) {', '.join(missing)} do not exist; run the one-time "
                "setup (PostgresRoleIssuer.ensure_roles) and grant the group role its privileges"
            )
        outside = [r for r in self.roles if not roles[r][1]]
        if outside:
            raise IssuerError(
                f"{self._name()}: {', '.join(outside)} not a member of {self.base_role}; its "
                "credential would lack the group's privileges. Run ensure_roles"
            )

    def _role_rows(self, conn: Conn) -> dict[str, tuple[bool, bool]]:
        """name -> (can log in, member of the group role) for the group and both login roles."""
        rows = conn.execute(
            "SELECT r.rolname, r.rolcanlogin, EXISTS ("
            "  SELECT 1 FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            "  WHERE m.member = r.oid AND g.rolname = %s)"
            " FROM pg_roles r WHERE r.rolname = ANY(%s)",
            (self.base_role, [self.base_role, *self.roles]),
        ).fetchall()
        return {str(name): (bool(login), bool(member)) for name, login, member in rows}

    @staticmethod
    def _verifier(conn: Conn, role: str, password: str) -> str:
        # Computed by libpq on this side; the plaintext password never goes over the wire.
        return conn.pgconn.encrypt_password(
            password.encode(), role.encode(), b"scram-sha-256"
        ).decode()

    def _lock(self, conn: Conn) -> None:
        # Serialises rotabot replicas working on the same role pair (held until commit).
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"rotabot:{KIND}:{self.base_role}",)
        )

    def _call(
        self,
        action: str,
        work: Callable[[Conn], T],
        hidden: Iterable[str] = (),
    ) -> T:
        """Run ``work`` in one transaction on a short-lived admin connection; psycopg errors
        become scrubbed :class:`IssuerError`."""
        failure = ""
        try:
            with psycopg.connect(self._conninfo) as conn, conn.transaction():
                return work(conn)
        except psycopg.Error as exc:
            # A server error's text can quote the statement (LINE 1: ALTER ROLE ...).
            failure = _scrub(f"{type(exc).__name__}: {exc}", (*hidden, self._admin_secret))
            if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                failure += (
                    " (the admin role needs CREATEROLE, pg_read_all_stats and pg_signal_backend)"
                )
        # Raised outside the `except` block so the original exception is not kept as
        # __context__, where a logged traceback would print its unscrubbed message.
        raise IssuerError(f"{self._name()}: {action} failed: {failure}")


def sessions_of(conn: Conn, user: str) -> list[Session]:
    """The sessions logged in as ``user`` now (pg_stat_activity), oldest first; the
    openbao-database issuer reads its evidence the same way."""
    rows = conn.execute(
        "SELECT pid, host(client_addr), application_name, backend_start, state"
        " FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()"
        " ORDER BY backend_start",
        (user,),
    ).fetchall()
    return [
        Session(
            pid=int(str(pid)),
            client_addr=str(addr) if addr is not None else None,
            application_name=str(app or ""),
            backend_start=start if isinstance(start, datetime) else None,
            state=str(state) if state is not None else None,
        )
        for pid, addr, app, start, state in rows
    ]


def who(sessions: list[Session]) -> str:
    """The applications and addresses of ``sessions``, for the gate's words."""
    apps = sorted({s.application_name for s in sessions if s.application_name})
    addrs = sorted({s.client_addr for s in sessions if s.client_addr})
    return ", ".join([*apps, *addrs]) or "no application_name or address visible"
