"""Builds each secret's store and issuer from the catalog, once, with credentials from the
environment (the catalog names variables; it never holds a credential)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from bot.catalog import Catalog
from bot.domain.credentials import IssuerError, StoreError
from bot.services.ports import Issuer, Store


class CatalogBackends:
    """The BackendRegistry the service uses: one adapter instance per configured back end."""

    def __init__(
        self, catalog: Catalog, env: Mapping[str, str], base_dir: Path | None = None
    ) -> None:
        self._catalog = catalog
        self._env = env  # the environment as the settings captured it
        # Relative file-store paths are relative to the catalog file, like includes.
        source = catalog.source
        self._base = base_dir or (Path(source).resolve().parent if source else Path.cwd())
        self._stores: dict[str, Store] = {}
        self._issuers: dict[str, Issuer] = {}
        self._lock = threading.Lock()

    def _from_env(self, name: str, what: str) -> str:
        value = self._env.get(name)
        if not value:
            raise IssuerError(f"{what}: environment variable {name} is not set")
        return value

    def store_for(self, secret: str) -> Store:
        resolved = self._catalog.resolved_store(secret)
        with self._lock:
            if resolved.name not in self._stores:
                self._stores[resolved.name] = self._build_store(resolved.name, resolved.config)
            return self._stores[resolved.name]

    def _build_store(self, name: str, config: object) -> Store:
        kind = getattr(config, "kind", None)
        if kind == "file":
            from adapters.file_store import FileStore

            path = Path(getattr(config, "path"))  # noqa: B009
            return FileStore(path if path.is_absolute() else self._base / path)
        if kind == "vault-kv2":
            from adapters.vault_store import VaultKV2Store, make_vault_client

            approle = getattr(config, "approle", None)
            try:
                client = make_vault_client(
                    getattr(config, "url"),  # noqa: B009
                    env=self._env,
                    token_env=getattr(config, "token_env", None) or "VAULT_TOKEN",
                    approle_role_id_env=approle.role_id_env if approle else None,
                    approle_secret_id_env=approle.secret_id_env if approle else None,
                    namespace=getattr(config, "namespace", None),
                )
            except StoreError:
                raise
            return VaultKV2Store(client, mount=getattr(config, "mount", "secret"))
        raise StoreError(f"store {name}: kind {kind!r} is not supported")

    def issuer_for(self, secret: str) -> Issuer:
        with self._lock:
            if secret not in self._issuers:
                self._issuers[secret] = self._build_issuer(secret)
            return self._issuers[secret]

    def _build_issuer(self, secret: str) -> Issuer:
        from adapters.http_issuer import HttpIssuer
        from adapters.local_issuer import LocalIssuer
        from adapters.manual_issuer import ManualIssuer
        from bot import catalog as cfg

        resolved = self._catalog.resolved_issuer(secret)
        config = resolved.config
        kind: str = config.kind
        what = f"issuer of {secret} ({kind})"
        if isinstance(config, cfg.ManualIssuer):
            return ManualIssuer(keeps_both_valid=resolved.dual_valid)
        if isinstance(config, cfg.LocalIssuer):
            return LocalIssuer(fields=tuple(config.fields))
        if isinstance(config, cfg.RedisAclIssuer):
            from adapters.redis_acl import RedisAclIssuer

            return RedisAclIssuer(self._from_env(config.url_env, what),
                                  user=config.user or secret)
        if isinstance(config, cfg.PostgresRoleIssuer):
            from adapters.postgres_role import PostgresRoleIssuer

            return PostgresRoleIssuer(self._from_env(config.url_env, what),
                                      base_role=config.base_role)
        if isinstance(config, cfg.HttpIssuer):
            return HttpIssuer.from_config(config, env=self._env)
        raise IssuerError(f"{what}: kind {kind!r} is not supported")
