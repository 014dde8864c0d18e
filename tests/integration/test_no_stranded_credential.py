"""No step strands a credential: a failure injected at each step, checked on the real servers.

The RotationService is built as bot/runtime/bootstrap.py builds it (SQLite storage migrated by
Alembic, adapters from bot.runtime.backends.CatalogBackends with credentials in environment
variables), on the session's real Redis, OpenBao and PostgreSQL. Faults come from the back
ends themselves (a token whose policy forbids a step, a sealed server, a competing writer) or
from a small wrapper at the Store/Issuer port that fails one call. After each failure a valid
credential still authenticates on the real server (AUTH on Redis with the password read from
OpenBao; a psycopg login for postgres-role) and the rotation waits in `failed`, remembering the
phase it failed from, and resume, rollback and cancel each get it out.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import hvac
import psycopg
import pytest
import redis
from harness.backends import (
    FULL,
    RedisInBao,
    bao_rules,
    bao_token,
    catalog_backends,
    drop_pg_roles,
    first_pg_credential,
    pg_login_ok,
    redis_in_bao,
)
from harness.serve import ADMIN, catalog_head
from servers import OpenBaoServer, PostgresServer, RedisServer

from adapters.redis_acl import password_hash
from adapters.vault_store import VaultKV2Store
from bot.catalog import load_catalog
from bot.domain.clock import FixedClock
from bot.domain.credentials import IssuerError, Minted, StoreError, StoreState, UsageEvidence
from bot.domain.lifecycle import Phase, StepState
from bot.domain.rotation import Rotation
from bot.domain.secret_material import SecretMaterial
from bot.runtime.backends import CatalogBackends
from bot.services.ports import Issuer, LaneTarget, Store
from bot.services.rotations import RotationService
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.unit_of_work import sql_unit_of_work_factory

pytestmark = [pytest.mark.redis, pytest.mark.openbao]

OWNER = "U0BOB"
SECRET = "cache-password"

CATALOG = (catalog_head(observe="1h", lanes=("dev",))
           + catalog_backends("{bao_url}", redis=True, pg_base_role="{base_role}") + """\
secrets:
  {secret}:
    issuer: {{name: {issuer}{user}}}
    store: {{name: bao, path: {path}}}
    consumers:
      retriever: {{owner: {owner}, lane: dev, reload: restart, rollback: pin the previous}}
