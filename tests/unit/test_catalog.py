"""Catalog loading: every error with file, line and field; the models the app uses."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from bot.catalog import (
    AnthropicIssuer,
    AwsSecretsManagerStore,
    Catalog,
    CatalogError,
    CatalogInvalid,
    FileStore,
    HttpIssuer,
    ManualIssuer,
    OpenAIIssuer,
    OpenBaoDatabaseIssuer,
    PostgresRoleIssuer,
    RedisAclIssuer,
    UnknownSecret,
    VaultKv2Store,
    WebhookHmacIssuer,
    load_catalog,
    parse_catalog,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "catalog.yml"

# Line numbers in the comments: the tests below assert them.
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
    issuers:
      cache:
        kind: redis-acl
        url_env: REDIS_ADMIN_URL
    secrets:
      api-key:
        issuer: {kind: manual}
        store: {name: vault, path: ai/key}
        consumers:
          web:
            owner: U0ALICE
            lane: prod
            reload: hot
    """)


def errors_of(text: str, file: str = "catalog.yml") -> list[str]:
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(text, file)
    return [str(e) for e in info.value.errors]


def variant(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def test_base_is_valid() -> None:
    catalog = parse_catalog(BASE)
    assert list(catalog.secrets) == ["api-key"]


def test_example_catalog_loads_with_zero_errors() -> None:
    catalog = load_catalog(EXAMPLE)
    assert catalog.source == str(EXAMPLE)
    assert set(catalog.secrets) == {
        "model-api-key", "cache-password", "analytics-db", "vector-db-key", "openai-api-key",
        "anthropic-api-key", "ingest-webhook-secret", "warehouse-app-login", "crm-api-token",
    }
    # Every kind of store and issuer is exercised by the example users copy.
    assert {type(s) for s in catalog.stores.values()} == {
        FileStore, VaultKv2Store, AwsSecretsManagerStore}
    kinds = {type(catalog.resolved_issuer(name).config) for name in catalog.secrets}
    assert kinds == {
        ManualIssuer, RedisAclIssuer, PostgresRoleIssuer, HttpIssuer, OpenAIIssuer,
        AnthropicIssuer, WebhookHmacIssuer, OpenBaoDatabaseIssuer}


def test_three_errors_from_the_issue_each_with_its_line() -> None:
    text = textwrap.dedent("""\
        version: 1
        defaults:
          channel: C0ROTATE
          overlap: 24h
        stores:
          vault: {kind: vault-kv2, url: "http://127.0.0.1:8200", token_env: VAULT_TOKEN}
        secrets:
          model-api-key:
            issuer: {kind: manual}
            store: {name: vault, path: ai/model-api-key}
            consumers:
              nightly-ingest: {owner: S0DATAENG, lane: staging, reload: restart}
              inference-api:
                owner: U0ALICE
                lane: prod
                reload: restrat
          cache-password:
            issuer: {kind: manual}
            store: {name: vualt, path: infra/cache}
            observe: 30 minutes
            consumers:
              retriever: {owner: U0BOB, lane: dev, reload: restart}
        """)
    assert errors_of(text) == [
        "catalog.yml:16: secrets.model-api-key.consumers.inference-api.reload: "
        "expected one of hot, restart, staged, got 'restrat'",
        "catalog.yml:19: secrets.cache-password.store.name: "
        "store 'vualt' is not defined under stores (did you mean 'vault'?)",
        "catalog.yml:20: secrets.cache-password.observe: "
        "expected a duration like 30s, 15m, 2h or 3d, got '30 minutes'",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "reload: hot", "reload: restrat",
            ["catalog.yml:22: secrets.api-key.consumers.web.reload: "
             "expected one of hot, restart, staged, got 'restrat'"],
            id="reload-mode",
        ),
        pytest.param(
            "store: {name: vault,", "store: {name: vualt,",
            ["catalog.yml:17: secrets.api-key.store.name: "
             "store 'vualt' is not defined under stores (did you mean 'vault'?)"],
            id="undefined-store",
        ),
        pytest.param(
            "store: {name: vault,", "store: {name: s3,",
            ["catalog.yml:17: secrets.api-key.store.name: "
             "store 's3' is not defined under stores (defined: vault)"],
            id="undefined-store-no-close-name",
        ),
        pytest.param(
            "issuer: {kind: manual}", "issuer: {name: cahce}",
            ["catalog.yml:16: secrets.api-key.issuer.name: "
             "issuer 'cahce' is not defined under issuers (did you mean 'cache'?)"],
            id="undefined-issuer",
        ),
        pytest.param(
            "  admins: [U0SECOPS]", "  observe: 2hours",
            ["catalog.yml:4: defaults.observe: "
             "expected a duration like 30s, 15m, 2h or 3d, got '2hours'"],
            id="bad-duration",
        ),
        pytest.param(
            "  admins: [U0SECOPS]", "  overlap: 24",
            ["catalog.yml:4: defaults.overlap: "
             "expected a duration like 30s, 15m, 2h or 3d, got the number 24"],
            id="duration-without-unit",
        ),
        pytest.param(
            "reload: hot", "relaod: hot",
            ["catalog.yml:19: secrets.api-key.consumers.web.reload: required field is missing",
             "catalog.yml:22: secrets.api-key.consumers.web.relaod: "
             "unknown field 'relaod' (did you mean 'reload'?)"],
            id="typo-in-field-name",
        ),
        pytest.param(
            "        owner: U0ALICE\n", "",
            ["catalog.yml:19: secrets.api-key.consumers.web.owner: required field is missing"],
            id="missing-owner",
        ),
        pytest.param(
            "owner: U0ALICE", "owner: 12345",
            ["catalog.yml:20: secrets.api-key.consumers.web.owner: "
             "expected text, got the number 12345"],
            id="wrong-type",
        ),
        pytest.param(
            "kind: vault-kv2", "kind: vault",
            ["catalog.yml:7: stores.vault.kind: expected one of vault-kv2, file, "
             "aws-secretsmanager, got 'vault'"],
            id="store-kind",
        ),
        pytest.param(
            "    kind: redis-acl\n", "",
            ["catalog.yml:11: issuers.cache.kind: required field is missing "
             "(one of manual, local, redis-acl, postgres-role, http, openai, "
             "openbao-database, anthropic, webhook-hmac)"],
            id="issuer-kind-missing",
        ),
        pytest.param(
            "version: 1", "version: 2",
            ["catalog.yml:1: version: unsupported catalog version 2; this rotabot reads "
             "version: 1"],
            id="version",
        ),
        pytest.param(
            "  channel: C0ROTATE", "  incident_channel: C0INCIDENT",
            ["catalog.yml:2: defaults.channel: required field is missing"],
            id="missing-channel",
        ),
        pytest.param(
            "  admins: [U0SECOPS]", "  lanes: [dev, dev]",
            ["catalog.yml:4: defaults.lanes: lane 'dev' is listed twice"],
            id="duplicate-lane",
        ),
        pytest.param(
            "issuer: {kind: manual}", "issuer: {kind: manual, name: cache}",
            ["catalog.yml:16: secrets.api-key.issuer: give either kind: (an inline issuer, "
             "e.g. {kind: manual}) or name: (an issuer defined under issuers), exactly one "
             "of them"],
            id="issuer-kind-and-name",
        ),
        pytest.param(
            "issuer: {kind: manual}", "issuer: {name: cache, usr: app}",
            ["catalog.yml:16: secrets.api-key.issuer.usr: "
             "unknown field 'usr' (did you mean 'user'?)"],
            id="issuer-parameter-checked-against-named-kind",
        ),
        pytest.param(
            "  api-key:", "  api key:",
            ["catalog.yml:15: secrets.api key: secret name 'api key' may contain only "
             "letters, digits, '.', '_' and '-' (it is typed in /rotate commands)"],
            id="name-with-space",
        ),
        pytest.param(
            "reload: hot", "reload: hot\n        health_check: {url: 'http://x/h', "
            "expect_status: 42}",
            ["catalog.yml:23: secrets.api-key.consumers.web.health_check.expect_status: "
             "expected at least 100, got 42"],
            id="status-range",
        ),
        pytest.param(
            "reload: hot", "reload: hot\n        health_check: {url: 'ftp://x/h'}",
            ["catalog.yml:23: secrets.api-key.consumers.web.health_check.url: "
             "expected an http(s) URL, not ftp://"],
            id="health-check-url",
        ),
        pytest.param(
            "reload: hot", "reload: hot\n        reload: restart",
            ["catalog.yml:23: secrets.api-key.consumers.web.reload: duplicate key 'reload' "
             "(first on line 22); YAML would keep only the last one"],
            id="duplicate-key",
        ),
        pytest.param(
            "reload: hot", "reload: hot: x",
            ["catalog.yml:22: invalid YAML: mapping values are not allowed here"],
            id="yaml-syntax",
        ),
    ],
)
def test_single_mistakes(old: str, new: str, expected: list[str]) -> None:
    assert errors_of(variant(old, new)) == expected


