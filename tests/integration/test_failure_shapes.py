"""Real failures, produced on loopback and by real servers, classified by bot.domain.failures."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import hvac
import hvac.exceptions
import psycopg
import pytest
import redis
import sqlalchemy
import sqlalchemy.exc
from servers import OpenBaoServer, PostgresServer, RedisServer

from bot.domain.failures import Classification, FailureClass, classify

WRONG_PASSWORD = "wrong-CANARY-5b1e0f-not-the-password"
NAME_RESOLUTION_LABELS = (
    "Name or service not known",
    "Temporary failure in name resolution",
    "name resolution failed",
)


def failure_of(call: object) -> BaseException:
    """Run ``call`` and return what it raised; a call that succeeds is a broken test setup."""
    assert callable(call)
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("expected the call to fail")


def assert_no_secret(result: Classification, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.reason


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that completes the handshake and then never sends a byte."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        # The kernel accepts connections into the backlog; nobody ever reads or answers them.
        sock.listen(8)
        yield sock.getsockname()[1]


@pytest.fixture
def plain_http_server() -> Iterator[int]:
    """A plain-TCP server that answers anything, a TLS ClientHello included, with plain HTTP."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    thread = threading.Thread(target=serve, name="plain-http-server", daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def test_connection_refused(closed_port: int) -> None:
    exc = failure_of(lambda: httpx.get(f"http://127.0.0.1:{closed_port}/healthz", timeout=5))
    assert isinstance(exc, httpx.ConnectError)

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.NETWORK
    assert result.reason == "httpx.ConnectError: Connection refused"


def test_read_timeout(silent_server: int) -> None:
    exc = failure_of(
        lambda: httpx.get(
            f"http://127.0.0.1:{silent_server}/healthz",
            timeout=httpx.Timeout(5.0, read=0.3),
        )
    )
    assert isinstance(exc, httpx.ReadTimeout)

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.NETWORK
    assert result.reason.startswith("httpx.ReadTimeout")


def test_tls_to_a_plain_tcp_server(plain_http_server: int) -> None:
    exc = failure_of(lambda: httpx.get(f"https://127.0.0.1:{plain_http_server}/", timeout=5))
    assert isinstance(exc, httpx.ConnectError)

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.NETWORK
    assert result.reason.startswith("httpx.ConnectError: TLS")


def test_dns_failure() -> None:
    # .invalid is reserved (RFC 2606): it never resolves, with or without a network.
    exc = failure_of(lambda: httpx.get("http://does-not-exist.invalid/", timeout=5))
    assert isinstance(exc, httpx.ConnectError)

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.NETWORK
    assert result.reason.startswith("httpx.ConnectError: ")
    assert result.reason.split(": ", 1)[1] in NAME_RESOLUTION_LABELS


def test_vault_client_to_a_refused_port(closed_port: int) -> None:
    client = hvac.Client(url=f"http://127.0.0.1:{closed_port}", token=WRONG_PASSWORD, timeout=5)
    exc = failure_of(
        lambda: client.secrets.kv.v2.read_secret_version(
            path="ai/model-api-key", raise_on_deleted_version=True
        )
    )

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.NETWORK
    assert "Connection refused" in result.reason
    assert_no_secret(result, WRONG_PASSWORD)


@pytest.mark.redis
def test_redis_wrong_password(redis_server: RedisServer) -> None:
    host, port = redis_server.host, redis_server.port
    client = redis.Redis(
        host=host, port=port, username="admin", password=WRONG_PASSWORD, socket_timeout=5
    )
    try:
        exc = failure_of(client.ping)
    finally:
        client.close()
    assert isinstance(exc, redis.exceptions.AuthenticationError)
    assert exc.status_code == "WRONGPASS"  # redis-py keeps the reply's error code here

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.AUTHENTICATION
    assert result.reason == "redis.exceptions.AuthenticationError: WRONGPASS"
    assert_no_secret(result, WRONG_PASSWORD, redis_server.password)


@pytest.mark.redis
def test_redis_without_credentials(redis_server: RedisServer) -> None:
    host, port = redis_server.host, redis_server.port
    client = redis.Redis(host=host, port=port, socket_timeout=5)
    try:
        exc = failure_of(client.ping)
    finally:
        client.close()

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.AUTHENTICATION
    assert result.reason == "redis.exceptions.AuthenticationError: NOAUTH"


@pytest.mark.postgres
def test_postgres_wrong_password(postgres_server: PostgresServer) -> None:
    host, port = postgres_server.host, postgres_server.port
    exc = failure_of(
        lambda: psycopg.connect(
            host=host,
            port=port,
            user="app_a",
            password=WRONG_PASSWORD,
            dbname="postgres",
            connect_timeout=10,
        )
    )
    assert isinstance(exc, psycopg.OperationalError)
    assert 'password authentication failed for user "app_a"' in str(exc)

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.AUTHENTICATION
    assert result.reason == "psycopg.OperationalError: password authentication failed"
    assert_no_secret(result, WRONG_PASSWORD)


@pytest.mark.postgres
def test_postgres_wrong_password_through_sqlalchemy(postgres_server: PostgresServer) -> None:
    host, port = postgres_server.host, postgres_server.port
    engine = sqlalchemy.create_engine(
        f"postgresql+psycopg://app_a:{WRONG_PASSWORD}@{host}:{port}/postgres",
        connect_args={"connect_timeout": 10},
    )
    try:
        exc = failure_of(lambda: engine.connect().close())
    finally:
        engine.dispose()
    assert isinstance(exc, sqlalchemy.exc.OperationalError)

    result = classify(exception=exc)

    # SQLAlchemy's wrapper is not in the table; the psycopg cause underneath it decides.
    assert result.failure_class is FailureClass.AUTHENTICATION
    assert result.reason == "psycopg.OperationalError: password authentication failed"
    assert_no_secret(result, WRONG_PASSWORD)


def test_postgres_refused(closed_port: int) -> None:
    exc = failure_of(
        lambda: psycopg.connect(
            host="127.0.0.1", port=closed_port, user="app_a", dbname="postgres", connect_timeout=5
        )
    )

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.NETWORK
    assert result.reason == "psycopg.OperationalError: Connection refused"


@pytest.mark.openbao
def test_vault_permission_denied(openbao_server: OpenBaoServer) -> None:
    url = openbao_server.url
    client = hvac.Client(url=url, token=WRONG_PASSWORD, timeout=5)
    exc = failure_of(
        lambda: client.secrets.kv.v2.read_secret_version(
            path="ai/model-api-key", raise_on_deleted_version=True
        )
    )
    assert isinstance(exc, hvac.exceptions.Forbidden)

    result = classify(exception=exc)

    assert result.failure_class is FailureClass.AUTHENTICATION
    assert result.reason == "hvac.exceptions.Forbidden: permission denied"
    assert_no_secret(result, WRONG_PASSWORD)
