"""The postgres-role issuer against a real PostgreSQL: alternating roles, usage, revoke, leaks."""

from __future__ import annotations

import secrets
import time
import traceback
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from servers import PostgresServer

from adapters.postgres_role import PostgresRoleIssuer
from bot.domain.credentials import IssuerError, Minted
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer

pytestmark = pytest.mark.postgres

CANARY = "CANARY-pg-5d1e7b2a-never-show-me"


def superuser(server: PostgresServer) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(server.dsn, autocommit=True)


def login_dsn(server: PostgresServer, user: str, password: str, app: str = "test") -> str:
    # TCP to 127.0.0.1: the fixture's pg_hba.conf asks for scram-sha-256 there.
    return (
        f"host={server.host} port={server.port} dbname=postgres user={user} "
        f"password={password} application_name={app} connect_timeout=10"
    )


def login_error(server: PostgresServer, material: SecretMaterial) -> str | None:
    """None when ``material`` logs in, else the server's reason."""
    fields = material.reveal()
    try:
        with psycopg.connect(login_dsn(server, fields["username"], fields["password"])) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (fields["username"],)
        return None
    except psycopg.OperationalError as exc:
        return str(exc)


def can_login(server: PostgresServer, role: str) -> bool:
    with superuser(server) as conn:
        row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
        return bool(row.fetchone() == (True,))


def wait_for_no_sessions(issuer: PostgresRoleIssuer, role: str) -> None:
    """A backend leaves pg_stat_activity a moment after its client disconnects or it is
    terminated; poll instead of racing it."""
    deadline = time.monotonic() + 30
    while issuer.sessions(role) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert issuer.sessions(role) == []


def formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


@pytest.fixture(scope="module")
def admin_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    """A non-superuser admin with exactly the rights docs/issuers.md asks for."""
    name = f"rotabot_admin_{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    with superuser(postgres_server) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("GRANT pg_read_all_stats, pg_signal_backend TO {}").format(
                sql.Identifier(name)
            )
        )
    yield login_dsn(postgres_server, name, password, app="rotabot-test")
    with superuser(postgres_server) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def base_role(postgres_server: PostgresServer) -> Iterator[str]:
    base = f"app_{secrets.token_hex(3)}"
    yield base
    with superuser(postgres_server) as conn:
        for role in (f"{base}_a", f"{base}_b"):
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (role,),
            )
        conn.execute(
            sql.SQL("DROP ROLE IF EXISTS {}, {}, {}").format(
                sql.Identifier(f"{base}_a"), sql.Identifier(f"{base}_b"), sql.Identifier(base)
            )
        )


@pytest.fixture
def issuer(admin_dsn: str, base_role: str) -> PostgresRoleIssuer:
    issuer = PostgresRoleIssuer(admin_dsn, base_role)
    issuer.ensure_roles()
    return issuer


def material(minted: Minted) -> SecretMaterial:
    assert minted.material is not None
    return minted.material


def test_fixture_enforces_passwords_for_role_logins(
    postgres_server: PostgresServer, issuer: PostgresRoleIssuer
) -> None:
    """Without password auth on host connections, the login checks below would prove nothing."""
    minted = issuer.mint(None)
    wrong = SecretMaterial({"username": minted.key_id or "", "password": "wrong-password"})
    assert "password authentication failed" in (login_error(postgres_server, wrong) or "")
    assert login_error(postgres_server, material(minted)) is None


def test_ensure_roles_is_idempotent(
    postgres_server: PostgresServer, admin_dsn: str, base_role: str
) -> None:
    issuer = PostgresRoleIssuer(admin_dsn, base_role)
    assert isinstance(issuer, Issuer)
    assert issuer.kind == "postgres-role" and issuer.keeps_both_valid is True

    changed = issuer.ensure_roles()
    assert len(changed) == 3
    assert issuer.ensure_roles() == []
    with superuser(postgres_server) as conn:
        rows = conn.execute(
            "SELECT r.rolname, r.rolcanlogin, "
            "  ARRAY(SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
            "        WHERE m.member = r.oid)"
            " FROM pg_roles r WHERE r.rolname LIKE %s ORDER BY 1",
            (f"{base_role}%",),
        ).fetchall()
    assert rows == [
        (base_role, False, []),
        (f"{base_role}_a", False, [base_role]),
        (f"{base_role}_b", False, [base_role]),
    ]