@pytest.mark.parametrize(
    ("old", "new", "expected", "leaked"),
    [
        pytest.param(
            "    token_env: VAULT_TOKEN", "    token: hvs.CAESIsupersecret",
            ["catalog.yml:9: stores.vault.token: unknown field 'token': the catalog never "
             "holds credentials; put the value in an environment variable and give its name "
             "as token_env"],
            "supersecret",
            id="literal-token",
        ),
        pytest.param(
            "reload: hot", "reload: hot\n        password: hunter2",
            ["catalog.yml:23: secrets.api-key.consumers.web.password: unknown field "
             "'password': the catalog never holds credentials; keep them in environment "
             "variables and name those with a *_env field"],
            "hunter2",
            id="literal-password",
        ),
        pytest.param(
            "url_env: REDIS_ADMIN_URL", "url_env: redis://:hunter2@cache:6379",
            ["catalog.yml:13: issuers.cache.url_env: expected the name of an environment "
             "variable (letters, digits and _), not a value: the catalog never holds "
             "credentials"],
            "hunter2",
            id="value-in-env-field",
        ),
        pytest.param(
            "url: http://127.0.0.1:8200", "url: http://root:hunter2@127.0.0.1:8200",
            ["catalog.yml:8: stores.vault.url: has a password in it (user:password@host): the "
             "catalog never holds credentials; drop it from the URL and name an environment "
             "variable instead (a *_env field)"],
            "hunter2",
            id="password-in-url",
        ),
        pytest.param(
            "    token_env: VAULT_TOKEN", "    token_env: VAULT_TOKEN\n    approle: hvs.xyzzy",
            ["catalog.yml:10: stores.vault.approle: expected a mapping (key: value), got text"],
            "xyzzy",
            id="type-error-does-not-echo",
        ),
    ],
)
def test_credentials_are_refused_and_never_echoed(
    old: str, new: str, expected: list[str], leaked: str
) -> None:
    errors = errors_of(variant(old, new))
    assert errors == expected
    assert not any(leaked in e for e in errors)


