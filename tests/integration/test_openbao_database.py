"""The openbao-database issuer on a real OpenBao dev server (its database secrets engine) and a
real PostgreSQL: alternating static roles, overlap, revoke, usage evidence, errors.

The issuer runs with a token holding exactly the capabilities docs/issuers.md lists."""

from __future__ import annotations

import time
import traceback
from collections.abc import Iterator

import hvac
import psycopg
import pytest
from harness.openbao_database import EngineWorld, database_engine
from servers import OpenBaoServer, PostgresServer

from adapters.openbao_database import OpenBaoDatabaseIssuer
from bot import catalog
from bot.domain.credentials import IssuerError, Minted
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer

pytestmark = [pytest.mark.openbao, pytest.mark.postgres]


def formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def fields(minted: Minted) -> tuple[str, str]:
    assert minted.material is not None
    values = minted.material.reveal()
    assert set(values) == {"username", "password"}
    return values["username"], values["password"]


def wait_for_no_sessions(w: EngineWorld, user: str) -> None:
    """A backend leaves pg_stat_activity a moment after its client disconnects."""
    deadline = time.monotonic() + 30
    while w.sessions(user) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert w.sessions(user) == 0


@pytest.fixture
def engine(openbao_server: OpenBaoServer, postgres_server: PostgresServer) -> Iterator[EngineWorld]:
    w = database_engine(openbao_server.url, openbao_server.token, postgres_server.host,
                        postgres_server.port, postgres_server.dsn)
    yield w
    w.teardown()


def make_issuer(w: EngineWorld, env: dict[str, str], **overrides: object) -> OpenBaoDatabaseIssuer:
    config = catalog.OpenBaoDatabaseIssuer.model_validate({
        "kind": "openbao-database", "url": str(w.bao.url), "token_env": "DB_TOKEN",
        "mount": w.mount, "roles": list(w.roles), **overrides})
    return OpenBaoDatabaseIssuer.from_config(config, env=env)


@pytest.fixture
def issuer(engine: EngineWorld) -> OpenBaoDatabaseIssuer:
    """With usage evidence (a monitoring user's URL in PG_USAGE_URL)."""
    return make_issuer(engine, {"DB_TOKEN": engine.token(), "PG_USAGE_URL": engine.monitor_url()},
                       usage_url_env="PG_USAGE_URL")


def test_mint_alternates_and_both_credentials_log_in(
    engine: EngineWorld, issuer: OpenBaoDatabaseIssuer
) -> None:
    assert isinstance(issuer, Issuer)
    assert issuer.kind == "openbao-database" and issuer.keeps_both_valid is True
    a, b = engine.roles
    user_a, user_b = engine.users
    # What an operator puts in the store when taking over: a's credential from the engine.
    taken_over = engine.creds(a)
    assert taken_over[0] == user_a and engine.login_ok(*taken_over)

    first = issuer.mint(None)  # an empty store: b, and nothing rotabot would revoke
    assert (first.key_id, first.previous_key_id) == (b, None)
    assert fields(first)[0] == user_b
    assert fields(first) == engine.creds(b)
    assert engine.login_ok(*taken_over)  # a was left alone
    # The rotation restarted b's rotation_period (8760h): the engine leaves it alone for a year.
    assert engine.ttl(b) > 8759 * 3600

    second = issuer.mint(SecretMaterial(dict(zip(("username", "password"), taken_over,
                                                 strict=True))))
    assert (second.key_id, second.previous_key_id) == (b, a)
    assert fields(second)[0] == user_b and fields(second) != fields(first)
    assert not engine.login_ok(*fields(first))  # b's earlier password was rotated away
    # Overlap: the old (a) and new (b) credentials both log in.
    assert engine.login_ok(*taken_over) and engine.login_ok(*fields(second))

    wait_for_no_sessions(engine, user_a)
    third = issuer.mint(second.material)
    assert (third.key_id, third.previous_key_id) == (a, b)
    assert fields(third)[0] == user_a
    assert not engine.login_ok(*taken_over)
    assert engine.login_ok(*fields(second)) and engine.login_ok(*fields(third))


