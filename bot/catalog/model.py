"""The dependency catalog: the YAML file users write, as strict pydantic models.

The catalog holds names and references only: credentials for the bot come from environment
variables named by ``*_env`` fields, never from the file. Reading the file, and reporting its
problems with file and line, is ``bot.catalog.loader``.
"""

from __future__ import annotations

import difflib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PrivateAttr, field_validator, model_validator

from bot.catalog.backends import (
    _ISSUER_ADAPTER,
    AnyIssuer,
    AnyStore,
    IssuerConfig,
    IssuerRef,
    IssuerSpec,
    RedisAclIssuer,
    StoreConfig,
)
from bot.catalog.fields import (
    NO_OVERLAP,
    Duration,
    EnvName,
    Overlap,
    StorePath,
    Url,
    _custom,
    _Strict,
)
from bot.catalog.freeze import BreakGlassSpec, FreezeWindowSpec
from bot.catalog.shapes import value_shape
from bot.domain.errors import RotabotError
from bot.domain.freeze import FreezeWindow

RELOAD_MODES: tuple[str, ...] = ("hot", "restart", "staged")
DEFAULT_LANES: tuple[str, ...] = ("dev", "staging", "prod")


# --- errors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogError:
    """One problem in the catalog file, formatted ``file:line: field: message``."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        if not self.field:
            return f"{where}: {self.message}"
        return f"{where}: {self.field}: {self.message}"


class CatalogInvalid(RotabotError):
    """The catalog cannot be used; ``errors`` lists every problem found, in file order."""

    def __init__(self, errors: list[CatalogError]) -> None:
        self.errors = errors
        count = f"{len(errors)} error" + ("" if len(errors) == 1 else "s")
        head = f"{errors[0].file}: " if errors else ""
        super().__init__(f"{head}catalog invalid, {count}:\n" + "\n".join(map(str, errors)))


class UnknownSecret(RotabotError):
    """A secret name not in the catalog; ``suggestions`` holds the closest known names."""

    def __init__(self, name: str, suggestions: Sequence[str], known: Sequence[str] = ()) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        if self.suggestions:
            hint = "did you mean " + " or ".join(f"'{s}'" for s in self.suggestions) + "?"
        elif known:
            hint = "known secrets: " + ", ".join(known)
        else:
            hint = "the catalog defines no secrets"
        super().__init__(f"no secret '{name}' in the catalog; {hint}")


# --- secrets ----------------------------------------------------------------------------


def _check_lanes(value: list[str] | None) -> list[str] | None:
    if value is None:
        return value
    if not value:
        raise _custom("lanes", "list at least one lane, in validation order (e.g. [dev, prod])")
    seen: set[str] = set()
    for lane in value:
        if lane in seen:
            shown = "a lane" if value_shape(lane) or len(lane) > 60 else f"lane '{lane}'"
            raise _custom("lanes", f"{shown} is listed twice")
        seen.add(lane)
    return value


class StoreRef(_Strict):
    name: str
    path: StorePath


class HealthCheck(_Strict):
    """How to check a consumer on its real dependency path, not just "the process is up"."""

    url: Url
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers_env: dict[str, EnvName] = Field(default_factory=dict)
    expect_status: int = Field(default=200, ge=100, le=599)
    # A JSON field in the response naming the credential version the consumer uses.
    version_field: str | None = None
    timeout: Duration = timedelta(seconds=5)


def _target_file(value: Any) -> Any:
    """A dotenv file's path: absolute, or relative to the catalog file; no '..', no control
    characters (it is opened for writing)."""
    if not isinstance(value, str) or not value.strip():
        raise _custom("target_file", "expected the path of a dotenv file, like /srv/app/.env")
    if any(part == ".." for part in value.replace("\\", "/").split("/")) or any(
        ord(c) < 32 or ord(c) == 127 for c in value
    ):
        raise _custom(
            "target_file",
            "'..' components and control characters are refused: give the file's own path",
        )
    if value.endswith("/"):
        raise _custom("target_file", "this names a folder; give the dotenv file itself")
    return value


TargetFile = Annotated[str, BeforeValidator(_target_file)]


class ReloadHookSpec(_Strict):
    """An HTTP call after each write to a target, for consumers that need a kick (a restart
    or deploy endpoint). Signed with HMAC-SHA256 when ``signing_key_env`` names a key."""

    url: Url
    method: Literal["POST", "PUT"] = "POST"
    signing_key_env: EnvName | None = None
    timeout: Duration = timedelta(seconds=10)


class _TargetBase(_Strict):
    # The credential's field this target holds (default: all of it; a dotenv key needs one
    # field, so a credential with several fields must name it).
    field: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    reload: ReloadHookSpec | None = None


class VaultKv2Target(_TargetBase):
    """Another path, mount or server of Vault/OpenBao KV v2: ``store`` names a vault-kv2
    store under ``stores`` (its server and login)."""

    kind: Literal["vault-kv2"]
    store: str
    path: StorePath
    mount: str | None = None  # default: the store's mount

    @property
    def location(self) -> str:
        return f"{self.mount + '/' if self.mount else ''}{self.path}"


class EnvFileTarget(_TargetBase):
    """One KEY=value line in a dotenv file, replaced atomically; the file is kept 0600."""

    kind: Literal["env-file"]
    file: TargetFile
    key: EnvName

    @property
    def location(self) -> str:
        return f"{self.file} {self.key}"


class AwsSecretsManagerTarget(_TargetBase):
    """A secret in AWS Secrets Manager: ``store`` names an aws-secretsmanager store."""

    kind: Literal["aws-secretsmanager"]
    store: str
    secret_id: str = Field(pattern=r"^[A-Za-z0-9/_+=.@:-]{1,512}$")

    @property
    def location(self) -> str:
        return self.secret_id


AnyTarget = VaultKv2Target | EnvFileTarget | AwsSecretsManagerTarget
TargetSpec = Annotated[AnyTarget, Field(discriminator="kind")]


def target_label(target: AnyTarget) -> str:
    """How a target is named in Slack, the CLI and the audit trail: kind and location."""
    return f"{target.kind} {target.location}"


class ConsumerIdentity(_Strict):
    """How a consumer shows up where the old credential is used, so usage evidence names it
    instead of reporting an unmapped consumer. A client matches when a field both know agrees
    and none disagrees; give what the platform shows (docs/issuers.md says which)."""

    application_name: str | None = Field(default=None, min_length=1, max_length=200)
    address: str | None = None  # an IP address or a CIDR network, e.g. 10.0.3.0/24
    vault_accessor: str | None = Field(default=None, min_length=1, max_length=200)
    user: str | None = Field(default=None, min_length=1, max_length=200)

    @field_validator("address")
    @classmethod
    def _ip_or_network(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise _custom(
                    "address",
                    "expected an IP address (10.0.3.7) or a CIDR network (10.0.3.0/24): usage "
                    "evidence shows client addresses, not host names",
                ) from None
        return value

    @model_validator(mode="after")
    def _something(self) -> ConsumerIdentity:
        if not any((self.application_name, self.address, self.vault_accessor, self.user)):
            raise _custom(
                "identity",
                "give at least one of application_name, address, vault_accessor, user",
            )
        return self


class ConsumerSpec(_Strict):
    owner: str
    lane: str
    reload: Literal["hot", "restart", "staged"]
    health_check: HealthCheck | None = None
    rollback: str | None = None
    identity: ConsumerIdentity | None = None
    # Where this consumer reads the credential, beyond its lane's targets.
    targets: list[TargetSpec] = Field(default_factory=list)
    # True: owners' clicks on Distributed/Validated are not enough for this consumer; its own
    # report (POST /evidence, or its health check's version_field) must show the new version.
    # None: as its lane says (``require_evidence`` of the secret or defaults).
    require_evidence: bool | None = None
    # How often the consumer reports (POST /evidence); silence longer than this while a
    # rotation touches it raises a ``silent`` alert.
    heartbeat: Duration | None = None
    # Named workflows (e.g. [inference, retrieval]) whose checks must each pass on the new
    # credential (reports naming them as ``workflow``) before the consumer is Validated.
    checks: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")]] = Field(
        default_factory=list)

    _name: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        return self._name


def _evidence_lanes(value: Any) -> Any:
    """``require_evidence``: true (every lane), false (none), or a list of lanes."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
        return value
    raise _custom("require_evidence", "expected true, false or a list of lanes like [prod]")


