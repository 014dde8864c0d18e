"""The dependency catalog: the YAML file users write, loaded into strict pydantic models.

``load_catalog`` reports *every* problem at once, each with file, line and field path, e.g.
``catalog.yml:14: secrets.model-api-key.consumers.inference-api.reload: expected one of hot,
restart, staged, got 'restrat'``. Line numbers come from composing the YAML with PyYAML's node
API, which keeps the position of every key, so pydantic's error locations can be mapped back.

The catalog holds names and references only: credentials for the bot come from environment
variables named by ``*_env`` fields, never from the file.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from inspect import isclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bot.domain.durations import EXPECTED as DURATION_EXPECTED
from bot.domain.durations import parse_duration
from bot.domain.errors import RotabotError

RELOAD_MODES: tuple[str, ...] = ("hot", "restart", "staged")
DEFAULT_LANES: tuple[str, ...] = ("dev", "staging", "prod")

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names are typed in `/rotate start NAME` and shown in Slack, so no spaces or punctuation.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CREDENTIAL_KEY = re.compile(
    r"token|passw|secret|api_?key|credential|private_?key|^key$|^auth|^headers$|^bearer",
    re.IGNORECASE,
)


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


# --- field types ------------------------------------------------------------------------


def _custom(kind: str, message: str) -> PydanticCustomError:
    # The message goes through the context so braces in user text are never re-formatted.
    return PydanticCustomError(kind, "{message}", {"message": message})


def _duration(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise _custom("duration", str(exc)) from None
    raise _custom("duration", f"expected {DURATION_EXPECTED}, got {_describe(value)}")


def _env_name(value: Any) -> Any:
    # Never echo the value: if it is not a name it may well be the credential itself.
    if not isinstance(value, str) or not _ENV_NAME.match(value):
        raise _custom(
            "env_name",
            "expected the name of an environment variable (letters, digits and _), not a "
            "value: the catalog never holds credentials",
        )
    return value


def _url(value: Any) -> Any:
    if not isinstance(value, str):
        raise _custom("url", f"expected an http(s) URL, got {_describe(value)}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _custom("url", f"expected an http(s) URL, got {value!r}")
    if parts.password is not None:
        # Do not echo the URL: it carries a password.
        raise _custom(
            "url_credential",
            "this URL carries a password: the catalog never holds credentials; drop it from "
            "the URL and give the bot the credential through an environment variable "
            "(a *_env field)",
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
EnvName = Annotated[str, BeforeValidator(_env_name)]
Url = Annotated[str, BeforeValidator(_url)]


def _check_lanes(value: list[str] | None) -> list[str] | None:
    if value is None:
        return value
    if not value:
        raise _custom("lanes", "list at least one lane, in validation order (e.g. [dev, prod])")
    seen: set[str] = set()
    for lane in value:
        if lane in seen:
            raise _custom("lanes", f"lane '{lane}' is listed twice")
        seen.add(lane)
    return value


class _Strict(BaseModel):
    # extra="forbid" is what catches typos such as `relaod:` or `helth_check:`.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


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


AnyStore = VaultKv2Store | FileStore
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

    @property
    def dual_valid(self) -> bool:
        return True


class RedisAclIssuer(_Strict):
    """Redis 6+ ACL: one user holds both passwords during the overlap."""

    kind: Literal["redis-acl"]
    url_env: EnvName
    user: str | None = None  # default: the secret's name (filled in by resolved_issuer)

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


AnyIssuer = ManualIssuer | LocalIssuer | RedisAclIssuer | PostgresRoleIssuer | HttpIssuer
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


# --- secrets ----------------------------------------------------------------------------


class StoreRef(_Strict):
    name: str
    path: str


class HealthCheck(_Strict):
    """How to check a consumer on its real dependency path, not just "the process is up"."""

    url: Url
    method: Literal["GET", "HEAD", "POST"] = "GET"
    headers_env: dict[str, EnvName] = Field(default_factory=dict)
    expect_status: int = Field(default=200, ge=100, le=599)
    # A JSON field in the response naming the credential version the consumer uses.
    version_field: str | None = None
    timeout: Duration = timedelta(seconds=5)


class ConsumerSpec(_Strict):
    owner: str
    lane: str
    reload: Literal["hot", "restart", "staged"]
    health_check: HealthCheck | None = None
    rollback: str | None = None

    _name: str = PrivateAttr(default="")

    @property
    def name(self) -> str:
        return self._name


class Defaults(_Strict):
    channel: str
    incident_channel: str | None = None  # default: channel
    admins: list[str] = Field(default_factory=list)
    lanes: list[str] = Field(default_factory=lambda: list(DEFAULT_LANES))
    overlap: Duration = timedelta(hours=24)
    observe: Duration = timedelta(hours=2)
    remind_after: Duration = timedelta(minutes=30)
    escalate_after: Duration = timedelta(hours=2)
    auto_revoke: bool = False
    readiness_lead: Duration = timedelta(days=2)
    max_age: Duration | None = None

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
    overlap: Duration | None = None
    observe: Duration | None = None
    remind_after: Duration | None = None
    escalate_after: Duration | None = None
    auto_revoke: bool | None = None
    max_age: Duration | None = None
    consumers: dict[str, ConsumerSpec] = Field(default_factory=dict)

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


_ISSUER_ADAPTER: TypeAdapter[AnyIssuer] = TypeAdapter(IssuerConfig)


class Catalog(_Strict):
    version: Literal[1]
    defaults: Defaults
    stores: dict[str, StoreConfig] = Field(default_factory=dict)
    issuers: dict[str, IssuerConfig] = Field(default_factory=dict)
    secrets: dict[str, SecretSpec] = Field(default_factory=dict)

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
        return EffectiveSettings(
            channel=channel,
            incident_channel=spec.incident_channel or d.incident_channel or channel,
            admins=tuple(spec.admins if spec.admins is not None else d.admins),
            lanes=tuple(spec.lanes if spec.lanes is not None else d.lanes),
            overlap=spec.overlap if spec.overlap is not None else d.overlap,
            observe=spec.observe if spec.observe is not None else d.observe,
            remind_after=spec.remind_after if spec.remind_after is not None else d.remind_after,
            escalate_after=(
                spec.escalate_after if spec.escalate_after is not None else d.escalate_after
            ),
            auto_revoke=spec.auto_revoke if spec.auto_revoke is not None else d.auto_revoke,
            readiness_lead=d.readiness_lead,
            max_age=spec.max_age if spec.max_age is not None else d.max_age,
        )

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
        if isinstance(config, RedisAclIssuer) and config.user is None:
            config = config.model_copy(update={"user": name})
        return ResolvedIssuer(name=issuer_name, config=config)

    def resolved_store(self, name: str) -> ResolvedStore:
        spec = self.secret(name)
        return ResolvedStore(
            name=spec.store.name, path=spec.store.path, config=self.stores[spec.store.name]
        )


# --- loading ----------------------------------------------------------------------------


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog file; raises CatalogInvalid listing every problem."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        error = CatalogError(file, None, "", f"cannot read the catalog: {reason}")
        raise CatalogInvalid([error]) from None
    return parse_catalog(text, file)


def parse_catalog(text: str, file: str = "catalog.yml") -> Catalog:
    """Validate catalog YAML given as text; ``file`` is used in error messages."""
    try:
        return _parse_catalog(text, file)
    except RecursionError:
        # Nesting deeper than Python's stack (YAML's composer and our walkers recurse); a
        # real catalog is a few levels deep, so say so instead of crashing with a traceback.
        raise CatalogInvalid([CatalogError(
            file, 1, "", "invalid YAML: nested too deeply (a catalog is a few levels deep)"
        )]) from None


class _CatalogLoader(yaml.SafeLoader):
    """SafeLoader whose number and date constructors fail with the node's line: PyYAML's
    own raise a bare ValueError for scalars its resolver accepted (``0x_``, ``2001-02-30``)."""


def _guarded(tag: str) -> Any:
    construct = yaml.SafeLoader.yaml_constructors[tag]
    kind = tag.rsplit(":", 1)[-1]

    def wrapper(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        try:
            return construct(loader, node)
        except (ValueError, OverflowError):
            # Not the value itself: a catalog field might hold something sensitive.
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value as {kind}; quote it to keep it text",
                node.start_mark,
            ) from None

    return wrapper


for _tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp"):
    _CatalogLoader.add_constructor(_tag, _guarded(_tag))


def _parse_catalog(text: str, file: str) -> Catalog:
    try:
        # The reader rejects control characters as soon as it is built, before any mark.
        loader = _CatalogLoader(text)
    except yaml.reader.ReaderError as exc:
        at_line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise CatalogInvalid([CatalogError(
            file, at_line, "", f"invalid YAML: character {exc.character:#06x} is not allowed"
        )]) from None
    try:
        node = loader.get_single_node()
        errors = _duplicate_keys(node, (), file, set()) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        line = mark.line + 1 if mark is not None else None
        raise CatalogInvalid([CatalogError(file, line, "", f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:
        raise CatalogInvalid([CatalogError(file, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()

    if node is None or not isinstance(data, dict):
        raise CatalogInvalid([CatalogError(
            file, 1, "",
            "expected a mapping with version, defaults, stores, issuers and secrets"
            + ("" if data is None else f", got {_describe(data)}"),
        )])
    lines: dict[tuple[str, ...], int] = {}
    _index_lines(node, (), lines, set())

    errors += _reference_errors(data, file, lines)
    catalog: Catalog | None = None
    try:
        catalog = Catalog.model_validate(data)
    except ValidationError as exc:
        errors += [
            _translate(e, root_data=data, root_type=Catalog, prefix=(), file=file, lines=lines)
            for e in exc.errors()
        ]
    if errors or catalog is None:
        unique = list(dict.fromkeys(errors))
        unique.sort(key=lambda e: (e.line is None, e.line or 0))
        raise CatalogInvalid(unique)
    catalog._source = file
    catalog._lines = lines
    return catalog


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _key_text(node: yaml.Node) -> str:
    return str(node.value) if isinstance(node, yaml.ScalarNode) else f"<{node.tag}>"


def _index_lines(
    node: yaml.Node, path: tuple[str, ...], lines: dict[tuple[str, ...], int], seen: set[int]
) -> None:
    """Record the line of every mapping key and list item (a later duplicate wins, as in YAML).

    Each node is walked once: content reached again through an alias gets no lines of its
    own, so its errors point at the line that uses the alias (and recursive or exponential
    aliases cannot hang the loader).
    """
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, _key_text(key))
            lines[sub] = _line(key)
            _index_lines(value, sub, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, str(i))
            lines[sub] = _line(item)
            _index_lines(item, sub, lines, seen)


def _duplicate_keys(
    node: yaml.Node, path: tuple[str, ...], file: str, seen: set[int]
) -> list[CatalogError]:
    # YAML lets a later key silently replace an earlier one; in a catalog that usually means
    # a copy-pasted consumer whose first definition is lost.
    errors: list[CatalogError] = []
    if id(node) in seen:
        return errors
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            text = _key_text(key)
            if text == "<<":
                continue
            if text in first:
                errors.append(CatalogError(
                    file, _line(key), _dotted((*path, text)),
                    f"duplicate key '{text}' (first on line {first[text]}); YAML would keep "
                    "only the last one",
                ))
            else:
                first[text] = _line(key)
            errors += _duplicate_keys(value, (*path, text), file, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            errors += _duplicate_keys(item, (*path, str(i)), file, seen)
    return errors


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _line_for(lines: Mapping[tuple[str, ...], int], path: Sequence[str | int]) -> int:
    """The line of ``path``, or of its nearest written ancestor (a missing field's parent)."""
    key = tuple(str(p) for p in path)
    while key:
        if key in lines:
            return lines[key]
        key = key[:-1]
    return 1


def _describe(value: Any) -> str:
    """What kind of value was given, without echoing it (it might be a credential)."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, bool | int | float):
        return repr(value)
    return _describe(value)


def _check_name(
    what: str,
    name: Any,
    path: tuple[str | int, ...],
    file: str,
    lines: Mapping[tuple[str, ...], int],
) -> list[CatalogError]:
    if isinstance(name, str) and not _NAME.match(name):
        return [CatalogError(
            file, _line_for(lines, path), _dotted(path),
            f"{what} name '{name}' may contain only letters, digits, '.', '_' and '-' "
            "(it is typed in /rotate commands)",
        )]
    return []


def _reference_errors(
    data: dict[Any, Any], file: str, lines: Mapping[tuple[str, ...], int]
) -> list[CatalogError]:
    """What pydantic cannot see field by field: names, and references between sections."""
    errors: list[CatalogError] = []
    stores = data.get("stores") if isinstance(data.get("stores"), dict) else {}
    issuers = data.get("issuers") if isinstance(data.get("issuers"), dict) else {}
    secrets = data.get("secrets") if isinstance(data.get("secrets"), dict) else {}
    assert isinstance(stores, dict) and isinstance(issuers, dict) and isinstance(secrets, dict)
    for name in stores:
        errors += _check_name("store", name, ("stores", name), file, lines)
    for name in issuers:
        errors += _check_name("issuer", name, ("issuers", name), file, lines)
    for sname, spec in secrets.items():
        errors += _check_name("secret", sname, ("secrets", sname), file, lines)
        if not isinstance(spec, dict):
            continue
        consumers = spec.get("consumers")
        if isinstance(consumers, dict):
            for cname in consumers:
                errors += _check_name(
                    "consumer", cname, ("secrets", sname, "consumers", cname), file, lines
                )
        store = spec.get("store")
        if isinstance(store, dict) and isinstance(store.get("name"), str):
            path: tuple[str | int, ...] = ("secrets", sname, "store", "name")
            if store["name"] not in stores:
                errors.append(CatalogError(
                    file, _line_for(lines, path), _dotted(path),
                    _undefined("store", store["name"], stores),
                ))
        issuer = spec.get("issuer")
        if (
            isinstance(issuer, dict)
            and "kind" not in issuer
            and isinstance(issuer.get("name"), str)
        ):
            path = ("secrets", sname, "issuer", "name")
            if issuer["name"] not in issuers:
                errors.append(CatalogError(
                    file, _line_for(lines, path), _dotted(path),
                    _undefined("issuer", issuer["name"], issuers),
                ))
            else:
                errors += _issuer_param_errors(
                    issuers[issuer["name"]], issuer, ("secrets", sname, "issuer"), file, lines
                )
    return errors


def _undefined(what: str, name: str, defined: Mapping[Any, Any]) -> str:
    names = sorted(str(n) for n in defined)
    message = f"{what} '{name}' is not defined under {what}s"
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    if close:
        return f"{message} (did you mean '{close[0]}'?)"
    if names:
        return f"{message} (defined: {', '.join(names)})"
    return f"{message} (none are defined)"


def _issuer_param_errors(
    base: Any,
    ref: dict[Any, Any],
    prefix: tuple[str | int, ...],
    file: str,
    lines: Mapping[tuple[str, ...], int],
) -> list[CatalogError]:
    """Check per-secret parameters (``{name: cache, user: app}``) against the named issuer."""
    params = {k: v for k, v in ref.items() if k != "name"}
    if not params or not isinstance(base, dict) or not isinstance(base.get("kind"), str):
        return []
    try:
        _ISSUER_ADAPTER.validate_python({**base, **params})
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            field_loc = err["loc"][1:]  # after the kind tag
            # Problems of the named issuer itself are reported once, under issuers.
            if field_loc and field_loc[0] in params:
                out.append(_translate(
                    err, root_data={**base, **params}, root_type=IssuerConfig, prefix=prefix,
                    file=file, lines=lines,
                ))
        return out
    return []


# --- translating pydantic errors --------------------------------------------------------


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _union_members(tp: Any) -> list[Any]:
    tp = _unwrap(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [m for m in get_args(tp) if m is not type(None)]
    return []


def _tag_of(tp: Any) -> str | None:
    for meta in getattr(tp, "__metadata__", ()):
        if isinstance(meta, Tag):
            return meta.tag
    inner = _unwrap(tp)
    if isclass(inner) and issubclass(inner, BaseModel) and "kind" in inner.model_fields:
        ann = inner.model_fields["kind"].annotation
        if get_origin(ann) is Literal:
            return str(get_args(ann)[0])
    return None


def _field_type(model: type[BaseModel], key: Any) -> Any:
    for name, info in model.model_fields.items():
        if key in (name, info.alias):
            return info.annotation
    return None


def _type_at(root: Any, loc: Sequence[Any]) -> Any:
    """Follow a pydantic error location through the model types (tags pick union members)."""
    tp = root
    for el in loc:
        members = _union_members(tp)
        while len(members) == 1:
            tp, members = members[0], _union_members(members[0])
        if members:
            tp = next((m for m in members if _tag_of(m) == el), None)
        else:
            inner = _unwrap(tp)
            if isclass(inner) and issubclass(inner, BaseModel):
                tp = _field_type(inner, el)
            elif get_origin(inner) is dict:
                tp = get_args(inner)[1]
            elif get_origin(inner) in (list, tuple):
                tp = get_args(inner)[0]
            else:
                tp = None
        if tp is None:
            return None
    return tp


def _model_at(root: Any, loc: Sequence[Any]) -> type[BaseModel] | None:
    tp = _type_at(root, loc)
    members = _union_members(tp)
    if len(members) == 1:
        tp = members[0]
    inner = _unwrap(tp)
    return inner if isclass(inner) and issubclass(inner, BaseModel) else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _data_path(loc: Sequence[Any], data: Any, *, named_last: bool) -> list[str | int]:
    """The part of ``loc`` that exists in the data (dropping union tags), plus the final
    element when it names a missing field (``named_last``)."""
    path: list[str | int] = []
    cur = data
    for i, el in enumerate(loc):
        if isinstance(cur, dict) and el in cur:
            path.append(str(el))
            cur = cur[el]
        elif isinstance(cur, list) and isinstance(el, int) and 0 <= el < len(cur):
            path.append(el)
            cur = cur[el]
        elif named_last and i == len(loc) - 1:
            path.append(str(el))
    return path


def _expected_list(expected: str) -> str:
    items = [s.strip().strip("'") for s in re.split(r", | or ", expected)]
    return ", ".join(items)


def _unknown_field(model: type[BaseModel] | None, key: str) -> str:
    fields = _field_names(model) if model is not None else []
    if f"{key}_env" in fields:
        return (
            f"unknown field '{key}': the catalog never holds credentials; put the value in an "
            f"environment variable and give its name as {key}_env"
        )
    if _CREDENTIAL_KEY.search(key):
        envs = [f for f in fields if f.endswith("_env")]
        how = " or ".join(envs) if envs else "a *_env field"
        return (
            f"unknown field '{key}': the catalog never holds credentials; keep them in "
            f"environment variables and name those with {how}"
        )
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    if close:
        return f"unknown field '{key}' (did you mean '{close[0]}'?)"
    if fields:
        return f"unknown field '{key}' (expected one of: {', '.join(fields)})"
    return f"unknown field '{key}'"


def _translate(
    err: Any,
    *,
    root_data: Any,
    root_type: Any,
    prefix: tuple[str | int, ...],
    file: str,
    lines: Mapping[tuple[str, ...], int],
) -> CatalogError:
    loc = tuple(err["loc"])
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    named_last = kind == "missing"
    path: list[str | int] = [*prefix, *_data_path(loc, root_data, named_last=named_last)]
    message: str

    if kind == "missing":
        message = "required field is missing"
    elif kind == "extra_forbidden":
        message = _unknown_field(_model_at(root_type, loc[:-1]), str(loc[-1]))
    elif kind == "literal_error":
        if path == ["version"]:
            message = f"unsupported catalog version {_shown(value)}; this rotabot reads version: 1"
        else:
            message = f"expected one of {_expected_list(ctx['expected'])}, got {_shown(value)}"
    elif kind == "union_tag_invalid":
        path.append("kind")
        expected = _expected_list(ctx["expected_tags"])
        message = f"expected one of {expected}, got {_shown(ctx.get('tag'))}"
    elif kind == "union_tag_not_found":
        path.append("kind")
        tags = [t for t in map(_tag_of, _union_members(_type_at(root_type, loc))) if t]
        message = "required field is missing" + (f" (one of {', '.join(tags)})" if tags else "")
    elif kind == "string_type":
        message = f"expected text, got {_describe(value)}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = f"expected a whole number, got {_describe(value)}"
    elif kind in ("bool_type", "bool_parsing"):
        message = f"expected true or false, got {_describe(value)}"
    elif kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        message = f"expected a mapping (key: value), got {_describe(value)}"
    elif kind in ("list_type", "tuple_type"):
        message = f"expected a list, got {_describe(value)}"
    elif kind == "greater_than_equal":
        message = f"expected at least {ctx['ge']}, got {_shown(value)}"
    elif kind == "less_than_equal":
        message = f"expected at most {ctx['le']}, got {_shown(value)}"
    elif kind == "issuer_form":
        message = str(err["msg"])
    elif isinstance(err.get("msg"), str) and kind in (
        "duration", "env_name", "url", "url_credential", "key_id_placeholder", "lanes",
        "vault_login",
    ):
        message = err["msg"]
    else:
        text = str(err.get("msg", kind))
        message = text[:1].lower() + text[1:]
    return CatalogError(file, _line_for(lines, path), _dotted(path), message)