""")


# --- faults at the port: a wrapper that fails (or meddles before) one call ------------------


class FaultyStore:
    """The real store, except that the call named ``fail_on`` runs ``before`` first (a
    competing writer) or raises StoreError, once."""

    def __init__(self, inner: Store, fail_on: str,
                 before: Callable[[], None] | None = None) -> None:
        self.inner, self.fail_on, self.before = inner, fail_on, before
        self.kind = inner.kind
        self.fired = False

    def _maybe(self, name: str) -> None:
        if name != self.fail_on or self.fired:
            return
        self.fired = True
        if self.before is not None:
            self.before()
            return
        raise StoreError(f"injected: the store refused to {name}")

    def describe(self, path: str) -> StoreState:
        return self.inner.describe(path)

    def read(self, path: str, version: str | None = None) -> SecretMaterial:
        return self.inner.read(path, version)

    def write_pending(self, path: str, material: SecretMaterial, *,
                      expected_current: str | None) -> str:
        self._maybe("write_pending")
        return self.inner.write_pending(path, material, expected_current=expected_current)

    def mark_pending(self, path: str, version: str) -> None:
        self.inner.mark_pending(path, version)

    def promote(self, path: str, version: str) -> str:
        self._maybe("promote")
        return self.inner.promote(path, version)

    def restore_previous(self, path: str) -> str:
        return self.inner.restore_previous(path)

    def retire(self, path: str, version: str) -> None:
        self._maybe("retire")
        self.inner.retire(path, version)


class FaultyIssuer:
    """The real issuer, except that revoke raises IssuerError once."""

    def __init__(self, inner: Issuer) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.fired = False

    @property
    def keeps_both_valid(self) -> bool:
        return self.inner.keeps_both_valid

    def mint(self, current: SecretMaterial | None) -> Minted:
        return self.inner.mint(current)

    def revoke(self, key_id: str | None) -> None:
        if not self.fired:
            self.fired = True
            raise IssuerError(f"injected: {self.kind} refused to revoke (connection reset)")
        self.inner.revoke(key_id)

    def usage(self, key_id: str | None) -> UsageEvidence:
        return self.inner.usage(key_id)


@dataclass
class Wrapped:
    """A BackendRegistry over CatalogBackends that wraps the adapters it builds."""

    inner: CatalogBackends
    store_wrapper: Callable[[Store], Store] | None = None
    issuer_wrapper: Callable[[Issuer], Issuer] | None = None
    _store: Store | None = None
    _issuer: Issuer | None = None

    def store_for(self, secret: str) -> Store:
        if self._store is None:
            real = self.inner.store_for(secret)
            self._store = self.store_wrapper(real) if self.store_wrapper else real
        return self._store

    def issuer_for(self, secret: str) -> Issuer:
        if self._issuer is None:
            real = self.inner.issuer_for(secret)
            self._issuer = self.issuer_wrapper(real) if self.issuer_wrapper else real
        return self._issuer

    def targets_for(self, secret: str) -> dict[str, list[LaneTarget]]:
        return self.inner.targets_for(secret)


# --- the world: real servers, a service built like bootstrap builds it ----------------------


@dataclass(kw_only=True)
class World(RedisInBao):
    """The Redis user in OpenBao (asked directly: auth_ok, labels, destroyed), and the
    service rotating it."""

    service: RotationService
    clock: FixedClock
    redis_admin_url: str
    backends: Wrapped
    policy: str = ""  # the OpenBao policy the bot's token holds, when not the root token

    def grant(self, rules: str) -> None:
        """An operator changes what the bot's token may do."""
        self.bao.sys.create_or_update_policy(name=self.policy, policy=rules)

    # Redis, asked directly.
    def password_hashes(self) -> set[str]:
        admin = redis.Redis.from_url(self.redis_admin_url, decode_responses=True)
        try:
            info = admin.execute_command("ACL", "GETUSER", self.user)
        finally:
            admin.close()
        # redis-py parses ACL GETUSER into a dict.
        return set(info["passwords"])

    # OpenBao, read with the root token (not the bot's).
    def store_view(self) -> VaultKV2Store:
        return VaultKV2Store(self.bao)

    def current_material(self) -> SecretMaterial:
        return self.store_view().read(self.path)

    def current_password(self) -> str:
        return self.current_material().reveal()["password"]

    # The rotation, driven through the service as the Slack handlers drive it.
    def start(self) -> Rotation:
        return self.service.start(SECRET, actor=ADMIN)

    def validated(self) -> int:
        r = self.start()
        assert r.phase is Phase.DISTRIBUTING, r.failure_reason
        assert r.id is not None
        for step in (StepState.DISTRIBUTED, StepState.VALIDATED):
            self.service.step(r.id, "retriever", step, actor=OWNER)
        return r.id

    def observing(self) -> int:
        rid = self.validated()
        assert self.service.switch(rid, actor=ADMIN).phase is Phase.OBSERVING
        return rid

    def revocable(self) -> int:
        rid = self.observing()
        self.service.step(rid, "retriever", StepState.SIGNED_OFF, actor=OWNER)
        self.clock.advance(timedelta(hours=2))
        assert self.service.tick(rid).phase is Phase.REVOCABLE
        return rid


def build_service(tmp_path: Path, catalog_text: str, backends: Callable[[CatalogBackends], Wrapped],
                  clock: FixedClock) -> tuple[RotationService, Wrapped]:
    catalog_file = tmp_path / "catalog.yml"
    catalog_file.write_text(catalog_text)
    catalog = load_catalog(str(catalog_file))
    url = f"sqlite:///{tmp_path / 'rotabot.db'}"
    upgrade(url)
    registry = backends(CatalogBackends(catalog, os.environ))
    service = RotationService(
        catalog=catalog,
        uow_factory=sql_unit_of_work_factory(make_engine(url)),
        backends=registry,
        clock=clock,
    )
    return service, registry