def test_revoke_makes_the_old_password_fail_and_is_idempotent(
    engine: EngineWorld, issuer: OpenBaoDatabaseIssuer
) -> None:
    a, b = engine.roles
    old = engine.creds(a)
    minted = issuer.mint(SecretMaterial({"username": old[0], "password": old[1]}))
    assert minted.previous_key_id == a
    assert engine.login_ok(*old) and engine.login_ok(*fields(minted))

    issuer.revoke(a)
    assert not engine.login_ok(*old)
    assert engine.login_ok(*fields(minted))
    # The engine still manages a: it holds a fresh password nobody was given.
    assert engine.creds(a)[1] != old[1] and engine.login_ok(*engine.creds(a))

    issuer.revoke(a)  # idempotent: still not the old password, b untouched
    assert not engine.login_ok(*old)
    assert engine.login_ok(*fields(minted))
    issuer.revoke(None)  # a first rotation has nothing to revoke
    assert engine.creds(b) == fields(minted)


def test_usage_counts_sessions_of_the_old_user(
    engine: EngineWorld, issuer: OpenBaoDatabaseIssuer
) -> None:
    a, _ = engine.roles
    user_a = engine.users[0]
    old = engine.creds(a)
    minted = issuer.mint(SecretMaterial({"username": old[0], "password": old[1]}))
    wait_for_no_sessions(engine, user_a)
    assert issuer.usage(a).in_use is False
    assert issuer.usage(a).summary == f"no sessions use {user_a} now"

    session = psycopg.connect(engine.dsn(*old, app="ingest-worker"))
    try:
        evidence = issuer.usage(minted.previous_key_id)
        assert evidence.in_use is True
        assert evidence.summary == f"1 session still uses {user_a} (ingest-worker, 127.0.0.1)"
        assert f"static role {a} is PostgreSQL user {user_a}" in evidence.details
        assert any("ingest-worker from 127.0.0.1" in d for d in evidence.details)

        issuer.revoke(a)
        # PostgreSQL checks the password only when connecting: the session keeps working.
        assert session.execute("SELECT current_user").fetchone() == (user_a,)
        assert issuer.usage(a).in_use is True
        # And a further rotation from b refuses to rotate a under that session.
        with pytest.raises(IssuerError, match=rf"{a} \(user {user_a}\) has 1 live session"):
            issuer.mint(minted.material)
    finally:
        session.close()
    wait_for_no_sessions(engine, user_a)
    assert issuer.usage(a).in_use is False
    assert issuer.usage(None).in_use is None


def test_without_usage_url_the_evidence_says_it_cannot_tell(engine: EngineWorld) -> None:
    issuer = make_issuer(engine, {"DB_TOKEN": engine.token()})
    a, b = engine.roles
    session = psycopg.connect(engine.dsn(*engine.creds(a), app="ingest-worker"))
    try:
        evidence = issuer.usage(a)
    finally:
        session.close()
    assert evidence.in_use is None
    assert evidence.summary.startswith(f"cannot tell whether {a} is still in use")
    assert "usage_url_env" in evidence.summary
    assert issuer.mint(None).key_id == b  # minting needs no usage URL


def test_foreign_roles_are_never_rotated(
    engine: EngineWorld, issuer: OpenBaoDatabaseIssuer
) -> None:
    for action in (issuer.revoke, issuer.usage):
        with pytest.raises(IssuerError, match="is not static role"):
            action("postgres")
    with pytest.raises(IssuerError, match="belongs to neither static role"):
        issuer.mint(SecretMaterial({"username": "postgres", "password": "x"}))


