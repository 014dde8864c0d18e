"""OpenBao's database secrets engine on the session PostgreSQL, set up the way an operator
would for the ``openbao-database`` issuer: a PostgreSQL admin user for the engine, two login
users, a database mount with a connection to PostgreSQL and two static roles (one per user).
Everything is asked directly with the test's own root client and superuser connection."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

import hvac
import psycopg
from psycopg import sql

from harness.backends import bao_token, pg_dsn, pg_login_ok

# What docs/issuers.md says the bot's token needs on the mount, and nothing more.
DB_CAPABILITIES = ('path "{mount}/rotate-role/*" {{ capabilities = ["update"] }}\n'
                   'path "{mount}/static-creds/*" {{ capabilities = ["read"] }}\n')


def db_rules(mount: str) -> str:
    return DB_CAPABILITIES.format(mount=mount)


@dataclass
class EngineWorld:
    """A database mount with static roles ``roles[i]`` for PostgreSQL users ``users[i]``."""

    mount: str
    roles: tuple[str, str]
    users: tuple[str, str]
    engine_admin: str
    host: str
    port: int
    superuser_dsn: str
    bao: hvac.Client
    extra_users: list[str] = field(default_factory=list)

    def ttl(self, role: str) -> int:
        """Seconds until the engine rotates `role` on its own."""
        data = self.bao.secrets.database.get_static_credentials(role, mount_point=self.mount)
        return int(data["data"]["ttl"])

    def creds(self, role: str) -> tuple[str, str]:
        """(username, password) the engine holds for `role` now."""
        data = self.bao.secrets.database.get_static_credentials(role, mount_point=self.mount)
        return str(data["data"]["username"]), str(data["data"]["password"])

    def login_ok(self, user: str, password: str) -> bool:
        return pg_login_ok(self.host, self.port, user, password)

    def dsn(self, user: str, password: str, app: str) -> str:
        return pg_dsn(self.host, self.port, user, password, app)

    def token(self, extra_rules: str = "", token_id: str | None = None) -> str:
        """A token with exactly the documented capabilities on the mount (plus `extra_rules`)."""
        return bao_token(self.bao, f"db-{self.mount}", db_rules(self.mount) + extra_rules,
                         token_id=token_id)

    def sessions(self, user: str) -> int:
        with psycopg.connect(self.superuser_dsn, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = %s",
                               (user,)).fetchone()
        return int(str(row[0])) if row else 0

    def monitor_url(self) -> str:
        """A PostgreSQL URL of a login user with pg_read_all_stats (for usage evidence); its
        password is random, so it can serve as a canary."""
        name = f"mon_{secrets.token_hex(3)}"
        password = "canary-usage-" + secrets.token_hex(8)
        with psycopg.connect(self.superuser_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)))
            conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(name)))
        self.extra_users.append(name)
        return f"postgresql://{name}:{password}@{self.host}:{self.port}/postgres"

    def teardown(self) -> None:
        self.bao.sys.disable_secrets_engine(self.mount)
        users = [*self.users, *self.extra_users, self.engine_admin]
        with psycopg.connect(self.superuser_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE usename = ANY(%s)", (users,))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(
                sql.SQL(", ").join(sql.Identifier(u) for u in users)))


def database_engine(bao_url: str, root_token: str, pg_host: str, pg_port: int,
                    superuser_dsn: str, rotation_period: str = "8760h") -> EngineWorld:
    """A fresh mount ``db-<hex>`` holding a connection ``pg`` to the PostgreSQL server and two
    static roles ``<hex>-a`` and ``<hex>-b`` for login users ``app_<hex>_a``/``_b``.

    The PostgreSQL users exist before the static roles (the engine only manages existing
    users); creating a static role rotates its password at once, so the initial passwords set
    here are gone by the time this returns."""
    tag = secrets.token_hex(3)
    mount = f"db-{tag}"
    roles = (f"{tag}-a", f"{tag}-b")
    users = (f"app_{tag}_a", f"app_{tag}_b")
    admin, admin_password = f"bao_admin_{tag}", secrets.token_urlsafe(16)
    with psycopg.connect(superuser_dsn, autocommit=True) as conn:
        # CREATEROLE: enough on PostgreSQL 15 to ALTER ROLE ... PASSWORD non-superusers.
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
            sql.Identifier(admin), sql.Literal(admin_password)))
        for user in users:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(user), sql.Literal(secrets.token_urlsafe(16))))
    bao = hvac.Client(url=bao_url, token=root_token)
    bao.sys.enable_secrets_engine("database", path=mount)
    config: dict[str, Any] = {
        "connection_url": (f"postgresql://{{{{username}}}}:{{{{password}}}}@{pg_host}:{pg_port}"
                           "/postgres?sslmode=disable"),
        "username": admin,
        "password": admin_password,
    }
    bao.secrets.database.configure("pg", "postgresql-database-plugin", allowed_roles=list(roles),
                                   mount_point=mount, **config)
    for role, user in zip(roles, users, strict=True):
        # No rotation_statements: the postgres plugin's default ALTER ROLE ... WITH PASSWORD.
        bao.write(f"{mount}/static-roles/{role}", db_name="pg", username=user,
                  rotation_period=rotation_period)
    return EngineWorld(mount, roles, users, admin, pg_host, pg_port, superuser_dsn, bao)
