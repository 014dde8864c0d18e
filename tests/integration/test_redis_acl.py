"""The redis-acl issuer against a real redis-server: overlap, revoke, open connections, leaks."""

from __future__ import annotations

import traceback
from collections.abc import Iterator

import pytest
import redis
from servers import RedisServer

from adapters.redis_acl import RedisAclIssuer, password_hash
from bot.domain.credentials import IssuerError
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer

pytestmark = pytest.mark.redis

USER = "app"
INITIAL = "initial-password-0123456789"
CANARY = "CANARY-redis-7f3a9c1e-never-show-me"


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def app_user(admin: redis.Redis) -> SecretMaterial:
    """An ACL user as an operator would create it, with one password, as the store holds it."""
    admin.execute_command("ACL", "SETUSER", USER, "on", f">{INITIAL}", "~*", "+@all")
    return SecretMaterial({"username": USER, "password": INITIAL})


def connect(server: RedisServer, password: str, user: str = USER) -> redis.Redis:
    # No retries: a refused AUTH must surface at once as AuthenticationError.
    return redis.Redis(
        host=server.host, port=server.port, username=user, password=password,
        decode_responses=True, retry=None,
    )


def authenticates(server: RedisServer, password: str, user: str = USER) -> bool:
    client = connect(server, password, user)
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return False
    finally:
        client.close()