def redis_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
                redis_server: RedisServer, bao: OpenBaoServer, *,
                rules: Callable[[str], str] | None = None,
                wrap: Callable[[CatalogBackends], Wrapped] = Wrapped) -> World:
    """A Redis ACL user with one password, stored in OpenBao as one unlabelled version. The
    bot's OpenBao token is the root token, or with `rules` one holding only the policy
    ``rules(path)`` (World.grant changes it)."""
    s = redis_in_bao(redis_url, redis_server.host, redis_server.port, bao.url, bao.token,
                     f"stranded/{uuid.uuid4().hex[:10]}/cache")
    policy = f"bot-{uuid.uuid4().hex[:8]}" if rules else ""
    monkeypatch.setenv("VAULT_TOKEN",
                       bao_token(s.bao, policy, rules(s.path)) if rules else bao.token)
    monkeypatch.setenv("REDIS_ADMIN_URL", redis_url)
    monkeypatch.setenv("PG_ADMIN_DSN", "unused")
    clock = FixedClock()
    service, registry = build_service(
        tmp_path,
        CATALOG.format(owner=OWNER, bao_url=bao.url, secret=SECRET, issuer="cache",
                       user=f", user: {s.user}", path=s.path, base_role="unused"),
        wrap, clock)
    return World(s.user, s.path, s.initial, s.redis_host, s.redis_port, s.bao, service=service,
                 clock=clock, redis_admin_url=redis_url, backends=registry, policy=policy)


def assert_failed_from(r: Rotation, phase: Phase, words: str) -> None:
    assert r.phase is Phase.FAILED
    assert r.failed_from is phase
    assert r.failure_reason is not None and words in r.failure_reason, r.failure_reason


# --- mint succeeds, store write fails -------------------------------------------------------


def test_store_write_refused_by_policy_takes_the_minted_password_back_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
    redis_server: RedisServer, openbao_server: OpenBaoServer,
) -> None:
    # The bot may read the secret but not write a new version: the store write will fail.
    w = redis_world(tmp_path, monkeypatch, redis_url, redis_server, openbao_server,
                    rules=lambda path: bao_rules(path, '"read"', '"read"'))

    r = w.start()
    assert_failed_from(r, Phase.READY_CHECK, "token lacks permission")
    # The password Redis minted was taken back: the user holds only the stored one, and the
    # stored (current) credential authenticates.
    assert w.password_hashes() == {password_hash(w.initial)}
    assert w.current_password() == w.initial and w.auth_ok(w.initial)
    assert w.labels() == {}

    # An operator fixes the policy; resume prepares again and the rotation goes on.
    w.grant(bao_rules(w.path, FULL, FULL))
    assert r.id is not None
    resumed = w.service.resume(r.id, actor=ADMIN)
    assert resumed.phase is Phase.DISTRIBUTING
    assert w.labels() == {"rotabot-current": "1", "rotabot-pending": "staged-1"}
    pending = w.store_view().read(w.path, "staged-1").reveal()["password"]
    assert w.auth_ok(w.initial) and w.auth_ok(pending)
    assert w.password_hashes() == {password_hash(w.initial), password_hash(pending)}


def competing_writer_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
                           redis_server: RedisServer, bao: OpenBaoServer, *, call: str,
                           extra: dict[str, str]) -> World:
    """redis_world, where a person saves the secret again (the same password, plus `extra`)
    just before the store's `call` runs."""
    box: dict[str, World] = {}

    def someone_else_writes() -> None:
        w = box["w"]
        w.bao.secrets.kv.v2.create_or_update_secret(
            path=w.path, secret={"username": w.user, "password": w.initial, **extra})

    box["w"] = redis_world(
        tmp_path, monkeypatch, redis_url, redis_server, bao,
        wrap=lambda b: Wrapped(b, store_wrapper=lambda s: FaultyStore(
            s, call, before=someone_else_writes)))
    return box["w"]


def test_competing_writer_makes_a_cas_conflict_then_cancel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
    redis_server: RedisServer, openbao_server: OpenBaoServer,
) -> None:
    # A person re-saves the secret (same password, one more field) between our read and our
    # write: OpenBao's check-and-set refuses our write.
    w = competing_writer_world(tmp_path, monkeypatch, redis_url, redis_server, openbao_server,
                               call="write_pending", extra={"note": "resaved"})

    r = w.start()
    assert_failed_from(r, Phase.READY_CHECK, "someone else wrote")
    assert r.failure_reason is not None and "paused" in r.failure_reason
    assert w.password_hashes() == {password_hash(w.initial)}
    assert w.current_material().reveal()["note"] == "resaved"
    assert w.auth_ok(w.current_password())

    assert r.id is not None
    cancelled = w.service.cancel(r.id, actor=ADMIN, reason="someone else is rotating it")
    assert cancelled.phase is Phase.CANCELLED
    assert w.auth_ok(w.current_password())
    assert w.password_hashes() == {password_hash(w.initial)}


