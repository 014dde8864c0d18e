"""The back ends a secret names: stores that hold its versions and issuers that mint them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

from bot.catalog.fields import NEVER_HOLDS, EnvName, Url, _custom, _Strict
from bot.catalog.shapes import body_problems

# --- stores -----------------------------------------------------------------------------


class AppRole(_Strict):
    role_id_env: EnvName
    secret_id_env: EnvName


class VaultKv2Store(_Strict):
    """HashiCorp Vault or OpenBao KV version 2 (through hvac)."""

    kind: Literal["vault-kv2"]
    url: Url
    mount: str = "secret"
    token_env: EnvName | None = None
    approle: AppRole | None = None
    namespace: str | None = None
    # Where a pending credential waits until the switch, on the same mount (keep it rotabot's
    # alone in the policy): a normal read of the secret's path returns the current one.
    pending_prefix: str = Field(
        default="rotabot-pending", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$"
    )
    # A file audit device's log, readable on the bot's host (``audit "file"`` in the server
    # config): reads of an old version after the switch become usage evidence.
    audit_log: str | None = Field(default=None, max_length=1000)

    @field_validator("audit_log")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("/") or "\x00" in value):
            raise _custom(
                "audit_log",
                "expected the absolute path of the file audit device's log on the bot's host, "
                "e.g. /var/log/openbao/audit.log",
            )
        return value

    @field_validator("mount", "namespace")
    @classmethod
    def _no_climbing(cls, value: str | None) -> str | None:
        # Both become part of the store's request paths.
        if value is not None and (
            any(part in (".", "..") for part in value.split("/"))
            or any(ord(c) < 32 or c in "\\?#%" for c in value)
        ):
            raise _custom(
                "vault_path",
                "'.' and '..' components, control characters, '\\', '?', '#' and '%' are "
                "refused: this becomes part of the store's request paths",
            )
        return value

    @model_validator(mode="after")
    def _one_login(self) -> VaultKv2Store:
        if self.token_env is None and self.approle is None:
            raise _custom(
                "vault_login",
                "give token_env (or approle) so the bot can log in to the store: the name of "
                "the environment variable holding its token",
            )
        if self.token_env is not None and self.approle is not None:
            raise _custom("vault_login", "give token_env or approle, not both")
        return self


class FileStore(_Strict):
    """A local folder, one file per version, mode 0600. For trials only."""

    kind: Literal["file"]
    path: str


class AwsSecretsManagerStore(_Strict):
    """AWS Secrets Manager through boto3, with its own staging labels (AWSPENDING,
    AWSCURRENT, AWSPREVIOUS). Without the two *_env names boto3's default chain applies
    (instance or task role, AWS_PROFILE, the AWS_* variables)."""

    kind: Literal["aws-secretsmanager"]
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    # A VPC endpoint, or a local stand-in such as moto's server for trials.
    endpoint_url: Url | None = None
    access_key_id_env: EnvName | None = None
    secret_access_key_env: EnvName | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> AwsSecretsManagerStore:
        if (self.access_key_id_env is None) != (self.secret_access_key_env is None):
            raise _custom(
                "aws_login",
                "give access_key_id_env and secret_access_key_env together (the names of the "
                "variables holding the access key), or neither for boto3's default chain",
            )
        return self


AnyStore = VaultKv2Store | FileStore | AwsSecretsManagerStore
StoreConfig = Annotated[AnyStore, Field(discriminator="kind")]


# --- issuers ----------------------------------------------------------------------------


class ManualIssuer(_Strict):
    """A person creates the credential and writes it to the store; the bot notices.

    ``dual_valid`` defaults to true because most providers let two keys live side by side;
    set it to false when creating the new credential invalidates the old one (hard cutover).
    """

    kind: Literal["manual"]
    dual_valid: bool = True
    instructions: str | None = None


class LocalIssuer(_Strict):
    """Mints random values itself: for the sandbox and trials, nothing outside accepts them."""

    kind: Literal["local"]
    fields: list[str] = Field(default_factory=lambda: ["api_key"], min_length=1)
    # False: minting a new value invalidates the old one, as single-key SaaS tokens do (the
    # sandbox rehearses a hard cutover with it).
    dual_valid: bool = True


class RedisAclIssuer(_Strict):
    """Redis 6+ ACL: one user holds both passwords during the overlap, or (``users: [a, b]``)
    two users alternate, so ``CLIENT LIST`` tells who still authenticates as the old one."""

    kind: Literal["redis-acl"]
    url_env: EnvName
    user: str | None = None  # default: the secret's name (filled in by resolved_issuer)
    users: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None, min_length=2, max_length=2
    )

    @model_validator(mode="after")
    def _one_mode(self) -> RedisAclIssuer:
        if self.users is not None:
            if self.user is not None:
                raise _custom(
                    "redis_users",
                    "give user (one user holds both passwords) or users (two users "
                    "alternate), not both",
                )
            if self.users[0] == self.users[1]:
                raise _custom("redis_users", "name two different ACL users: they take turns")
        return self

    @property
    def dual_valid(self) -> bool:
        return True


class PostgresRoleIssuer(_Strict):
    """Two login roles alternate under one group role (``base_role``)."""

    kind: Literal["postgres-role"]
    url_env: EnvName
    base_role: str

    @property
    def dual_valid(self) -> bool:
        return True


class HttpCreate(_Strict):
    method: Literal["POST", "PUT"] = "POST"
    url: Url
    headers_env: dict[str, EnvName] = Field(default_factory=dict)
    body: dict[str, Any] | None = Field(default=None, alias="json")
    key_id_path: str
    secret_path: str

    @field_validator("body")
    @classmethod
    def _no_literal_credentials(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        problems = list(body_problems(value)) if value is not None else []
        if problems:
            raise _custom(
                "body_credential",
                f"{'; '.join(problems)}: {NEVER_HOLDS}; send credentials as headers named by "
                "headers_env (header -> environment variable)",
            )
        return value


class HttpRevoke(_Strict):
    method: Literal["DELETE", "POST", "PUT"] = "DELETE"
    url: Url
    headers_env: dict[str, EnvName] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _has_key_id(cls, value: str) -> str:
        if "{key_id}" not in value:
            raise _custom(
                "key_id_placeholder",
                "the revoke url must contain {key_id}, where the id of the old key goes",
            )
        return value


class HttpIssuer(_Strict):
    """A provider's key-management API: create a key, later revoke the old one."""

    kind: Literal["http"]
    create: HttpCreate
    revoke: HttpRevoke
    dual_valid: bool = True