def test_all_errors_are_reported_at_once_in_line_order() -> None:
    text = variant("reload: hot", "reload: restrat")
    text = text.replace("kind: vault-kv2", "kind: vault").replace("version: 1", "version: 3")
    text = text.replace("store: {name: vault,", "store: {name: nope,")
    lines = [e.split(":")[1] for e in errors_of(text)]
    assert lines == ["1", "7", "17", "22"]


def test_http_issuer_revoke_url_needs_key_id_placeholder() -> None:
    text = variant(
        "issuers:\n",
        "issuers:\n"
        "  vendor:\n"
        "    kind: http\n"
        "    create: {url: 'https://v/keys', key_id_path: id, secret_path: key}\n"
        "    revoke: {url: 'https://v/keys/latest'}\n",
    )
    assert errors_of(text) == [
        "catalog.yml:14: issuers.vendor.revoke.url: the revoke url must contain {key_id}, "
        "where the id of the old key goes",
    ]


def test_vault_store_needs_a_login() -> None:
    assert errors_of(variant("    token_env: VAULT_TOKEN\n", "")) == [
        "catalog.yml:6: stores.vault: give token_env (or approle) so the bot can log in to the "
        "store: the name of the environment variable holding its token",
    ]


def test_recursive_alias_does_not_hang() -> None:
    assert errors_of("version: 1\ndefaults: {channel: C0}\nsecrets: &s {x: *s}\n")


def test_yaml_error_names_file_and_line() -> None:
    assert errors_of("version: 1\ndefaults: {channel: C0\n", file="conf/x.yml") == [
        "conf/x.yml:3: invalid YAML: while parsing a flow mapping expected ',' or '}', "
        "but got '<stream end>'",
    ]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "- a\n- b\n"])
def test_document_must_be_a_mapping(text: str) -> None:
    errors = errors_of(text)
    assert len(errors) == 1
    assert errors[0].startswith(
        "catalog.yml:1: expected a mapping with version, defaults, stores, issuers and secrets"
    )


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(tmp_path / "nope.yml")
    assert [str(e) for e in info.value.errors] == [
        f"{tmp_path / 'nope.yml'}: cannot read the catalog: No such file or directory"
    ]