# --- store write succeeds, promotion fails --------------------------------------------------


@pytest.fixture
def sealable_server() -> Iterator[OpenBaoServer]:
    # A dedicated instance: sealing the session's server would break every other test.
    server = OpenBaoServer.start()
    try:
        yield server
    finally:
        server.stop()


def unseal(server: OpenBaoServer) -> None:
    key = re.search(r"Unseal Key: (\S+)", server.log_path.read_text())
    assert key is not None, "the dev server prints its unseal key"
    client = hvac.Client(url=server.url, token=server.token)
    client.sys.submit_unseal_key(key.group(1))
    deadline = time.monotonic() + 30
    while client.sys.is_sealed() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_sealed_store_at_switch_fails_then_rollback_keeps_the_old_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
    redis_server: RedisServer, sealable_server: OpenBaoServer,
) -> None:
    w = redis_world(tmp_path, monkeypatch, redis_url, redis_server, sealable_server)
    rid = w.validated()
    pending = w.store_view().read(w.path, "staged-1").reveal()["password"]

    w.bao.sys.seal()
    r = w.service.switch(rid, actor=ADMIN)
    assert_failed_from(r, Phase.VALIDATING, "is sealed")
    # Nothing was half-done on Redis: both passwords still authenticate.
    assert w.auth_ok(w.initial) and w.auth_ok(pending)

    unseal(sealable_server)
    # The store still says version 1 is current, and it authenticates.
    assert w.labels() == {"rotabot-current": "1", "rotabot-pending": "staged-1"}
    assert w.current_password() == w.initial and w.auth_ok(w.initial)

    rolled = w.service.rollback(rid, actor=ADMIN, revoke_new=True, reason="store was sealed")
    assert rolled.phase is Phase.ROLLED_BACK
    assert w.auth_ok(w.initial) and not w.auth_ok(pending)
    assert w.password_hashes() == {password_hash(w.initial)}
    # The staged copy of the new password is destroyed; the secret's path never held it.
    assert w.labels() == {"rotabot-current": "1"}
    assert w.destroyed("staged-1") and not w.destroyed("1")


def test_competing_write_before_promotion_fails_then_rollback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
    redis_server: RedisServer, openbao_server: OpenBaoServer,
) -> None:
    w = competing_writer_world(tmp_path, monkeypatch, redis_url, redis_server, openbao_server,
                               call="promote", extra={})
    rid = w.validated()
    pending = w.store_view().read(w.path, "staged-1").reveal()["password"]

    r = w.service.switch(rid, actor=ADMIN)
    assert_failed_from(r, Phase.VALIDATING, "someone else wrote")
    assert w.labels() == {"rotabot-current": "1", "rotabot-pending": "staged-1"}
    assert w.auth_ok(w.current_password()) and w.auth_ok(pending)

    # A switch now would copy ours over someone's version 2: roll back instead. The new
    # password is taken back and its staged copy destroyed; version 1 stays current.
    rolled = w.service.rollback(rid, actor=ADMIN, revoke_new=True, reason="someone wrote v3")
    assert rolled.phase is Phase.ROLLED_BACK
    assert not w.auth_ok(pending)
    assert w.password_hashes() == {password_hash(w.initial)}
    assert w.labels() == {"rotabot-current": "1"}
    assert w.destroyed("staged-1")
    assert w.current_password() == w.initial and w.auth_ok(w.initial)


# --- revoke fails halfway -------------------------------------------------------------------


