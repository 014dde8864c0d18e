"""Distribution targets in the catalog: what a lane's consumers read, checked when it loads."""

from __future__ import annotations

import textwrap

import pytest

from bot.catalog import (
    AwsSecretsManagerTarget,
    CatalogInvalid,
    EnvFileTarget,
    VaultKv2Target,
    parse_catalog,
    target_label,
)

# Line numbers matter: the tests assert them.
BASE = textwrap.dedent("""\
    version: 1
    defaults:
      channel: C0ROTATE
      admins: [U0SECOPS]
    stores:
      vault:
        kind: vault-kv2
        url: http://127.0.0.1:8200
        token_env: VAULT_TOKEN
      aws:
        kind: aws-secretsmanager
        region: eu-west-1
    secrets:
      api-key:
        issuer: {kind: manual}
        store: {name: vault, path: ai/key}
        targets:
          dev:
            - {kind: vault-kv2, store: vault, path: dev/ai/key}
          staging:
            - {kind: env-file, file: /srv/jobs/.env, key: MODEL_API_KEY, field: api_key}
          prod:
            - kind: aws-secretsmanager
              store: aws
              secret_id: prod/ai/key
              reload: {url: "https://deploy.example/hooks/restart", signing_key_env: HOOK_KEY}
        consumers:
          web:
            owner: U0ALICE
            lane: prod
            reload: hot
          batch:
            owner: U0BOB
            lane: dev
            reload: restart
            targets:
              - {kind: env-file, file: batch/.env, key: MODEL_API_KEY}
    """)


def errors_of(text: str) -> list[str]:
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(text, "catalog.yml")
    return [str(e) for e in info.value.errors]


def test_lanes_collect_their_own_and_their_consumers_targets() -> None:
    spec = parse_catalog(BASE).secret("api-key")

    by_lane = spec.lane_targets()

    assert [target_label(t) for t in by_lane["dev"]] == [
        "vault-kv2 dev/ai/key", "env-file batch/.env MODEL_API_KEY"]
    (staging,) = by_lane["staging"]
    assert isinstance(staging, EnvFileTarget) and staging.field == "api_key"
    (prod,) = by_lane["prod"]
    assert isinstance(prod, AwsSecretsManagerTarget) and prod.reload is not None
    assert prod.reload.signing_key_env == "HOOK_KEY"
    assert isinstance(by_lane["dev"][0], VaultKv2Target)


def test_a_target_under_an_unknown_lane_is_named_with_its_line() -> None:
    assert "      staging:\n" in BASE
    text = BASE.replace("      staging:\n", "      stagin:\n")

    assert errors_of(text) == [
        "catalog.yml:20: secrets.api-key.targets.stagin: lane 'stagin' is not one of this "
        "secret's lanes (dev, staging, prod) (did you mean 'staging'?)"
    ]


def test_a_target_store_must_be_defined() -> None:
    text = BASE.replace("store: vault, path: dev/ai/key", "store: vualt, path: dev/ai/key")

    assert errors_of(text) == [
        "catalog.yml:19: secrets.api-key.targets.dev[0].store: store 'vualt' is not defined "
        "under stores (did you mean 'vault'?)"
    ]


def test_a_target_store_must_be_of_the_target_kind() -> None:
    assert "          store: aws\n" in BASE
    text = BASE.replace("          store: aws\n", "          store: vault\n")

    assert errors_of(text) == [
        "catalog.yml:24: secrets.api-key.targets.prod[0].store: store 'vault' is a vault-kv2 "
        "store; a aws-secretsmanager target needs a aws-secretsmanager store"
    ]


@pytest.mark.parametrize(
    ("old", "new", "field", "words"),
    [
        ("file: /srv/jobs/.env", "file: /srv/../etc/.env", "file", "'..' components"),
        ("file: /srv/jobs/.env", "file: /srv/jobs/", "file", "names a folder"),
        ("key: MODEL_API_KEY, field", "key: sk-proj-abcdefghijklmnopqrstuvwxyz012345, field",
         "key", "the catalog never holds credentials"),
        ("dev/ai/key}", "../ai/key}", "path", "may not climb out"),
        ("secret_id: prod/ai/key", "secret_id: 'prod ai key'", "secret_id", "should match"),
        ("kind: env-file, file: /srv", "kind: dotenv, file: /srv", "kind", "expected one of"),
    ],
)
def test_target_fields_are_checked(old: str, new: str, field: str, words: str) -> None:
    assert old in BASE
    errors = errors_of(BASE.replace(old, new))

    assert len(errors) == 1, errors
    assert f".{field}: " in errors[0] and words in errors[0]
    assert "sk-proj-abcdefghijklmnopqrstuvwxyz012345" not in errors[0]


def test_a_literal_credential_in_a_target_is_refused_without_repeating_it() -> None:
    token = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    text = BASE.replace("path: dev/ai/key}", f"path: dev/ai/key, mount: {token}}}")

    errors = errors_of(text)

    assert errors and all(token not in e for e in errors)
    assert any("targets.dev[0]" in e for e in errors)


def test_targets_of_a_lane_without_consumers_are_a_readiness_warning() -> None:
    from bot.catalog.readiness import TARGETS_WITHOUT_CONSUMERS, readiness_findings

    assert "      staging:\n" in BASE
    catalog = parse_catalog(BASE)  # staging has a target but no consumer

    (finding,) = [f for f in readiness_findings(catalog, "api-key")
                  if f.code == TARGETS_WITHOUT_CONSUMERS]
    assert finding.field == "secrets.api-key.targets.staging"
    assert finding.line == 20
    assert "never writes them" in finding.message