def test_load_uses_the_path_as_given(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yml"
    path.write_text(variant("reload: hot", "reload: restrat"))
    with pytest.raises(CatalogInvalid) as info:
        load_catalog(path)
    assert info.value.errors == [CatalogError(
        str(path), 22, "secrets.api-key.consumers.web.reload",
        "expected one of hot, restart, staged, got 'restrat'",
    )]
    assert str(info.value).startswith(f"{path}: catalog invalid, 1 error:\n{path}:22: ")


# --- the helpers the rest of the app calls ---------------------------------------------


@pytest.fixture(scope="module")
def example() -> Catalog:
    return load_catalog(EXAMPLE)


def test_unknown_secret_suggests_closest_names(example: Catalog) -> None:
    with pytest.raises(UnknownSecret) as info:
        example.secret("model-apikey")
    assert info.value.suggestions[0] == "model-api-key"
    assert str(info.value).startswith(
        "no secret 'model-apikey' in the catalog; did you mean 'model-api-key'")
    with pytest.raises(UnknownSecret) as far:
        example.secret("zzz")
    assert far.value.suggestions == []
    assert str(far.value) == (
        "no secret 'zzz' in the catalog; known secrets: analytics-db, anthropic-api-key, "
        "cache-password, crm-api-token, ingest-webhook-secret, model-api-key, openai-api-key, "
        "vector-db-key, warehouse-app-login"
    )


def test_settings_merge_defaults_with_overrides(example: Catalog) -> None:
    plain = example.settings_for("model-api-key")
    assert (plain.channel, plain.incident_channel) == ("C0ROTATE", "C0INCIDENT")
    assert plain.admins == ("U0SECOPS", "S0PLATFORM")
    assert plain.lanes == ("dev", "staging", "prod")
    assert (plain.overlap, plain.observe) == (timedelta(hours=24), timedelta(hours=2))
    assert (plain.remind_after, plain.escalate_after) == (timedelta(minutes=30),
                                                          timedelta(hours=2))
    assert plain.auto_revoke is False
    assert plain.readiness_lead == timedelta(days=2)
    assert plain.max_age == timedelta(days=90)

    custom = example.settings_for("analytics-db")
    assert (custom.channel, custom.incident_channel) == ("C0DATA", "C0DATAOPS")
    assert custom.admins == ("S0DATALEADS",)
    assert custom.lanes == ("staging", "prod")
    assert (custom.remind_after, custom.escalate_after) == (timedelta(hours=1),
                                                            timedelta(hours=4))
    assert custom.auto_revoke is True
    assert custom.max_age == timedelta(days=30)

    cache = example.settings_for("cache-password")
    assert (cache.overlap, cache.observe) == (timedelta(hours=12), timedelta(minutes=30))


def test_settings_defaults_when_omitted() -> None:
    s = parse_catalog(BASE).settings_for("api-key")
    assert s.incident_channel == "C0ROTATE"  # falls back to channel
    assert s.lanes == ("dev", "staging", "prod")
    assert (s.overlap, s.observe, s.remind_after, s.escalate_after, s.readiness_lead) == (
        timedelta(hours=24), timedelta(hours=2), timedelta(minutes=30), timedelta(hours=2),
        timedelta(days=2),
    )
    assert s.auto_revoke is False and s.max_age is None


def test_resolved_issuer_merges_named_issuer_with_secret_parameters(example: Catalog) -> None:
    cache = example.resolved_issuer("cache-password")
    assert cache.name == "cache" and cache.kind == "redis-acl" and cache.dual_valid
    # Two users take turns, so `user` is not defaulted to the secret's name.
    assert cache.config == RedisAclIssuer(kind="redis-acl", url_env="REDIS_ADMIN_URL",
                                          users=["app_a", "app_b"])
    inline = example.resolved_issuer("model-api-key")
    assert inline.name is None and inline.kind == "manual" and inline.dual_valid
    http = example.resolved_issuer("vector-db-key").config
    assert isinstance(http, HttpIssuer)
    assert http.create.body == {"name": "rotabot-managed", "scopes": ["read", "write"]}
    assert http.create.headers_env == {"Authorization": "VECTORDB_ADMIN_AUTH"}
    assert (http.create.method, http.revoke.method) == ("POST", "DELETE")


def test_redis_user_defaults_to_secret_name() -> None:
    catalog = parse_catalog(variant("issuer: {kind: manual}", "issuer: {name: cache}"))
    config = catalog.resolved_issuer("api-key").config
    assert isinstance(config, RedisAclIssuer) and config.user == "api-key"


def test_dual_valid_is_declared_per_issuer() -> None:
    catalog = parse_catalog(variant("issuer: {kind: manual}",
                                    "issuer: {kind: manual, dual_valid: false}"))
    assert catalog.resolved_issuer("api-key").dual_valid is False


def test_resolved_store(example: Catalog) -> None:
    store = example.resolved_store("analytics-db")
    assert (store.name, store.kind, store.path) == ("vault-data", "vault-kv2",
                                                     "warehouse/analytics")
    assert isinstance(store.config, VaultKv2Store)
    assert store.config.approle is not None
    assert store.config.approle.role_id_env == "VAULT_ROLE_ID"
    assert store.config.namespace == "analytics"
    local = example.resolved_store("model-api-key")
    assert local.config == FileStore(kind="file", path="./var/secrets")


def test_consumers_in_lane_order(example: Catalog) -> None:
    spec = example.secret("model-api-key")
    order = [c.name for c in spec.consumers_in_lane_order(["dev", "staging", "prod"])]
    assert order == ["notebook-sandbox", "rag-ingest", "inference-api"]
    # Lanes not listed come last, in the order they first appear.
    reversed_order = [c.name for c in spec.consumers_in_lane_order(["prod"])]
    assert reversed_order == ["inference-api", "notebook-sandbox", "rag-ingest"]


def test_health_check_defaults(example: Catalog) -> None:
    hc = example.secret("model-api-key").consumers["notebook-sandbox"].health_check
    assert hc is not None
    assert (hc.method, hc.expect_status, hc.timeout, hc.version_field, hc.headers_env) == (
        "GET", 200, timedelta(seconds=5), None, {}
    )


def test_line_of(example: Catalog) -> None:
    line = example.line_of("secrets", "model-api-key", "consumers", "inference-api")
    assert line is not None
    text = EXAMPLE.read_text().splitlines()[line - 1]
    assert text.strip() == "inference-api:"


def test_consumer_identity_and_the_redis_two_user_mode_load() -> None:
    text = variant("    url_env: REDIS_ADMIN_URL\n",
                   "    url_env: REDIS_ADMIN_URL\n    users: [cache_a, cache_b]\n")
    text = text.replace("        reload: hot\n", (
        "        reload: hot\n"
        "        identity: {application_name: web, address: 10.0.3.0/24, "
        "vault_accessor: acc-web}\n"))
    catalog = parse_catalog(text)
    identity = catalog.secret("api-key").consumers["web"].identity
    assert identity is not None
    assert (identity.application_name, identity.address, identity.vault_accessor) == (
        "web", "10.0.3.0/24", "acc-web")
    assert isinstance(catalog.issuers["cache"], RedisAclIssuer)
    assert catalog.issuers["cache"].users == ["cache_a", "cache_b"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "        reload: hot\n",
            "        reload: hot\n        identity: {address: inference.internal}\n",
            "catalog.yml:23: secrets.api-key.consumers.web.identity.address: expected an IP "
            "address (10.0.3.7) or a CIDR network (10.0.3.0/24): usage evidence shows client "
            "addresses, not host names",
            id="identity-address",
        ),
        pytest.param(
            "        reload: hot\n",
            "        reload: hot\n        identity: {}\n",
            "catalog.yml:23: secrets.api-key.consumers.web.identity: give at least one of "
            "application_name, address, vault_accessor, user",
            id="identity-empty",
        ),
        pytest.param(
            "        reload: hot\n",
            "        reload: hot\n        identity: {app: web}\n",
            "catalog.yml:23: secrets.api-key.consumers.web.identity.app: unknown field 'app' "
            "(expected one of: application_name, address, vault_accessor, user)",
            id="identity-typo",
        ),
        pytest.param(
            "    url_env: REDIS_ADMIN_URL\n",
            "    url_env: REDIS_ADMIN_URL\n    users: [cache_a, cache_a]\n",
            "catalog.yml:11: issuers.cache: name two different ACL users: they take turns",
            id="redis-same-user-twice",
        ),
        pytest.param(
            "    url_env: REDIS_ADMIN_URL\n",
            "    url_env: REDIS_ADMIN_URL\n    user: app\n    users: [cache_a, cache_b]\n",
            "catalog.yml:11: issuers.cache: give user (one user holds both passwords) or users "
            "(two users alternate), not both",
            id="redis-user-and-users",
        ),
        pytest.param(
            "    token_env: VAULT_TOKEN\n",
            "    token_env: VAULT_TOKEN\n    audit_log: audit.log\n",
            "catalog.yml:10: stores.vault.audit_log: expected the absolute path of the file "
            "audit device's log on the bot's host, e.g. /var/log/openbao/audit.log",
            id="audit-log-relative",
        ),
    ],
)
def test_identity_redis_users_and_audit_log_errors_name_file_and_line(
    old: str, new: str, expected: str
) -> None:
    assert errors_of(variant(old, new)) == [expected]