RequireEvidence = Annotated[bool | list[str], BeforeValidator(_evidence_lanes)]


class AlertmanagerDefaults(_Strict):
    """Which Alertmanager labels name the consumer, the secret and the lane of an alert sent
    to ``POST /alerts`` (default: labels ``consumer``, ``secret`` and ``lane``), e.g.
    ``labels: {consumer: service, secret: credential, lane: env}``."""

    labels: dict[
        Literal["consumer", "secret", "lane"],
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")],
    ] = Field(default_factory=dict)


class Defaults(_Strict):
    channel: str
    incident_channel: str | None = None  # default: channel
    admins: list[str] = Field(default_factory=list)
    lanes: list[str] = Field(default_factory=lambda: list(DEFAULT_LANES))
    overlap: Overlap = timedelta(hours=24)
    observe: Duration = timedelta(hours=2)
    # A hard cutover's window: every owner validates this soon after the new value is out.
    cutover_window: Duration = timedelta(minutes=30)
    remind_after: Duration = timedelta(minutes=30)
    escalate_after: Duration = timedelta(hours=2)
    auto_revoke: bool = False
    readiness_lead: Duration = timedelta(days=2)
    max_age: Duration | None = None
    # Rotate by itself this long after the last finished rotation (readiness review first).
    every: Duration | None = None
    alertmanager: AlertmanagerDefaults = Field(default_factory=AlertmanagerDefaults)
    # Catalog-wide freeze windows (every secret; a secret's own windows add to these).
    freeze: list[FreezeWindowSpec] = Field(default_factory=list)
    # Lanes where a click is not enough: true (all), or a list such as [prod].
    require_evidence: RequireEvidence = False

    @field_validator("lanes")
    @classmethod
    def _lanes_ok(cls, value: list[str]) -> list[str]:
        _check_lanes(value)
        return value


