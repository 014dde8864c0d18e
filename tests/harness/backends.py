"""Real back ends for tests: Redis ACL users, OpenBao tokens and KV versions, PostgreSQL role
pairs, each asked directly (not through rotabot's adapters); and the local file store and local
issuer as one back-end registry for every secret."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import psycopg
import redis
from psycopg import sql

from adapters.file_store import FileStore
from adapters.local_issuer import LocalIssuer
from adapters.postgres_role import PostgresRoleIssuer
from bot.services.ports import Issuer, LaneTarget, Store

# --- Redis -----------------------------------------------------------------------------------


def redis_acl_user(admin_url: str, user: str, password: str) -> None:
    """Create (or reset) an ACL user allowed everything, with this one password."""
    admin = redis.Redis.from_url(admin_url)
    try:
        admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "+@all")
    finally:
        admin.close()


def redis_auth_ok(host: str, port: int, user: str, password: str) -> bool:
    """Does Redis accept `user` with `password` right now?"""
    client = redis.Redis(host=host, port=port, username=user, password=password,
                         socket_timeout=5)
    try:
        return bool(client.ping())
    except redis.AuthenticationError:
        return False
    finally:
        client.close()


# --- OpenBao (KV v2 at secret/) -------------------------------------------------------------

FULL = '"create", "read", "update"'


def bao_rules(path: str, data: str = FULL, metadata: str = FULL,
              destroy: str | None = None) -> str:
    """A policy's rules on the KV v2 `path` (globs allowed) and on where its pending credential
    is staged (rotabot-pending/<path>): the capabilities on data and metadata, and on
    destroying versions when `destroy` is given."""
    text = ""
    for p in (path, f"rotabot-pending/{path}"):
        text += (f'path "secret/data/{p}" {{ capabilities = [{data}] }}\n'
                 f'path "secret/metadata/{p}" {{ capabilities = [{metadata}] }}\n')
        if destroy:
            text += f'path "secret/destroy/{p}" {{ capabilities = [{destroy}] }}\n'
    return text


def bao_token(root: hvac.Client, policy: str, rules: str, token_id: str | None = None) -> str:
    """Write the policy and create a 30-minute token holding it; `token_id` makes the token
    that very value (a canary the test can look for)."""
    root.sys.create_or_update_policy(name=policy, policy=rules)
    if token_id is not None:
        root.auth.token.create(id=token_id, policies=[policy], ttl="30m")
        return token_id
    token: str = root.auth.token.create(policies=[policy], ttl="30m")["auth"]["client_token"]
    return token


def kv_labels(client: hvac.Client, path: str) -> dict[str, str]:
    """rotabot's labels (``rotabot-*`` custom metadata) on a KV v2 secret."""
    meta = client.secrets.kv.v2.read_secret_metadata(path=path)["data"]
    return {k: v for k, v in (meta["custom_metadata"] or {}).items() if k.startswith("rotabot-")}


@dataclass
class RedisInBao:
    """A Redis ACL user whose password is kept in OpenBao, as a person left it before rotabot
    (one unlabelled KV version). Asked directly: who may AUTH on Redis, and what OpenBao holds
    (read with the test's own root client). ``vault_token`` and ``redis_admin_password`` are
    the bot's own credentials once give_bot_canary_credentials made them."""

    user: str
    path: str
    initial: str
    redis_host: str
    redis_port: int
    bao: hvac.Client
    vault_token: str = ""
    redis_admin_password: str = ""

    def auth_ok(self, password: str) -> bool:
        return redis_auth_ok(self.redis_host, self.redis_port, self.user, password)

    def labels(self) -> dict[str, str]:
        return kv_labels(self.bao, self.path)

    def versions(self) -> dict[str, Any]:
        data: dict[str, Any] = self.bao.secrets.kv.v2.read_secret_metadata(
            path=self.path)["data"]["versions"]
        return data

    def destroyed(self, version: int | str) -> bool:
        """Whether a version is destroyed; ``staged-N`` is version N at the staging path."""
        path, number = self.path, str(version)
        if number.startswith("staged-"):
            path, number = f"rotabot-pending/{self.path}", number.removeprefix("staged-")
        versions = self.bao.secrets.kv.v2.read_secret_metadata(path=path)["data"]["versions"]
        return bool(versions[number]["destroyed"])

    def read(self, version: int | str | None = None) -> dict[str, str]:
        """What an unpinned consumer reads (the latest version), or one version; ``staged-N``
        is version N where rotabot stages the pending credential (rotabot-pending/<path>)."""
        path = self.path
        if isinstance(version, str) and version.startswith("staged-"):
            path, version = f"rotabot-pending/{self.path}", version.removeprefix("staged-")
        data: dict[str, str] = self.bao.secrets.kv.v2.read_secret_version(
            path=path, version=version, raise_on_deleted_version=True)["data"]["data"]
        return data

    def password(self, version: int | str | None = None) -> str:
        data = self.read(version)
        assert data["username"] == self.user
        return str(data["password"])


