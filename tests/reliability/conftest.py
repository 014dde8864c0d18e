"""Reliability fixtures: a cluster of `rotabot serve` replicas on one PostgreSQL, real Redis
and OpenBao, fault proxies, and seeding of the secret the rotations rotate."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from faultproxy import FaultProxy
from rel_cluster import APP_USER, Cluster, build_cluster
from servers import OpenBaoServer, PostgresServer, RedisServer


@pytest.fixture
def store_path() -> str:
    return f"rel/{uuid.uuid4().hex[:10]}/model-api-key"


@pytest.fixture
def proxy_for() -> Iterator[Callable[[str, int], FaultProxy]]:
    """Start a fault proxy in front of 127.0.0.1:<port>; all are stopped after the test."""
    started: list[FaultProxy] = []

    def make(name: str, port: int) -> FaultProxy:
        proxy = FaultProxy("127.0.0.1", port, name=name).start()
        started.append(proxy)
        return proxy

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def redis_app_user(redis_server: RedisServer, redis_url: str) -> Callable[[str], None]:
    """Create the ACL user the redis-acl issuer rotates, with one password."""

    def create(password: str) -> None:
        admin = redis.Redis.from_url(redis_url)
        admin.execute_command("ACL", "SETUSER", APP_USER, "on", f">{password}", "~*", "+@all")
        admin.close()

    return create


@pytest.fixture
def make_cluster(
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
    openbao_server: OpenBaoServer,
) -> Iterator[Callable[..., Cluster]]:
    """Build a cluster on this test's fresh database; everything is stopped afterwards."""
    built: list[Cluster] = []

    def make(**kw: Any) -> Cluster:
        kw.setdefault("database_url", postgres_url)
        kw.setdefault("vault_url", openbao_server.url)
        kw.setdefault("vault_token", openbao_server.token)
        cluster = build_cluster(tmp_path, **kw)
        built.append(cluster)
        return cluster

    yield make
    for c in built:
        c.stop()


