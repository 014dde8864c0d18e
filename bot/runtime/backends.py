"""Builds each secret's store and issuer from the catalog, once, with credentials from the
environment (the catalog names variables; it never holds a credential)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from bot.catalog import AnyTarget, Catalog, target_label
from bot.domain.credentials import IssuerError, StoreError
from bot.services.ports import Issuer, LaneTarget, ReloadHook, Store, Target


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
        self._clients: dict[str, object] = {}  # store name -> its hvac or boto3 client
        self._targets: dict[str, dict[str, list[LaneTarget]]] = {}
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
            from adapters.vault_store import VaultKV2Store

            return VaultKV2Store(
                self._client(name, config),
                mount=getattr(config, "mount", "secret"),
                pending_prefix=getattr(config, "pending_prefix", "rotabot-pending"),
                audit_log=getattr(config, "audit_log", None),
            )
        if kind == "aws-secretsmanager":
            from adapters.aws_secretsmanager import SecretsManagerStore

            return SecretsManagerStore(self._client(name, config))
        raise StoreError(f"store {name}: kind {kind!r} is not supported")

    def _client(self, name: str, config: object) -> object:
        """One client per named store, shared by the store and the targets on it."""
        if name in self._clients:
            return self._clients[name]
        from bot import catalog as cfg

        client: object
        if isinstance(config, cfg.VaultKv2Store):
            from adapters.vault_store import make_vault_client

            approle = config.approle
            client = make_vault_client(
                config.url,
                env=self._env,
                token_env=config.token_env or "VAULT_TOKEN",
                approle_role_id_env=approle.role_id_env if approle else None,
                approle_secret_id_env=approle.secret_id_env if approle else None,
                namespace=config.namespace,
            )
        elif isinstance(config, cfg.AwsSecretsManagerStore):
            from adapters.aws_secretsmanager import make_secretsmanager_client

            client = make_secretsmanager_client(
                region=config.region,
                endpoint_url=config.endpoint_url,
                env=self._env,
                access_key_id_env=config.access_key_id_env,
                secret_access_key_env=config.secret_access_key_env,
            )
        else:
            raise StoreError(f"store {name}: kind {getattr(config, 'kind', None)!r} has no client")
        self._clients[name] = client
        return client

    def targets_for(self, secret: str) -> dict[str, list[LaneTarget]]:
        """Lane -> the built targets of ``secret`` (adapters made on first use, then kept).
        A target whose store cannot be reached or logged in to raises StoreError naming it."""
        spec = self._catalog.secret(secret)
        with self._lock:
            if secret not in self._targets:
                self._targets[secret] = {
                    lane: [self._lane_target(t) for t in targets]
                    for lane, targets in spec.lane_targets().items()
                }
            return self._targets[secret]

    def _lane_target(self, spec: AnyTarget) -> LaneTarget:
        hook: ReloadHook | None = None
        if spec.reload is not None:
            from adapters.reload_hook import HttpReloadHook

            hook = HttpReloadHook.from_spec(spec.reload, self._env)
        return LaneTarget(label=target_label(spec), target=self._target(spec), hook=hook)

    def _target(self, spec: AnyTarget) -> Target:
        from bot import catalog as cfg

        if isinstance(spec, cfg.EnvFileTarget):
            from adapters.env_file import EnvFileTarget

            path = Path(spec.file)
            return EnvFileTarget(path if path.is_absolute() else self._base / path, spec.key,
                                 spec.field)
        config = self._catalog.stores[spec.store]  # kind checked when the catalog loaded
        if isinstance(spec, cfg.VaultKv2Target):
            from adapters.vault_store import VaultKV2Target

            return VaultKV2Target(
                self._client(spec.store, config),
                path=spec.path,
                mount=str(spec.mount or getattr(config, "mount", "secret")),
                field=spec.field,
            )
        from adapters.aws_secretsmanager import SecretsManagerTarget

        return SecretsManagerTarget(self._client(spec.store, config), spec.secret_id, spec.field)

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
            return LocalIssuer(fields=tuple(config.fields), keeps_both_valid=config.dual_valid)
        if isinstance(config, cfg.RedisAclIssuer):
            from adapters.redis_acl import RedisAclIssuer, RedisAclPairIssuer

            if config.users is not None:
                return RedisAclPairIssuer(self._from_env(config.url_env, what),
                                          users=(config.users[0], config.users[1]))
            return RedisAclIssuer(self._from_env(config.url_env, what),
                                  user=config.user or secret)
        if isinstance(config, cfg.PostgresRoleIssuer):
            from adapters.postgres_role import PostgresRoleIssuer

            return PostgresRoleIssuer(self._from_env(config.url_env, what),
                                      base_role=config.base_role)
        if isinstance(config, cfg.HttpIssuer):
            return HttpIssuer.from_config(config, env=self._env)
        if isinstance(config, cfg.OpenAIIssuer):
            from adapters.openai_issuer import OpenAIIssuer

            return OpenAIIssuer.from_config(config, env=self._env, secret=secret)
        if isinstance(config, cfg.OpenBaoDatabaseIssuer):
            from adapters.openbao_database import OpenBaoDatabaseIssuer

            return OpenBaoDatabaseIssuer.from_config(config, env=self._env)
        if isinstance(config, cfg.AnthropicIssuer):
            from adapters.anthropic_issuer import AnthropicIssuer

            return AnthropicIssuer.from_config(config, env=self._env)
        if isinstance(config, cfg.WebhookHmacIssuer):
            from adapters.webhook_hmac import WebhookHmacIssuer

            return WebhookHmacIssuer(prefix=config.prefix, nbytes=config.bytes)
        raise IssuerError(f"{what}: kind {kind!r} is not supported")