def redis_in_bao(redis_admin_url: str, redis_host: str, redis_port: int, bao_url: str,
                 bao_root_token: str, path: str) -> RedisInBao:
    """A fresh Redis ACL user with a random password, stored at `path` in OpenBao."""
    user = f"cache_{secrets.token_hex(3)}"
    initial = "initial-" + secrets.token_hex(12)
    redis_acl_user(redis_admin_url, user, initial)
    bao = hvac.Client(url=bao_url, token=bao_root_token)
    bao.secrets.kv.v2.create_or_update_secret(path=path,
                                              secret={"username": user, "password": initial})
    return RedisInBao(user, path, initial, redis_host, redis_port, bao)


def give_bot_canary_credentials(w: RedisInBao, redis_admin_url: str, scope: str) -> dict[str, str]:
    """The bot's own credentials, each a canary value valid on the servers: an OpenBao token
    created with the canary as its id (create/read/update and destroy under `scope`/*) and a
    Redis admin user with the canary as its password. Recorded on `w`; returned as the
    environment the catalogs name (VAULT_TOKEN, REDIS_ADMIN_URL)."""
    tag = secrets.token_hex(6)
    w.vault_token = bao_token(w.bao, f"bot-{tag}", bao_rules(f"{scope}/*", destroy='"update"'),
                              token_id=f"canary-vault-{tag}")
    w.redis_admin_password = f"canary-redis-{tag}"
    redis_acl_user(redis_admin_url, f"rotabot_{tag}", w.redis_admin_password)
    return {"VAULT_TOKEN": w.vault_token,
            "REDIS_ADMIN_URL": f"redis://rotabot_{tag}:{w.redis_admin_password}@"
                               f"{w.redis_host}:{w.redis_port}/0"}


# --- catalogs --------------------------------------------------------------------------------


def catalog_backends(bao_url: str, *, redis: bool = False, pg_base_role: str | None = None) -> str:
    """A catalog's ``stores:`` and ``issuers:`` on the real servers, naming credentials by
    environment variable only: OpenBao KV v2 at secret/ as the store ``bao`` (VAULT_TOKEN);
    with `redis`, the redis-acl issuer ``cache`` (REDIS_ADMIN_URL); with `pg_base_role`, the
    postgres-role issuer ``warehouse`` (PG_ADMIN_DSN). Goes after harness.serve.catalog_head;
    the arguments may be str.format placeholders ("{bao_url}") filled in with the rest."""
    lines = ["stores:", "  bao:", "    kind: vault-kv2", f"    url: {bao_url}",
             "    mount: secret", "    token_env: VAULT_TOKEN"]
    if redis or pg_base_role is not None:
        lines.append("issuers:")
    if redis:
        lines += ["  cache:", "    kind: redis-acl", "    url_env: REDIS_ADMIN_URL"]
    if pg_base_role is not None:
        lines += ["  warehouse:", "    kind: postgres-role", "    url_env: PG_ADMIN_DSN",
                  f"    base_role: {pg_base_role}"]
    return "\n".join(lines) + "\n"


# --- PostgreSQL ------------------------------------------------------------------------------


def first_pg_credential(admin_dsn: str, base: str) -> dict[str, Any]:
    """Create the postgres-role issuer's roles (`base`, `base`_a, `base`_b) and mint the first
    login (`base`_a), as an operator's one-time takeover would; returns its material."""
    issuer = PostgresRoleIssuer(admin_dsn, base)
    issuer.ensure_roles()
    first = issuer.mint(None)
    assert first.material is not None
    return first.material.reveal()


def drop_pg_roles(admin_dsn: str, base: str, *others: str) -> None:
    """End the sessions of `base`_a/_b and drop them, `base` and `others`."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for role in (f"{base}_a", f"{base}_b"):
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = %s", (role,))
        roles = [f"{base}_a", f"{base}_b", base, *others]
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
            sql.SQL(", ").join(sql.Identifier(r) for r in roles)))


def pg_dsn(host: str, port: int, user: str, password: str, app: str = "rotabot-test") -> str:
    return (f"host={host} port={port} dbname=postgres user={user} password={password} "
            f"application_name={app} connect_timeout=10")


def pg_login_ok(host: str, port: int, user: str, password: str) -> bool:
    """Can `user` log in with `password` right now (and is then that user)?"""
    try:
        with psycopg.connect(pg_dsn(host, port, user, password)) as conn:
            return conn.execute("SELECT current_user").fetchone() == (user,)
    except psycopg.OperationalError:
        return False


# --- local back ends -------------------------------------------------------------------------


class LocalBackends:
    """Real file store and local issuer for every secret (no external system to mint on)."""

    def __init__(self, root: Path) -> None:
        self.store = FileStore(root)
        self.issuer = LocalIssuer()

    def store_for(self, secret: str) -> Store:
        return self.store

    def issuer_for(self, secret: str) -> Issuer:
        return self.issuer

    def targets_for(self, secret: str) -> dict[str, list[LaneTarget]]:
        return {}
