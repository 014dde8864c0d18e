"""The redis-acl issuer's two-user mode against a real redis-server: the new password goes to
the other user, CLIENT LIST shows who still authenticates as the old one, revoke strips it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from servers import RedisServer

from adapters.redis_acl import RedisAclPairIssuer
from bot.domain.credentials import IssuerError
from bot.domain.gate import evaluate_gate
from bot.domain.lifecycle import StepState
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Issuer

pytestmark = pytest.mark.redis

USERS = ("cache_a", "cache_b")
INITIAL = "initial-pair-password-0123456789"
CANARY = "CANARY-redis-pair-5d1c-never-show-me"


@pytest.fixture
def admin(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def pair(admin: redis.Redis) -> SecretMaterial:
    """Both users as an operator creates them (same rights); the store holds cache_a's."""
    admin.execute_command("ACL", "SETUSER", USERS[0], "on", f">{INITIAL}", "~*", "+@all")
    admin.execute_command("ACL", "SETUSER", USERS[1], "on", "~*", "+@all")
    return SecretMaterial({"username": USERS[0], "password": INITIAL})


def connect(server: RedisServer, user: str, password: str, name: str | None = None) -> redis.Redis:
    client = redis.Redis(host=server.host, port=server.port, username=user, password=password,
                         decode_responses=True, retry=None, client_name=name)
    client.ping()  # open the connection now, so CLIENT LIST shows it
    return client


def authenticates(server: RedisServer, user: str, password: str) -> bool:
    # Not harness.backends.redis_auth_ok: its client retries a refused AUTH for seconds.
    client = redis.Redis(host=server.host, port=server.port, username=user, password=password,
                         retry=None)
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return False
    finally:
        client.close()


def test_mint_gives_the_other_user_a_password_and_both_stay_valid(
    redis_server: RedisServer, redis_url: str, pair: SecretMaterial
) -> None:
    issuer = RedisAclPairIssuer(redis_url, USERS, password_factory=lambda: CANARY)
    assert isinstance(issuer, Issuer) and issuer.keeps_both_valid
    minted = issuer.mint(pair)
    assert (minted.key_id, minted.previous_key_id) == ("cache_b", "cache_a")
    assert minted.material is not None
    assert minted.material.reveal() == {"username": "cache_b", "password": CANARY}
    assert authenticates(redis_server, "cache_a", INITIAL)
    assert authenticates(redis_server, "cache_b", CANARY)

    issuer.revoke("cache_a")
    assert not authenticates(redis_server, "cache_a", INITIAL)
    assert authenticates(redis_server, "cache_b", CANARY)
    # The next rotation goes back to cache_a, with a fresh password only.
    again = RedisAclPairIssuer(redis_url, USERS).mint(minted.material)
    assert (again.key_id, again.previous_key_id) == ("cache_a", "cache_b")
    assert not authenticates(redis_server, "cache_a", INITIAL)


def test_connections_on_the_old_user_are_listed_and_block_revocation(
    redis_server: RedisServer, redis_url: str, pair: SecretMaterial
) -> None:
    issuer = RedisAclPairIssuer(redis_url, USERS)
    minted = issuer.mint(pair)
    assert minted.material is not None
    straggler = connect(redis_server, "cache_a", INITIAL, name="nightly-ingest")
    moved = connect(redis_server, "cache_b", minted.material.reveal()["password"], name="api")
    try:
        evidence = issuer.usage("cache_a")
        assert evidence.in_use is True
        assert evidence.summary == "1 connection still authenticated as cache_a"
        [seen] = evidence.seen
        assert (seen.address, seen.application_name, seen.user) == (
            "127.0.0.1", "nightly-ingest", "cache_a")

        now = datetime.now(UTC)
        gate = evaluate_gate(switched_rotation(now), now=now + timedelta(hours=3),
                             usage=evidence)
        assert not gate.open
        assert gate.unmet == (
            "the old credential is still in use: 1 connection still authenticated as cache_a: "
            "connected now by 127.0.0.1, application_name nightly-ingest, user cache_a "
            f"(not in the catalog), {seen.how}",)
    finally:
        straggler.close()
        moved.close()
    # The straggler left: the old user is unused, and says so.
    quiet = issuer.usage("cache_a")
    assert quiet.in_use is False and quiet.seen == ()
    assert quiet.summary == "no connections authenticated as cache_a now"


def test_revoke_never_leaves_the_pair_without_a_usable_user(
    redis_url: str, pair: SecretMaterial
) -> None:
    issuer = RedisAclPairIssuer(redis_url, USERS)
    with pytest.raises(IssuerError, match="cache_b has no password or is disabled"):
        issuer.revoke("cache_a")
    with pytest.raises(IssuerError, match="'app' is not cache_a or cache_b"):
        issuer.revoke("app")


def test_mint_refuses_a_standby_user_still_in_use(
    redis_server: RedisServer, redis_url: str, admin: redis.Redis, pair: SecretMaterial
) -> None:
    # cache_b kept a password and a client from an earlier rotation that was never revoked.
    admin.execute_command("ACL", "SETUSER", "cache_b", ">leftover-password-0123")
    client = connect(redis_server, "cache_b", "leftover-password-0123")
    try:
        with pytest.raises(IssuerError, match="cache_b still has a password and 1 live"):
            RedisAclPairIssuer(redis_url, USERS).mint(pair)
    finally:
        client.close()
    assert authenticates(redis_server, "cache_b", "leftover-password-0123")


def switched_rotation(now: datetime) -> Rotation:
    r = Rotation.begin(secret="cache", lanes=["dev"], consumers=[
        ConsumerPlan("api", "dev", "U0API", "restart")], overlap=timedelta(hours=24),
        observe=timedelta(hours=1), store_path="p", actor="U0ADMIN", now=now)
    r.id = 1
    r.prepared(old_version="1", new_version="2", old_key_id="cache_a", new_key_id="cache_b",
               actor="U0ADMIN", now=now)
    for step in (StepState.DISTRIBUTED, StepState.VALIDATED):
        r.mark_step("api", step, actor="U0API", now=now)
    r.switch(actor="U0ADMIN", now=now)
    r.mark_step("api", StepState.SIGNED_OFF, actor="U0API", now=now)
    return r
