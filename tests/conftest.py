"""Shared pytest fixtures: real PostgreSQL, Redis and OpenBao servers, and moto's AWS stand-in,
started per test session."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from servers import (
    MissingBinary,
    MotoServer,
    OpenBaoServer,
    PostgresServer,
    RedisServer,
    ServerStartError,
)

S = TypeVar("S", PostgresServer, RedisServer, OpenBaoServer, MotoServer)


def _start(start: Callable[[], S]) -> S:
    # A missing binary or a server that will not start is a broken environment, not a reason
    # to skip: fail loudly with the install hint or the server's log tail.
    try:
        return start()
    except MissingBinary as exc:
        message = str(exc)
    except ServerStartError as exc:
        message = f"test server failed to start: {exc}"
    # Failing outside the except block keeps pytest from printing the message twice (chained).
    pytest.fail(message, pytrace=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL 15 server on 127.0.0.1:<free port>; superuser `postgres` with a password."""
    server = _start(PostgresServer.start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL (postgresql+psycopg://) of a fresh, empty database for one test."""
    prefix = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:30]
    url = postgres_server.new_database(prefix)
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server 7 on 127.0.0.1:<free port>, no persistence, ACL user `admin` + password."""
    server = _start(RedisServer.start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """Admin URL of the session Redis after emptying it and removing test-made ACL users."""
    redis_server.reset()
    return redis_server.admin_url


@pytest.fixture(scope="session")
def openbao_server() -> Iterator[OpenBaoServer]:
    """An OpenBao dev server (Vault-compatible API, not HashiCorp Vault); KV v2 at secret/."""
    server = _start(OpenBaoServer.start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def openbao_audited() -> Iterator[OpenBaoServer]:
    """An OpenBao dev server with a file audit device (declared in its config file, as
    OpenBao 2.x requires); its log is ``server.audit_log``."""
    server = _start(lambda: OpenBaoServer.start(audit=True))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's server mode (`moto_server`, an AWS stand-in, not AWS) on 127.0.0.1:<free port>."""
    server = _start(MotoServer.start)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer) -> dict[str, str]:
    """A test access key (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) and the session moto
    server's URL under ``ENDPOINT``, after emptying the server. Use with tests marked ``aws``."""
    moto_server.reset()
    return {
        "AWS_ACCESS_KEY_ID": "AKIAROTABOTTEST00000",
        "AWS_SECRET_ACCESS_KEY": "rotabot-test-secret-access-key",
        "ENDPOINT": moto_server.url,
    }