class SecretSpec(_Strict):
    description: str = ""
    issuer: IssuerSpec
    store: StoreRef
    # Per-secret overrides; None means "as in defaults".
    channel: str | None = None
    incident_channel: str | None = None
    admins: list[str] | None = None
    lanes: list[str] | None = None
    overlap: Overlap | None = None
    observe: Duration | None = None
    cutover_window: Duration | None = None
    remind_after: Duration | None = None
    escalate_after: Duration | None = None
    auto_revoke: bool | None = None
    max_age: Duration | None = None
    require_evidence: RequireEvidence | None = None
    every: Duration | None = None
    consumers: dict[str, ConsumerSpec] = Field(default_factory=dict)
    # Lane -> where that lane's consumers read the credential. rotabot writes the new
    # credential there when the lane's turn opens, and the previous one back on rollback.
    targets: dict[str, list[TargetSpec]] = Field(default_factory=dict)
    # This secret's freeze windows, in force beside the catalog's (defaults.freeze).
    freeze: list[FreezeWindowSpec] = Field(default_factory=list)
    # Two-person break-glass: revoking past an unmet gate needs a second admin's approval.
    break_glass: BreakGlassSpec | None = None

    _name: str = PrivateAttr(default="")

    @field_validator("lanes")
    @classmethod
    def _lanes_ok(cls, value: list[str] | None) -> list[str] | None:
        return _check_lanes(value)

    @model_validator(mode="after")
    def _name_consumers(self) -> SecretSpec:
        for name, consumer in self.consumers.items():
            consumer._name = name
        return self

    @property
    def name(self) -> str:
        return self._name

    @property
    def issuer_name(self) -> str | None:
        """The named issuer this secret uses, or None for an inline one."""
        return self.issuer.name if isinstance(self.issuer, IssuerRef) else None

    def lane_targets(self) -> dict[str, list[AnyTarget]]:
        """Every lane's targets: the lane's own, then its consumers' (catalog order, each
        location once)."""
        out: dict[str, list[AnyTarget]] = {}
        for lane, targets in self.targets.items():
            out.setdefault(lane, []).extend(targets)
        for consumer in self.consumers.values():
            out.setdefault(consumer.lane, []).extend(consumer.targets)
        return {
            lane: list({target_label(t): t for t in targets}.values())
            for lane, targets in out.items()
            if targets
        }

    def consumers_in_lane_order(self, lanes: Sequence[str]) -> list[ConsumerSpec]:
        """Consumers lane by lane (in ``lanes`` order), catalog order within a lane.

        Consumers in lanes missing from ``lanes`` come last, in the order their lanes first
        appear, as the rotation validates them (readiness warns about them).
        """
        order = list(lanes)
        for consumer in self.consumers.values():
            if consumer.lane not in order:
                order.append(consumer.lane)
        return sorted(self.consumers.values(), key=lambda c: order.index(c.lane))