def test_overlap_then_revoke(postgres_server: PostgresServer, issuer: PostgresRoleIssuer) -> None:
    a, b = issuer.roles
    first = issuer.mint(None)
    assert (first.key_id, first.previous_key_id) == (a, None)
    assert material(first).reveal()["username"] == a
    # b was never given LOGIN: only a logs in.
    assert login_error(postgres_server, material(first)) is None

    second = issuer.mint(material(first))
    assert (second.key_id, second.previous_key_id) == (b, a)
    assert material(second).reveal()["username"] == b

    # Overlap: both roles log in, each with its own password.
    assert login_error(postgres_server, material(first)) is None
    assert login_error(postgres_server, material(second)) is None

    issuer.revoke(a)
    # The server checks the password (now a random one) before the LOGIN attribute.
    assert "password authentication failed" in (
        login_error(postgres_server, material(first)) or ""
    )
    assert can_login(postgres_server, a) is False
    assert login_error(postgres_server, material(second)) is None

    issuer.revoke(a)  # idempotent
    assert login_error(postgres_server, material(second)) is None

    # Re-enabling LOGIN by hand does not bring the old password back: revoke replaced it.
    with superuser(postgres_server) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(a)))
    assert "password authentication failed" in (
        login_error(postgres_server, material(first)) or ""
    )


def test_new_role_has_the_group_privileges(
    postgres_server: PostgresServer, issuer: PostgresRoleIssuer, base_role: str
) -> None:
    db_url = postgres_server.new_database("pgrole")
    dbname = db_url.rsplit("/", 1)[1]
    owner_dsn = postgres_server.dsn_for(dbname)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int)")
        conn.execute(sql.SQL("GRANT SELECT, INSERT ON items TO {}").format(
            sql.Identifier(base_role)))
    try:
        fields = material(issuer.mint(None)).reveal()
        dsn = login_dsn(postgres_server, fields["username"], fields["password"])
        with psycopg.connect(dsn.replace("dbname=postgres", f"dbname={dbname}")) as conn:
            conn.execute("INSERT INTO items VALUES (1)")
            assert conn.execute("SELECT count(*) FROM items").fetchone() == (1,)
    finally:
        postgres_server.drop_database(dbname)


def test_usage_shows_live_sessions_until_terminated(
    postgres_server: PostgresServer, issuer: PostgresRoleIssuer
) -> None:
    a, _ = issuer.roles
    first = issuer.mint(None)
    fields = material(first).reveal()
    old_session = psycopg.connect(
        login_dsn(postgres_server, a, fields["password"], app="ingest-worker")
    )
    try:
        second = issuer.mint(material(first))
        evidence = issuer.usage(second.previous_key_id)
        assert evidence.in_use is True
        assert evidence.summary == f"1 session still uses {a} (ingest-worker, 127.0.0.1)"
        assert any("ingest-worker from 127.0.0.1" in d for d in evidence.details)
        assert f"{a} can log in" in evidence.details
        # Who, for mapping to a catalog consumer's identity: address, application_name, role.
        [seen] = evidence.seen
        assert (seen.address, seen.application_name, seen.user, seen.at) == (
            "127.0.0.1", "ingest-worker", a, None)

        issuer.revoke(a)
        # PostgreSQL checks LOGIN only when connecting: the open session keeps working.
        assert old_session.execute("SELECT current_user").fetchone() == (a,)
        evidence = issuer.usage(a)
        assert evidence.in_use is True
        assert f"{a} cannot log in (NOLOGIN)" in evidence.details
        assert [s.application_name for s in issuer.sessions(a)] == ["ingest-worker"]

        assert issuer.terminate_sessions(a) == 1
        with pytest.raises(psycopg.OperationalError):
            old_session.execute("SELECT 1")
        wait_for_no_sessions(issuer, a)
        evidence = issuer.usage(a)
        assert evidence.in_use is False
        assert evidence.summary == f"no sessions use {a} now"
        assert issuer.terminate_sessions(a) == 0
        # The new role was not touched.
        assert login_error(postgres_server, material(second)) is None
    finally:
        old_session.close()


def test_alternates_a_b_a(postgres_server: PostgresServer, issuer: PostgresRoleIssuer) -> None:
    a, b = issuer.roles
    first = issuer.mint(None)
    second = issuer.mint(material(first))
    issuer.revoke(second.previous_key_id)
    third = issuer.mint(material(second))

    assert (third.key_id, third.previous_key_id) == (a, b)
    assert material(third).reveal()["password"] != material(first).reveal()["password"]
    assert login_error(postgres_server, material(third)) is None
    assert login_error(postgres_server, material(second)) is None  # overlap again
    # a's first password is gone for good.
    assert "password authentication failed" in (
        login_error(postgres_server, material(first)) or ""
    )

    issuer.revoke(third.previous_key_id)
    assert "password authentication failed" in (
        login_error(postgres_server, material(second)) or ""
    )
    assert can_login(postgres_server, b) is False
    assert login_error(postgres_server, material(third)) is None


def test_mint_refuses_to_reset_a_role_still_in_use(
    postgres_server: PostgresServer, issuer: PostgresRoleIssuer
) -> None:
    """a -> b never revoked, a consumer still on a: a further rotation from b would reset a's
    password under that consumer. It must refuse instead."""
    a, _ = issuer.roles
    first = issuer.mint(None)
    second = issuer.mint(material(first))
    straggler = psycopg.connect(
        login_dsn(postgres_server, a, material(first).reveal()["password"], app="straggler")
    )
    try:
        with pytest.raises(IssuerError, match=rf"{a} can still log in and has 1 live session"):
            issuer.mint(material(second))
        assert login_error(postgres_server, material(first)) is None
    finally:
        straggler.close()
    wait_for_no_sessions(issuer, a)
    # Once nobody uses a, the next rotation may reuse it (e.g. after a rollback).
    third = issuer.mint(material(second))
    assert third.key_id == a
    assert login_error(postgres_server, material(third)) is None


