"""The session fixtures start real PostgreSQL, Redis and OpenBao servers that tests can use."""

from __future__ import annotations

import httpx
import psycopg
import pytest
import redis
import sqlalchemy as sa
from redis.backoff import NoBackoff
from redis.retry import Retry
from servers import OpenBaoServer, PostgresServer, RedisServer


@pytest.mark.postgres
def test_postgres_accepts_password_login_over_tcp(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None and int(row[0]) >= 150000
        row = conn.execute("SELECT inet_server_addr()::text, current_setting('port')").fetchone()
        assert row == ("127.0.0.1/32", str(postgres_server.port))


@pytest.mark.postgres
def test_postgres_rejects_a_wrong_password(postgres_server: PostgresServer) -> None:
    bad = postgres_server.dsn.replace(postgres_server.password, "not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad)


@pytest.mark.postgres
def test_new_database_is_separate_and_usable_via_sqlalchemy(
    postgres_server: PostgresServer,
) -> None:
    first = postgres_server.new_database("iso")
    second = postgres_server.new_database("iso")
    assert first != second
    e1, e2 = sa.create_engine(first), sa.create_engine(second)
    try:
        with e1.begin() as c:
            c.execute(sa.text("CREATE TABLE marker (x int)"))
            c.execute(sa.text("INSERT INTO marker VALUES (42)"))
        with e1.connect() as c:
            assert c.execute(sa.text("SELECT x FROM marker")).scalar_one() == 42
        with e2.connect() as c:
            assert c.execute(sa.text("SELECT to_regclass('marker')")).scalar_one() is None
    finally:
        e1.dispose()
        e2.dispose()


@pytest.mark.postgres
def test_postgres_url_gives_an_empty_database(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as c:
            n = c.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            assert n == 0
            assert (
                c.execute(sa.text("SELECT current_database()")).scalar_one()
                == (postgres_url.rsplit("/", 1)[1])
            )
    finally:
        engine.dispose()


@pytest.mark.redis
def test_redis_requires_auth_and_admin_can_write(redis_server: RedisServer) -> None:
    # No retries: redis-py counts an auth error as a connection error and would back off.
    anon = redis.Redis(host=redis_server.host, port=redis_server.port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anon.ping()
    anon.close()
    client = redis.Redis.from_url(redis_server.admin_url)
    try:
        client.set("rotabot:probe", "1")
        assert client.get("rotabot:probe") == b"1"
        assert client.acl_whoami() == "admin"
        info = client.info("persistence")
        assert info["aof_enabled"] == 0
    finally:
        client.close()


@pytest.mark.redis
def test_redis_url_starts_empty_without_test_made_users(
    redis_server: RedisServer, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.dbsize() == 0
        client.acl_setuser("app", enabled=True, passwords=["+pw1"], keys=["*"], commands=["+get"])
        redis_server.reset()
        assert sorted(u.decode() if isinstance(u, bytes) else u for u in client.acl_users()) == [
            "admin",
            "default",
        ]
    finally:
        client.close()


@pytest.mark.openbao
def test_openbao_is_healthy_and_kv_v2_round_trips(openbao_server: OpenBaoServer) -> None:
    health = httpx.get(f"{openbao_server.url}/v1/sys/health", timeout=5)
    assert health.status_code == 200
    assert health.json()["sealed"] is False
    headers = {"X-Vault-Token": openbao_server.token}
    write = httpx.post(
        f"{openbao_server.url}/v1/secret/data/fixture-probe",
        json={"data": {"value": "v1"}},
        headers=headers,
        timeout=5,
    )
    assert write.status_code == 200, write.text
    assert write.json()["data"]["version"] >= 1
    read = httpx.get(
        f"{openbao_server.url}/v1/secret/data/fixture-probe", headers=headers, timeout=5
    )
    assert read.json()["data"]["data"] == {"value": "v1"}
    denied = httpx.get(
        f"{openbao_server.url}/v1/secret/data/fixture-probe",
        headers={"X-Vault-Token": "wrong"},
        timeout=5,
    )
    assert denied.status_code == 403