@dataclass(frozen=True)
class EffectiveSettings:
    """Defaults merged with one secret's overrides."""

    channel: str
    incident_channel: str
    admins: tuple[str, ...]
    lanes: tuple[str, ...]
    overlap: timedelta
    observe: timedelta
    remind_after: timedelta
    escalate_after: timedelta
    auto_revoke: bool
    readiness_lead: timedelta
    max_age: timedelta | None
    every: timedelta | None = None
    # A hard cutover (`overlap: none`, or an issuer that cannot keep two values valid): the
    # old value dies when the new one is minted, so owners validate within cutover_window.
    hard_cutover: bool = False
    cutover_window: timedelta = timedelta(minutes=30)


class GroupSpec(_Strict):
    """Secrets that belong together (`groups:`): an exclusive group never has two of its
    secrets' rotations active at once (hashicorp/vault#18738: paired roles rotated together
    took an application down), and ``offset`` keeps their recurring rotations apart."""

    secrets: list[str]
    exclusive: bool = True
    offset: Duration | None = None

    @field_validator("secrets")
    @classmethod
    def _two_or_more(cls, value: list[str]) -> list[str]:
        if len(value) < 2:
            raise _custom("secrets", "list at least two secrets (a group of one keeps "
                                     "nothing apart)")
        return value


@dataclass(frozen=True)
class ResolvedIssuer:
    """The issuer config a secret uses: a named issuer merged with the secret's parameters."""

    name: str | None  # None for an inline issuer
    config: AnyIssuer

    @property
    def kind(self) -> str:
        return self.config.kind

    @property
    def dual_valid(self) -> bool:
        """Whether old and new credential stay valid together; False is a hard cutover."""
        return self.config.dual_valid


@dataclass(frozen=True)
class ResolvedStore:
    name: str
    path: str
    config: AnyStore

    @property
    def kind(self) -> str:
        return self.config.kind