def test_revoke_refuses_to_leave_no_login_role(
    postgres_server: PostgresServer, issuer: PostgresRoleIssuer
) -> None:
    first = issuer.mint(None)
    with pytest.raises(IssuerError, match="would leave no login role"):
        issuer.revoke(first.key_id)
    assert login_error(postgres_server, material(first)) is None


def test_foreign_roles_are_never_touched(
    postgres_server: PostgresServer, issuer: PostgresRoleIssuer
) -> None:
    for action in (issuer.revoke, issuer.terminate_sessions, issuer.usage):
        with pytest.raises(IssuerError, match="is not"):
            action("postgres")
    with pytest.raises(IssuerError, match="neither"):
        issuer.mint(SecretMaterial({"username": "postgres", "password": "x"}))
    issuer.revoke(None)  # no previous role: nothing to do
    assert issuer.usage(None).in_use is None


def test_missing_roles_name_the_setup_step(admin_dsn: str, base_role: str) -> None:
    with pytest.raises(IssuerError, match=r"do not exist; run the one-time setup") as info:
        PostgresRoleIssuer(admin_dsn, base_role).mint(None)
    assert "ensure_roles" in str(info.value)


def test_canary_password_never_in_errors_or_server_log(
    postgres_server: PostgresServer, issuer: PostgresRoleIssuer, admin_dsn: str, base_role: str
) -> None:
    """Even with every statement logged, the server sees a SCRAM verifier, never the password;
    and a failing ALTER ROLE's error carries neither."""
    admin_user = psycopg.conninfo.conninfo_to_dict(admin_dsn)["user"]
    with superuser(postgres_server) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} SET log_statement = 'all'").format(
                sql.Identifier(str(admin_user))
            )
        )
    try:
        canary_issuer = PostgresRoleIssuer(admin_dsn, base_role, password_factory=lambda: CANARY)
        minted = canary_issuer.mint(None)
        assert login_error(postgres_server, material(minted)) is None  # it is the password
        canary_issuer.revoke(canary_issuer.mint(material(minted)).previous_key_id)
    finally:
        with superuser(postgres_server) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} RESET log_statement").format(
                    sql.Identifier(str(admin_user))
                )
            )

    # A failing ALTER ROLE: an admin without CREATEROLE. The server logs the failed statement
    # (log_min_error_statement = error) and psycopg's message may quote it.
    weak = f"weak_{secrets.token_hex(3)}"
    with superuser(postgres_server) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(weak), sql.Literal(CANARY + "-admin")
            )
        )
    try:
        weak_issuer = PostgresRoleIssuer(
            login_dsn(postgres_server, weak, CANARY + "-admin"), base_role,
            password_factory=lambda: CANARY,
        )
        with pytest.raises(IssuerError, match="mint failed: InsufficientPrivilege") as info:
            weak_issuer.mint(None)
        assert "CREATEROLE" in str(info.value)
        assert CANARY not in formatted(info.value)
        assert info.value.__context__ is None and info.value.__cause__ is None
    finally:
        with superuser(postgres_server) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(weak)))

    server_log = postgres_server.log_path.read_text(errors="replace")
    # The statements were logged (so the check below is not vacuous)...
    assert f'ALTER ROLE "{base_role}_a" WITH LOGIN PASSWORD \'SCRAM-SHA-256$' in server_log
    assert "must be superuser" in server_log or "permission denied" in server_log
    # ...but only with a verifier.
    assert CANARY not in server_log.replace(CANARY + "-admin", "")


def test_accepts_a_url_as_the_admin_dsn(
    postgres_server: PostgresServer, issuer: PostgresRoleIssuer, base_role: str
) -> None:
    # postgres_server.admin_url is the SQLAlchemy form, postgresql+psycopg://...
    for url in (postgres_server.admin_url, postgres_server.admin_url.replace("+psycopg", "")):
        assert PostgresRoleIssuer(url, base_role).usage(f"{base_role}_a").in_use is False


def test_bad_admin_credential_is_a_clear_error(
    postgres_server: PostgresServer, base_role: str
) -> None:
    dsn = login_dsn(postgres_server, "postgres", CANARY)
    with pytest.raises(IssuerError, match="password authentication failed") as info:
        PostgresRoleIssuer(dsn, base_role).usage(f"{base_role}_a")
    assert CANARY not in formatted(info.value)
    assert CANARY not in repr(PostgresRoleIssuer(dsn, base_role))
    with pytest.raises(IssuerError, match="not a valid libpq DSN") as info:
        PostgresRoleIssuer(f"host=x password={CANARY} oops", base_role)
    assert CANARY not in formatted(info.value)
