"""The dependency map: structured form and the plain text `rotabot catalog map` prints."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bot.catalog import UnknownSecret, load_catalog, parse_catalog
from bot.catalog.backends import RedisAclIssuer, VaultKv2Store
from bot.catalog.dependency_map import HealthCheckView, dependency_map, evidence_of, render_map

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yml"

SMALL = textwrap.dedent("""\
    version: 1
    defaults: {channel: C0ROTATE, lanes: [dev, staging, prod]}
    stores:
      vault: {kind: vault-kv2, url: "http://127.0.0.1:8200", token_env: VAULT_TOKEN}
    issuers:
      vendor:
        kind: http
        dual_valid: false
        create: {url: "https://v.example/keys", key_id_path: id, secret_path: key}
        revoke: {url: "https://v.example/keys/{key_id}"}
    secrets:
      model-api-key:
        description: Model provider key
        issuer: {name: vendor}
        store: {name: vault, path: ai/model-api-key}
        consumers:
          inference-api:
            owner: U0ALICE
            lane: prod
            reload: hot
            health_check: {url: "http://inference/deep", version_field: key_version}
            rollback: Pin the previous store version
          nightly-ingest: {owner: S0DATAENG, lane: staging, reload: restart}
          laptop: {owner: U0BOB, lane: qa, reload: hot}
    """)


def test_render_map_text() -> None:
    assert render_map(parse_catalog(SMALL), "model-api-key") == textwrap.dedent("""\
        secret: model-api-key
        description: Model provider key
        issuer: http 'vendor', HARD CUTOVER: cannot keep two credentials valid
        evidence of the old credential's use: none: the generic key API says nothing about use
        store: vault (vault-kv2, http://127.0.0.1:8200, mount secret), path ai/model-api-key
        lanes, in validation order: dev -> staging -> prod -> qa

        [dev]
          (no consumers)

        [staging]
          nightly-ingest: owner S0DATAENG, reload restart
            health check: no health check
            rollback: no rollback note
            evidence: optional (POST /evidence)

        [prod]
          inference-api: owner U0ALICE, reload hot
            health check: GET http://inference/deep -> 200 (credential version in 'key_version')
            rollback: Pin the previous store version
            evidence: optional (POST /evidence)

        [qa] (not in lanes: validates last)
          laptop: owner U0BOB, reload hot
            health check: no health check
            rollback: no rollback note
            evidence: optional (POST /evidence)
        """)


def test_structured_map_of_example() -> None:
    m = dependency_map(load_catalog(EXAMPLE), "model-api-key")
    assert (m.secret, m.issuer_kind, m.issuer_name, m.dual_valid) == (
        "model-api-key", "manual", None, True
    )
    assert (m.store_name, m.store_kind, m.store_location, m.store_path) == (
        "local", "file", "folder ./var/secrets", "ai/model-api-key"
    )
    assert [(lane.name, [c.name for c in lane.consumers]) for lane in m.lanes] == [
        ("dev", ["notebook-sandbox"]),
        ("staging", ["rag-ingest"]),
        ("prod", ["inference-api"]),
    ]
    prod = m.consumers[-1]
    assert prod.health_check == HealthCheckView(
        method="GET", url="http://inference.internal/healthz/deep", expect_status=200,
        version_field="credential_version", timeout="5s",
    )
    assert prod.rollback == "Pin the previous store version; no restart needed"
    # The example requires evidence in prod (defaults.require_evidence: [prod]).
    assert prod.reports == ("required: a click is not enough (POST /evidence); heartbeat 10m; "
                            "checks inference, retrieval")
    assert m.consumers[0].reports == "optional (POST /evidence)"
    assert m.consumers[1].owner == "S0DATAENG" and m.consumers[1].reload == "restart"


def test_map_uses_secret_lanes_override() -> None:
    m = dependency_map(load_catalog(EXAMPLE), "analytics-db")
    assert [lane.name for lane in m.lanes] == ["staging", "prod"]
    assert m.issuer_name == "warehouse" and m.issuer_kind == "postgres-role"
    assert m.store_location == "https://vault.internal:8200, mount data-kv, namespace analytics"


def test_unknown_secret() -> None:
    with pytest.raises(UnknownSecret) as info:
        render_map(parse_catalog(SMALL), "model-api")
    assert info.value.suggestions == ["model-api-key"]


def test_the_map_names_each_ai_connectors_issuer_and_evidence_source() -> None:
    from pathlib import Path

    from bot.catalog import load_catalog
    from bot.catalog.dependency_map import EVIDENCE, render_map

    example = load_catalog(Path(__file__).resolve().parents[2] / "examples" / "catalog.yml")
    for secret, kind in [("openai-api-key", "openai"), ("anthropic-api-key", "anthropic"),
                         ("ingest-webhook-secret", "webhook-hmac"),
                         ("warehouse-app-login", "openbao-database")]:
        text = render_map(example, secret)
        assert f"issuer: {kind} (inline)" in text
        assert f"evidence of the old credential's use: {EVIDENCE[kind]}" in text
    # Every issuer kind the catalog knows says what evidence it gives.
    from typing import get_args

    from bot.catalog.backends import AnyIssuer
    kinds = {get_args(m.model_fields["kind"].annotation)[0] for m in get_args(AnyIssuer)}
    assert kinds == set(EVIDENCE)


def test_evidence_names_the_redis_two_user_mode_and_the_store_audit_log() -> None:
    pair = RedisAclIssuer(kind="redis-acl", url_env="R", users=["a", "b"])
    one = RedisAclIssuer(kind="redis-acl", url_env="R", user="app")
    audited = VaultKv2Store(kind="vault-kv2", url="http://127.0.0.1:8200", token_env="T",
                            audit_log="/var/log/openbao/audit.log")
    plain = VaultKv2Store(kind="vault-kv2", url="http://127.0.0.1:8200", token_env="T")
    assert evidence_of(one, plain) == "none: Redis cannot tell which password a connection used"
    assert evidence_of(pair, audited) == (
        "connections still authenticated as the old user (CLIENT LIST); reads of the old "
        "version since the switch (the store's audit log)")
