"""Reliability fixtures: a cluster of `rotabot serve` replicas on one PostgreSQL, real Redis
and OpenBao, fault proxies, and seeding of the secret the rotations rotate."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from faultproxy import FaultProxy
from harness.backends import redis_acl_user
from rel_cluster import APP_USER, Cluster, build_cluster, seed_vault, with_port
from servers import OpenBaoServer, PostgresServer


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


@pytest.fixture
def redis_acl_cluster(
    make_cluster: Callable[..., Cluster],
    openbao_server: OpenBaoServer,
    redis_url: str,
    store_path: str,
) -> Callable[..., Cluster]:
    """A one-replica cluster rotating the Redis ACL user APP_USER with the redis-acl issuer.

    ``make(old_password, redis_port=..., **kw)``: the user is created on Redis with
    `old_password`, which is seeded in OpenBao as the current version; the bot's Redis admin
    URL points at `redis_port` (a fault proxy in front of Redis) or at Redis itself; `kw` goes
    to make_cluster."""

    def make(old_password: str, *, redis_port: int | None = None, **kw: Any) -> Cluster:
        redis_acl_user(redis_url, APP_USER, old_password)
        seed_vault(openbao_server.url, openbao_server.token, store_path,
                   {"username": APP_USER, "password": old_password})
        admin_url = redis_url if redis_port is None else with_port(redis_url, redis_port)
        return make_cluster(
            replicas=1, store_path=store_path,
            issuer="{kind: redis-acl, url_env: REDIS_ADMIN_URL, user: app}",
            extra_env={"REDIS_ADMIN_URL": admin_url}, **kw,
        )

    return make