class OpenAIIssuer(_Strict):
    """OpenAI's organization admin API: project service-account keys. Two service accounts
    alternate (``<prefix>-<secret>-a`` and ``-b``): the new key belongs to the one not in use,
    and revoking the old key deletes its service account (OpenAI refuses to delete a
    service account's key by itself). ``last_used_at`` of the old key is usage evidence."""

    kind: Literal["openai"]
    admin_key_env: EnvName
    project_id: str = Field(pattern=r"^proj_[A-Za-z0-9]{1,64}$")
    base_url: Url = "https://api.openai.com/v1"
    service_account_prefix: str = Field(default="rotabot", pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")

    @property
    def dual_valid(self) -> bool:
        return True


class OpenBaoDatabaseIssuer(_Strict):
    """OpenBao's (or Vault's) database secrets engine with two static roles that alternate,
    as postgres-role alternates login roles: the engine rotates the standby role's password
    and that becomes the new credential; revoking rotates the old role's password again."""

    kind: Literal["openbao-database"]
    url: Url
    token_env: EnvName
    mount: str = Field(default="database", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    roles: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]] = Field(
        min_length=2, max_length=2
    )
    # A PostgreSQL URL (in this environment variable) to read pg_stat_activity for evidence
    # that nobody still logs in with the old role; without it the gate says it cannot tell.
    usage_url_env: EnvName | None = None

    @field_validator("roles")
    @classmethod
    def _two_roles(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise _custom("roles", "name two different static roles: they take turns")
        return value

    @property
    def dual_valid(self) -> bool:
        return True


class AnthropicIssuer(_Strict):
    """Anthropic's Admin API lists, reads and updates API keys but cannot create them: a person
    creates the key in the console and writes it to the store (as with ``manual``); rotabot
    finds its id by the key's partial hint, and on revoke sets the old key ``inactive``."""

    kind: Literal["anthropic"]
    admin_key_env: EnvName
    base_url: Url = "https://api.anthropic.com"
    workspace_id: str | None = Field(default=None, pattern=r"^wrkspc_[A-Za-z0-9]{1,64}$")
    instructions: str | None = None

    @property
    def dual_valid(self) -> bool:
        return True


class WebhookHmacIssuer(_Strict):
    """Signing secrets for webhooks whose receivers accept several secrets for a while: the
    store holds ``secret`` (the newest, to sign with) and ``secrets`` (a JSON list, newest
    first, to verify against); revoking drops the old one from the list."""

    kind: Literal["webhook-hmac"]
    prefix: str = Field(default="whsec_", pattern=r"^[A-Za-z0-9_-]{0,16}$")
    bytes: int = Field(default=32, ge=16, le=128)

    @property
    def dual_valid(self) -> bool:
        return True


AnyIssuer = (
    ManualIssuer | LocalIssuer | RedisAclIssuer | PostgresRoleIssuer | HttpIssuer | OpenAIIssuer
    | OpenBaoDatabaseIssuer | AnthropicIssuer | WebhookHmacIssuer
)
IssuerConfig = Annotated[AnyIssuer, Field(discriminator="kind")]


class IssuerRef(BaseModel):
    """``{name: cache, user: app}``: a named issuer plus per-secret parameters.

    The parameters are checked against the named issuer's kind when the catalog loads.
    """

    model_config = ConfigDict(extra="allow")

    name: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _issuer_form(value: Any) -> str | None:
    if isinstance(value, IssuerRef):
        return "ref"
    if isinstance(value, BaseModel):
        return "inline"
    if isinstance(value, Mapping):
        if "kind" in value and "name" not in value:
            return "inline"
        if "name" in value and "kind" not in value:
            return "ref"
    return None


IssuerSpec = Annotated[
    Union[Annotated[IssuerConfig, Tag("inline")], Annotated[IssuerRef, Tag("ref")]],  # noqa: UP007
    Discriminator(
        _issuer_form,
        custom_error_type="issuer_form",
        custom_error_message=(
            "give either kind: (an inline issuer, e.g. {kind: manual}) or name: (an issuer "
            "defined under issuers), exactly one of them"
        ),
    ),
]


# Built once and shared: it checks a named issuer merged with one secret's parameters, both
# at load (the loader) and when a rotation asks for the issuer (Catalog.resolved_issuer).
_ISSUER_ADAPTER: TypeAdapter[AnyIssuer] = TypeAdapter(IssuerConfig)