def formatted(exc: BaseException) -> str:
    """Everything a logged traceback of ``exc`` would print, chained exceptions included."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_is_an_issuer_that_keeps_both_valid(redis_url: str) -> None:
    issuer = RedisAclIssuer(redis_url, USER)
    assert isinstance(issuer, Issuer)
    assert issuer.kind == "redis-acl"
    assert issuer.keeps_both_valid is True
    # The admin URL carries the admin password; the repr must not.
    server_password = redis_url.split(":")[2].split("@")[0]
    assert server_password not in repr(issuer)


def test_overlap_then_revoke_leaves_only_the_new_password(
    redis_server: RedisServer, redis_url: str, app_user: SecretMaterial, admin: redis.Redis
) -> None:
    issuer = RedisAclIssuer(redis_url, USER)
    minted = issuer.mint(app_user)

    assert minted.material is not None
    new = minted.material.reveal()
    assert new["username"] == USER and new["password"] != INITIAL
    assert minted.key_id == password_hash(new["password"])
    assert minted.previous_key_id == password_hash(INITIAL)
    # Redis stores exactly these hashes: the key ids are Redis's own names for the passwords.
    assert sorted(admin.acl_getuser(USER)["passwords"]) == sorted(
        [minted.key_id, minted.previous_key_id]
    )

    # Overlap: both passwords authenticate as the user.
    assert authenticates(redis_server, INITIAL)
    assert authenticates(redis_server, new["password"])

    issuer.revoke(minted.previous_key_id)

    assert not authenticates(redis_server, INITIAL)
    assert authenticates(redis_server, new["password"])
    assert admin.acl_getuser(USER)["passwords"] == [minted.key_id]
    # Permissions were not touched: the new password can still do what the user could.
    client = connect(redis_server, new["password"])
    try:
        client.set("k", "v")
        assert client.get("k") == "v"
    finally:
        client.close()


def test_revoke_is_idempotent(
    redis_server: RedisServer, redis_url: str, app_user: SecretMaterial
) -> None:
    issuer = RedisAclIssuer(redis_url, USER)
    minted = issuer.mint(app_user)
    assert minted.material is not None and minted.previous_key_id is not None

    issuer.revoke(minted.previous_key_id)
    issuer.revoke(minted.previous_key_id)  # absent now: no error, no change
    issuer.revoke(minted.previous_key_id.upper())

    assert authenticates(redis_server, minted.material.reveal()["password"])
    assert not authenticates(redis_server, INITIAL)


def test_revoke_none_is_a_no_op(
    redis_server: RedisServer, redis_url: str, app_user: SecretMaterial
) -> None:
    issuer = RedisAclIssuer(redis_url, USER)
    issuer.revoke(None)  # a first rotation has no previous key id
    assert authenticates(redis_server, INITIAL)


def test_two_rotations_in_a_row(
    redis_server: RedisServer, redis_url: str, app_user: SecretMaterial
) -> None:
    issuer = RedisAclIssuer(redis_url, USER)
    first = issuer.mint(app_user)
    assert first.material is not None
    issuer.revoke(first.previous_key_id)
    second = issuer.mint(first.material)
    assert second.material is not None
    assert second.previous_key_id == first.key_id
    issuer.revoke(second.previous_key_id)

    assert not authenticates(redis_server, INITIAL)
    assert not authenticates(redis_server, first.material.reveal()["password"])
    assert authenticates(redis_server, second.material.reveal()["password"])


def test_refuses_to_remove_the_last_password(
    redis_server: RedisServer, redis_url: str, app_user: SecretMaterial
) -> None:
    issuer = RedisAclIssuer(redis_url, USER)
    with pytest.raises(IssuerError, match="only password"):
        issuer.revoke(password_hash(INITIAL))
    assert authenticates(redis_server, INITIAL)


def test_open_connection_survives_revoke_until_disconnected(
    redis_server: RedisServer, redis_url: str, app_user: SecretMaterial, admin: redis.Redis
) -> None:
    """Redis checks passwords only at AUTH: removing one leaves connections that used it open
    and fully working. Closing them is the explicit admin action disconnect_sessions()."""
    old_conn = connect(redis_server, INITIAL)
    try:
        old_conn.set("before", "1")
        issuer = RedisAclIssuer(redis_url, USER)
        minted = issuer.mint(app_user)
        issuer.revoke(minted.previous_key_id)

        assert not authenticates(redis_server, INITIAL)  # a new AUTH with it fails...
        old_conn.set("after", "2")  # ...but the connection that used it still works
        assert old_conn.get("after") == "2"
        assert old_conn.acl_whoami() == USER

        evidence = issuer.usage(minted.previous_key_id)
        assert evidence.in_use is None  # Redis cannot tell which password a connection used
        assert "1 connection authenticated as app" in evidence.summary
        assert any("already removed" in d for d in evidence.details)

        # Connections younger than this were opened after the revocation: spared.
        assert issuer.disconnect_sessions(min_age_seconds=3600) == 0
        assert old_conn.get("after") == "2"

        assert issuer.disconnect_sessions() == 1
        with pytest.raises(redis.AuthenticationError):
            # redis-py reconnects with the old password, which Redis now refuses.
            old_conn.get("after")
        assert "0 connections authenticated as app" in issuer.usage(None).summary
        # The admin connection (another user) was not touched.
        assert admin.ping()
    finally:
        old_conn.close()


def test_usage_during_overlap_says_it_cannot_tell(
    redis_server: RedisServer, redis_url: str, app_user: SecretMaterial
) -> None:
    issuer = RedisAclIssuer(redis_url, USER)
    minted = issuer.mint(app_user)
    conns = [connect(redis_server, INITIAL), connect(redis_server, INITIAL)]
    try:
        for c in conns:
            c.client_setname("ingest-worker")
        evidence = issuer.usage(minted.previous_key_id)
    finally:
        for c in conns:
            c.close()
    assert evidence.in_use is None
    assert evidence.summary.startswith("Redis cannot tell which password a connection used")
    assert "2 connections authenticated as app now (127.0.0.1)" in evidence.summary
    assert any("still set" in d for d in evidence.details)
    assert sum("name=ingest-worker" in d for d in evidence.details) == 2


def test_missing_user_is_a_clear_error_and_is_not_created(
    redis_url: str, admin: redis.Redis
) -> None:
    issuer = RedisAclIssuer(redis_url, "ghost")
    with pytest.raises(IssuerError, match="ACL user 'ghost' does not exist") as info:
        issuer.mint(None)
    assert "does not create users or grant permissions" in str(info.value)
    assert admin.acl_getuser("ghost") is None


def test_disabled_and_nopass_users_are_refused(
    redis_server: RedisServer, redis_url: str, admin: redis.Redis
) -> None:
    admin.execute_command("ACL", "SETUSER", "sleeper", "off", ">pw-sleeper", "+@all")
    admin.execute_command("ACL", "SETUSER", "open", "on", "nopass", "+@all")
    with pytest.raises(IssuerError, match="disabled"):
        RedisAclIssuer(redis_url, "sleeper").mint(None)
    assert "off" in admin.acl_getuser("sleeper")["flags"]
    with pytest.raises(IssuerError, match="nopass"):
        RedisAclIssuer(redis_url, "open").mint(None)
    # Still reachable without a password: nothing was changed.
    assert authenticates(redis_server, "anything", user="open")


def test_current_credential_of_another_user_is_refused(
    redis_url: str, app_user: SecretMaterial
) -> None:
    issuer = RedisAclIssuer(redis_url, USER)
    with pytest.raises(IssuerError, match="for user 'other'"):
        issuer.mint(SecretMaterial({"username": "other", "password": INITIAL}))


def test_bad_key_id_is_rejected(redis_url: str, app_user: SecretMaterial) -> None:
    with pytest.raises(IssuerError, match="not a SHA-256"):
        RedisAclIssuer(redis_url, USER).revoke("nopass")


def test_canary_password_never_in_errors_or_slowlog(
    redis_server: RedisServer, redis_url: str, app_user: SecretMaterial, admin: redis.Redis
) -> None:
    """A mint that fails at ACL SETUSER must not carry the new password in its error, and a
    successful one must not leave it in the slow log."""
    # An admin that may read ACLs but not change them: the failure happens at ACL SETUSER,
    # the one command that carries the password.
    admin.execute_command(
        "ACL", "SETUSER", "weak-admin", "on", ">weak-admin-pw", "+ping", "+acl|getuser",
        "+client|list",
    )
    weak_url = f"redis://weak-admin:weak-admin-pw@{redis_server.host}:{redis_server.port}/0"
    weak = RedisAclIssuer(weak_url, USER, password_factory=lambda: CANARY)
    with pytest.raises(IssuerError, match="mint failed") as info:
        weak.mint(app_user)
    assert "acl|setuser" in str(info.value)
    assert CANARY not in formatted(info.value)
    assert "weak-admin-pw" not in formatted(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert CANARY not in str(admin.execute_command("ACL", "LOG"))

    admin.config_set("slowlog-log-slower-than", 0)
    try:
        minted = RedisAclIssuer(redis_url, USER, password_factory=lambda: CANARY).mint(app_user)
        assert minted.material is not None
        assert CANARY not in repr(minted) and CANARY not in str(minted.material)
        slowlog = str(admin.slowlog_get(128))
        assert "setuser" in slowlog.lower()  # the command was recorded...
        assert CANARY not in slowlog  # ...with its arguments redacted by Redis
    finally:
        admin.config_set("slowlog-log-slower-than", 10000)


def test_admin_password_never_in_connection_errors(redis_server: RedisServer) -> None:
    url = f"redis://admin:{CANARY}@{redis_server.host}:{redis_server.port}/0"
    with pytest.raises(IssuerError, match="failed") as info:
        RedisAclIssuer(url, USER).mint(None)
    assert CANARY not in formatted(info.value)
    assert CANARY not in repr(RedisAclIssuer(url, USER))


def test_unreachable_server_is_a_clear_error() -> None:
    from servers import free_port

    issuer = RedisAclIssuer(f"redis://admin:{CANARY}@127.0.0.1:{free_port()}/0", USER,
                            timeout=2)
    with pytest.raises(IssuerError, match=r"usage failed: ConnectionError") as info:
        issuer.usage(None)
    assert CANARY not in formatted(info.value)
