"""The dependency map of one secret: issuer, store, and every lane with its distribution
targets and consumers.

``dependency_map`` builds a structured form (plain dataclasses) that any renderer can use;
``render_map`` turns it into the plain text that ``rotabot catalog map`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from bot.catalog import (
    AnyTarget,
    AwsSecretsManagerStore,
    AwsSecretsManagerTarget,
    Catalog,
    ConsumerSpec,
    FileStore,
    VaultKv2Store,
    VaultKv2Target,
    target_label,
)
from bot.domain.durations import format_duration


@dataclass(frozen=True)
class HealthCheckView:
    method: str
    url: str
    expect_status: int
    version_field: str | None
    timeout: str

    def describe(self) -> str:
        text = f"{self.method} {self.url} -> {self.expect_status}"
        if self.version_field:
            text += f" (credential version in '{self.version_field}')"
        return text


@dataclass(frozen=True)
class ConsumerView:
    name: str
    owner: str
    lane: str
    reload: str
    health_check: HealthCheckView | None
    rollback: str | None
    # How usage evidence recognises it, e.g. "application_name retriever, address 10.0.3.0/24".
    identity: str | None = None
    # What the consumer's own reports (POST /evidence) are expected to show, in words.
    reports: str = "optional (POST /evidence)"


def reports_view(catalog: Catalog, secret: str, c: ConsumerSpec) -> str:
    """The consumer's evidence settings in words: required or optional, heartbeat, checks."""
    parts = [("required: a click is not enough" if catalog.requires_evidence(secret, c.name)
              else "optional") + " (POST /evidence)"]
    if c.heartbeat is not None:
        parts.append(f"heartbeat {format_duration(c.heartbeat)}")
    if c.checks:
        parts.append("checks " + ", ".join(c.checks))
    return "; ".join(parts)


@dataclass(frozen=True)
class TargetView:
    """One place rotabot writes the new credential when the lane opens."""

    label: str  # kind and location, as receipts and the audit trail name it
    store: str | None  # the store (server and login) a vault-kv2 or AWS target is written with
    field: str | None  # the credential's field the target holds; None: all of it
    reload: str | None  # the reload hook called after each write: method and URL, no query

    def describe(self) -> str:
        notes = [f"store {self.store}"] if self.store else []
        if self.field:
            notes.append(f"field {self.field}")
        return self.label + (f" ({', '.join(notes)})" if notes else "")


@dataclass(frozen=True)
class LaneView:
    name: str
    listed: bool  # False: the lane is not in `lanes`, so it validates last
    consumers: tuple[ConsumerView, ...]
    # Where rotabot writes the new credential before the lane's owners are asked.
    targets: tuple[TargetView, ...] = ()


# What each issuer kind can tell the gate about the old credential still being used.
EVIDENCE: dict[str, str] = {
    "manual": "none: rotabot cannot ask the provider",
    "local": "none (trials only)",
    "redis-acl": "none: Redis cannot tell which password a connection used",
    "postgres-role": "sessions of the old role in pg_stat_activity",
    "http": "none: the generic key API says nothing about use",
    "openai": "last_used_at of the old key (OpenAI admin API)",
    "anthropic": "the old key's usage by key id (Anthropic Admin API usage report)",
    "openbao-database": "sessions of the old static role's user in pg_stat_activity "
    "(with usage_url_env)",
    "webhook-hmac": "none: receivers do not say which secret verified a request",
}


def evidence_of(issuer: object, store: object) -> str:
    """EVIDENCE for the issuer's kind, sharpened by its mode, plus what the store's audit
    log adds."""
    kind = str(getattr(issuer, "kind", ""))
    said = EVIDENCE.get(kind, "none")
    if kind == "redis-acl" and getattr(issuer, "users", None):
        said = "connections still authenticated as the old user (CLIENT LIST)"
    if getattr(store, "audit_log", None):
        said += "; reads of the old version since the switch (the store's audit log)"
    return said


@dataclass(frozen=True)
class DependencyMap:
    secret: str
    description: str
    issuer_kind: str
    issuer_name: str | None  # None for an inline issuer
    dual_valid: bool
    evidence: str  # what the gate learns of the old credential's use (EVIDENCE)
    store_name: str
    store_kind: str
    store_location: str  # where the store lives: Vault URL and mount, or the folder
    store_path: str
    lanes: tuple[LaneView, ...]

    @property
    def consumers(self) -> tuple[ConsumerView, ...]:
        return tuple(c for lane in self.lanes for c in lane.consumers)