def test_errors_name_mount_role_and_status_never_a_password(
    engine: EngineWorld, openbao_server: OpenBaoServer
) -> None:
    a, b = engine.roles
    # Canaries: the passwords the engine holds now, and the bot's own token.
    canaries = [engine.creds(a)[1], engine.creds(b)[1], "canary-token-" + a]
    current = SecretMaterial(dict(zip(("username", "password"), engine.creds(a), strict=True)))
    messages: list[str] = []

    wrong_token = make_issuer(engine, {"DB_TOKEN": canaries[2]})
    with pytest.raises(IssuerError) as info:
        wrong_token.mint(current)
    assert f"mount {engine.mount}" in str(info.value)
    assert f"{engine.mount}/static-creds/{a}: HTTP 403: permission denied" in str(info.value)
    assert f"update on {engine.mount}/rotate-role/*" in str(info.value)
    messages.append(formatted(info.value))
    assert info.value.__context__ is None and info.value.__cause__ is None

    # A token that may read but not rotate.
    engine.bao.sys.create_or_update_policy(
        name=f"read-{engine.mount}",
        policy=f'path "{engine.mount}/static-creds/*" {{ capabilities = ["read"] }}')
    reader = engine.bao.auth.token.create(policies=[f"read-{engine.mount}"],
                                          ttl="5m")["auth"]["client_token"]
    with pytest.raises(IssuerError, match=rf"revoke failed on {engine.mount}/rotate-role/{a}: "
                                          "HTTP 403") as info:
        make_issuer(engine, {"DB_TOKEN": reader}).revoke(a)
    messages.append(formatted(info.value))

    unknown = make_issuer(engine, {"DB_TOKEN": openbao_server.token}, roles=[a, "nope"])
    with pytest.raises(IssuerError, match=rf"rotate-role/nope: HTTP 400: is nope a static role "
                                          rf"on {engine.mount}\?") as info:
        unknown.mint(current)  # current is a's user: the standby is nope
    messages.append(formatted(info.value))
    with pytest.raises(IssuerError, match="static-creds/nope: HTTP 400") as info:
        unknown.mint(SecretMaterial({"username": "someone-else", "password": "x"}))
    messages.append(formatted(info.value))
    with pytest.raises(IssuerError, match="rotate-role/nope: HTTP 400") as info:
        unknown.revoke("nope")
    messages.append(formatted(info.value))

    no_mount = make_issuer(engine, {"DB_TOKEN": openbao_server.token}, mount="nowhere")
    with pytest.raises(IssuerError, match="HTTP 404: is a database secrets engine mounted at "
                                          "nowhere") as info:
        no_mount.revoke(a)
    messages.append(formatted(info.value))

    unreachable = make_issuer(engine, {"DB_TOKEN": openbao_server.token},
                              url="http://127.0.0.1:9")
    with pytest.raises(IssuerError, match="cannot reach it") as info:
        unreachable.revoke(a)
    messages.append(formatted(info.value))

    # The usage URL's password, in a URL that cannot log in (wrong user).
    bad_usage = "postgresql://nobody:" + canaries[2] + f"@{engine.host}:{engine.port}/postgres"
    with pytest.raises(IssuerError, match="usage failed reading pg_stat_activity") as info:
        make_issuer(engine, {"DB_TOKEN": openbao_server.token, "U": bad_usage},
                    usage_url_env="U").usage(a)
    messages.append(formatted(info.value))
    assert info.value.__context__ is None

    with pytest.raises(IssuerError, match="environment variable DB_TOKEN is not set"):
        make_issuer(engine, {})
    with pytest.raises(IssuerError, match=r"environment variable U .* is not set"):
        make_issuer(engine, {"DB_TOKEN": "x"}, usage_url_env="U")

    # Nothing was rotated by the failures, and no message carries a password or the token.
    assert [engine.creds(a)[1], engine.creds(b)[1]] == canaries[:2]
    for message in messages:
        for canary in canaries:
            assert canary not in message
    assert canaries[2] not in repr(make_issuer(engine, {"DB_TOKEN": canaries[2]}))


def test_the_token_needs_nothing_else(engine: EngineWorld) -> None:
    """The documented capabilities are enough for a whole rotation and revocation."""
    token = engine.token()
    issuer = make_issuer(engine, {"DB_TOKEN": token})
    first = issuer.mint(None)
    second = issuer.mint(first.material)
    issuer.revoke(second.previous_key_id)
    assert not engine.login_ok(*fields(first)) and engine.login_ok(*fields(second))
    # ...and it cannot read the engine's configuration (the admin password) or roles.
    limited = hvac.Client(url=str(engine.bao.url), token=token)
    for path in (f"{engine.mount}/config/pg", f"{engine.mount}/static-roles/{engine.roles[0]}"):
        with pytest.raises(hvac.exceptions.Forbidden):
            limited.read(path)