def test_issuer_revoke_done_but_store_retire_refused_then_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
    redis_server: RedisServer, openbao_server: OpenBaoServer,
) -> None:
    # Everything except destroying versions.
    w = redis_world(tmp_path, monkeypatch, redis_url, redis_server, openbao_server,
                    rules=lambda path: bao_rules(path, FULL, FULL))
    rid = w.revocable()
    new = w.current_password()
    assert new != w.initial

    r = w.service.revoke(rid, actor=ADMIN)
    assert_failed_from(r, Phase.REVOCABLE, "secret/destroy")
    # Half done: Redis no longer takes the old password, the store still holds version 1.
    # The current credential, read from OpenBao, authenticates.
    assert w.auth_ok(new) and not w.auth_ok(w.initial)
    assert not w.destroyed("1")

    w.grant(bao_rules(w.path, FULL, FULL, '"update"'))
    assert w.service.resume(rid, actor=ADMIN).phase is Phase.REVOCABLE
    done = w.service.revoke(rid, actor=ADMIN)  # the issuer's revoke is idempotent
    assert done.phase is Phase.REVOKED
    assert w.destroyed("1")
    assert w.labels() == {
        "rotabot-current": "2", "rotabot-revoked": "1", "rotabot-promoted": "staged-1"}
    assert w.auth_ok(w.current_password())


def test_issuer_revoke_fails_then_rollback_restores_the_old_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str,
    redis_server: RedisServer, openbao_server: OpenBaoServer,
) -> None:
    w = redis_world(tmp_path, monkeypatch, redis_url, redis_server, openbao_server,
                    wrap=lambda b: Wrapped(b, issuer_wrapper=FaultyIssuer))
    rid = w.revocable()
    new = w.current_password()

    r = w.service.revoke(rid, actor=ADMIN)
    assert_failed_from(r, Phase.REVOCABLE, "refused to revoke")
    assert w.auth_ok(new) and w.auth_ok(w.initial)  # nothing was revoked
    assert not w.destroyed("1")

    rolled = w.service.rollback(rid, actor=ADMIN, reason="revoke failed; go back")
    assert rolled.phase is Phase.ROLLED_BACK
    # As `vault kv rollback`: version 1's data is current again (as version 3).
    assert w.labels() == {"rotabot-current": "3", "rotabot-previous": "2"}
    assert w.current_password() == w.initial and w.auth_ok(w.initial)
    assert w.auth_ok(new)  # kept valid: rollback without revoking the new one


# --- postgres-role ----------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_role_store_write_fails_minted_role_is_locked_again_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer,
    openbao_server: OpenBaoServer,
) -> None:
    base = f"st_{secrets.token_hex(3)}"
    first = first_pg_credential(postgres_server.dsn, base)
    root = hvac.Client(url=openbao_server.url, token=openbao_server.token)
    path = f"stranded/{uuid.uuid4().hex[:10]}/warehouse"
    root.secrets.kv.v2.create_or_update_secret(path=path, secret=first)
    monkeypatch.setenv("VAULT_TOKEN", openbao_server.token)
    monkeypatch.setenv("PG_ADMIN_DSN", postgres_server.dsn)
    monkeypatch.setenv("REDIS_ADMIN_URL", "redis://unused")
    clock = FixedClock()
    service, _ = build_service(
        tmp_path,
        CATALOG.format(owner=OWNER, bao_url=openbao_server.url, secret=SECRET,
                       issuer="warehouse", user="", path=path, base_role=base),
        lambda b: Wrapped(b, store_wrapper=lambda s: FaultyStore(s, "write_pending")), clock)

    def login(user: str, password: str) -> bool:
        return pg_login_ok(postgres_server.host, postgres_server.port, user, password)

    def can_login(role: str) -> bool:
        with psycopg.connect(postgres_server.dsn) as conn:
            row = conn.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (role,))
            return row.fetchone() == (True,)

    try:
        r = service.start(SECRET, actor=ADMIN)
        assert_failed_from(r, Phase.READY_CHECK, "injected")
        # The role minted for the new credential was locked again; the stored one logs in.
        stored = VaultKV2Store(root).read(path).reveal()
        assert stored["username"] == f"{base}_a"
        assert login(stored["username"], stored["password"])
        assert not can_login(f"{base}_b")

        assert r.id is not None
        resumed = service.resume(r.id, actor=ADMIN)
        assert resumed.phase is Phase.DISTRIBUTING
        new = VaultKV2Store(root).read(path, "staged-1").reveal()
        assert new["username"] == f"{base}_b"
        assert login(new["username"], new["password"])
        assert login(stored["username"], stored["password"])
    finally:
        drop_pg_roles(postgres_server.dsn, base)