class Catalog(_Strict):
    version: Literal[1]
    defaults: Defaults
    stores: dict[str, StoreConfig] = Field(default_factory=dict)
    issuers: dict[str, IssuerConfig] = Field(default_factory=dict)
    secrets: dict[str, SecretSpec] = Field(default_factory=dict)
    groups: dict[str, GroupSpec] = Field(default_factory=dict)

    _source: str | None = PrivateAttr(default=None)
    _lines: dict[tuple[str, ...], int] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _name_secrets(self) -> Catalog:
        for name, spec in self.secrets.items():
            spec._name = name
        return self

    @property
    def source(self) -> str | None:
        """The file this catalog was loaded from, as given."""
        return self._source

    def line_of(self, *path: str | int) -> int | None:
        """The line where ``path`` (e.g. ``"secrets", "x", "store"``) is written, if known."""
        return self._lines.get(tuple(str(p) for p in path))

    def consumer_count(self) -> int:
        return sum(len(s.consumers) for s in self.secrets.values())

    def secret(self, name: str) -> SecretSpec:
        try:
            return self.secrets[name]
        except KeyError:
            known = sorted(self.secrets)
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            raise UnknownSecret(name, close, known) from None

    def settings_for(self, name: str) -> EffectiveSettings:
        spec, d = self.secret(name), self.defaults
        channel = spec.channel or d.channel
        overlap = spec.overlap if spec.overlap is not None else d.overlap
        return EffectiveSettings(
            channel=channel,
            incident_channel=spec.incident_channel or d.incident_channel or channel,
            admins=tuple(spec.admins if spec.admins is not None else d.admins),
            lanes=tuple(spec.lanes if spec.lanes is not None else d.lanes),
            overlap=overlap,
            observe=spec.observe if spec.observe is not None else d.observe,
            remind_after=spec.remind_after if spec.remind_after is not None else d.remind_after,
            escalate_after=(
                spec.escalate_after if spec.escalate_after is not None else d.escalate_after
            ),
            auto_revoke=spec.auto_revoke if spec.auto_revoke is not None else d.auto_revoke,
            readiness_lead=d.readiness_lead,
            max_age=spec.max_age if spec.max_age is not None else d.max_age,
            every=spec.every if spec.every is not None else d.every,
            hard_cutover=overlap == NO_OVERLAP or not self.resolved_issuer(name).dual_valid,
            cutover_window=(
                spec.cutover_window if spec.cutover_window is not None else d.cutover_window
            ),
        )

    def freeze_windows(self, name: str) -> tuple[FreezeWindow, ...]:
        """The freeze windows in force for a secret: the catalog's, then its own."""
        spec = self.secret(name)
        return tuple(w.window() for w in (*self.defaults.freeze, *spec.freeze))

    def requires_evidence(self, secret: str, consumer: str) -> bool:
        """Whether a click is not enough for this consumer's steps: the consumer's own flag,
        else its lane's (the secret's ``require_evidence``, else the defaults')."""
        spec = self.secret(secret)
        c = spec.consumers.get(consumer)
        if c is None:
            return False
        if c.require_evidence is not None:
            return c.require_evidence
        lanes = (spec.require_evidence if spec.require_evidence is not None
                 else self.defaults.require_evidence)
        return lanes if isinstance(lanes, bool) else c.lane in lanes

    def exclusive_group(self, name: str) -> tuple[str, tuple[str, ...]] | None:
        """The exclusive group ``name`` is in and the group's other secrets, if any (the
        loader allows a secret in one exclusive group only)."""
        for group, spec in self.groups.items():
            if spec.exclusive and name in spec.secrets:
                return group, tuple(s for s in spec.secrets if s != name)
        return None

    def offset_group(self, name: str) -> tuple[tuple[str, ...], timedelta] | None:
        """The secrets (catalog order, ``name`` included) whose recurring rotations are kept
        ``offset`` apart from ``name``'s, and that offset; None outside such a group."""
        for spec in self.groups.values():
            if spec.offset is not None and name in spec.secrets:
                return tuple(spec.secrets), spec.offset
        return None

    def resolved_issuer(self, name: str) -> ResolvedIssuer:
        spec = self.secret(name)
        if not isinstance(spec.issuer, IssuerRef):
            config: AnyIssuer = spec.issuer
            issuer_name = None
        else:
            base = self.issuers[spec.issuer.name]  # checked at load
            merged = {**base.model_dump(by_alias=True), **spec.issuer.params}
            config = _ISSUER_ADAPTER.validate_python(merged)
            issuer_name = spec.issuer.name
        if isinstance(config, RedisAclIssuer) and config.user is None and config.users is None:
            config = config.model_copy(update={"user": name})
        return ResolvedIssuer(name=issuer_name, config=config)

    def resolved_store(self, name: str) -> ResolvedStore:
        spec = self.secret(name)
        return ResolvedStore(
            name=spec.store.name, path=spec.store.path, config=self.stores[spec.store.name]
        )