def hook_url(url: str) -> str:
    """A reload hook's URL as shown: no query string, fragment or user info."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def target_view(target: AnyTarget) -> TargetView:
    hook = target.reload
    return TargetView(
        label=target_label(target),
        store=(
            target.store
            if isinstance(target, VaultKv2Target | AwsSecretsManagerTarget)
            else None
        ),
        field=target.field,
        reload=None if hook is None else f"{hook.method} {hook_url(hook.url)}",
    )


def dependency_map(catalog: Catalog, secret: str) -> DependencyMap:
    """The map of ``secret``; raises UnknownSecret for a name not in the catalog."""
    spec = catalog.secret(secret)
    settings = catalog.settings_for(secret)
    issuer = catalog.resolved_issuer(secret)
    store = catalog.resolved_store(secret)

    if isinstance(store.config, VaultKv2Store):
        location = f"{store.config.url}, mount {store.config.mount}"
        if store.config.namespace:
            location += f", namespace {store.config.namespace}"
    elif isinstance(store.config, AwsSecretsManagerStore):
        location = f"region {store.config.region}"
        if store.config.endpoint_url:
            location += f", endpoint {hook_url(store.config.endpoint_url)}"
    else:
        assert isinstance(store.config, FileStore)
        location = f"folder {store.config.path}"

    views: dict[str, list[ConsumerView]] = {lane: [] for lane in settings.lanes}
    for c in spec.consumers_in_lane_order(settings.lanes):
        hc = c.health_check
        views.setdefault(c.lane, []).append(ConsumerView(
            name=c.name,
            owner=c.owner,
            lane=c.lane,
            reload=c.reload,
            health_check=None if hc is None else HealthCheckView(
                method=hc.method,
                url=hc.url,
                expect_status=hc.expect_status,
                version_field=hc.version_field,
                timeout=format_duration(hc.timeout),
            ),
            rollback=c.rollback,
            identity=None if c.identity is None else ", ".join(
                f"{k} {v}" for k, v in c.identity.model_dump(exclude_none=True).items()),
            reports=reports_view(catalog, secret, c),
        ))
    targets = {
        lane: tuple(target_view(t) for t in ts) for lane, ts in spec.lane_targets().items()
    }
    for lane in targets:
        views.setdefault(lane, [])  # the loader keeps targets to known lanes; never drop one
    return DependencyMap(
        secret=secret,
        description=spec.description,
        issuer_kind=issuer.kind,
        issuer_name=issuer.name,
        # `overlap: none` is a hard cutover too, whatever the issuer could do.
        dual_valid=not catalog.settings_for(secret).hard_cutover,
        evidence=evidence_of(issuer.config, store.config),
        store_name=store.name,
        store_kind=store.kind,
        store_location=location,
        store_path=store.path,
        lanes=tuple(
            LaneView(
                name=lane,
                listed=lane in settings.lanes,
                consumers=tuple(cs),
                targets=targets.get(lane, ()),
            )
            for lane, cs in views.items()
        ),
    )


def render_map(catalog: Catalog, secret: str) -> str:
    """Plain-text dependency map of ``secret``."""
    m = dependency_map(catalog, secret)
    issuer = f"{m.issuer_kind} '{m.issuer_name}'" if m.issuer_name else f"{m.issuer_kind} (inline)"
    overlap = (
        "keeps old and new valid together"
        if m.dual_valid
        else "HARD CUTOVER: cannot keep two credentials valid"
    )
    out = [
        f"secret: {m.secret}",
        f"description: {m.description or '(none)'}",
        f"issuer: {issuer}, {overlap}",
        f"evidence of the old credential's use: {m.evidence}",
        f"store: {m.store_name} ({m.store_kind}, {m.store_location}), path {m.store_path}",
        "lanes, in validation order: " + " -> ".join(lane.name for lane in m.lanes),
    ]
    for lane in m.lanes:
        out.append("")
        note = "" if lane.listed else " (not in lanes: validates last)"
        out.append(f"[{lane.name}]{note}")
        if lane.targets:
            out.append("  targets (rotabot writes the new credential here when the lane opens):")
            for t in lane.targets:
                out.append(f"    {t.describe()}")
                if t.reload:
                    out.append(f"      reload hook: {t.reload}")
        if not lane.consumers:
            out.append("  (no consumers)")
        for c in lane.consumers:
            out.append(f"  {c.name}: owner {c.owner}, reload {c.reload}")
            check = c.health_check.describe() if c.health_check else "no health check"
            out.append(f"    health check: {check}")
            out.append(f"    rollback: {c.rollback or 'no rollback note'}")
            if c.identity:
                out.append(f"    identity (usage evidence): {c.identity}")
            out.append(f"    evidence: {c.reports}")
    return "\n".join(out) + "\n"
