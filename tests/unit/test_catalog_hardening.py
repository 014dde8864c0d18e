"""Catalog hardening: literal credentials, oversize names, unsafe lane names and store paths are
refused at load, each as ``file:line: field: message``, and no message repeats the value."""

from __future__ import annotations

import secrets
import string
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import ButtonElement

from bot.catalog import CatalogInvalid, parse_catalog
from bot.domain.lifecycle import StepState
from handlers.blocks import start_modal
from handlers.ids import StepButton

_ALNUM = string.ascii_letters + string.digits


def _random(n: int, alphabet: str = _ALNUM) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


# Fresh fake credentials each run, in the shapes providers publish.
GITHUB = "ghp_" + _random(36)
AWS = "AKIA" + _random(16, string.ascii_uppercase + string.digits)
SLACK = "xoxb-" + _random(10, string.digits) + "-" + _random(24)
ANTHROPIC = "sk-ant-api03-" + _random(40)
HEX = secrets.token_hex(20)
MIXED = "K" + _random(39)  # a letter first: it would pass for a variable name
PASSWORD = "hunter2-" + _random(8)

# Line numbers in the comments: the tests below assert them.
BASE = textwrap.dedent("""\
    version: 1
    defaults:
      channel: C0ROTATE
      admins: [U0SECOPS]
      lanes: [dev, prod]
    stores:
      vault:
        kind: vault-kv2
        url: http://127.0.0.1:8200
        token_env: VAULT_TOKEN
      local: {kind: file, path: ./var/secrets}
    issuers:
      vendor:
        kind: http
        create:
          url: https://api.vendor.example/v1/keys
          headers_env: {Authorization: VENDOR_ADMIN_AUTH}
          json: {name: rotabot-managed, scopes: [read, write]}
          key_id_path: data.id
          secret_path: data.key
        revoke:
          url: https://api.vendor.example/v1/keys/{key_id}
          headers_env: {Authorization: VENDOR_ADMIN_AUTH}
      cache:
        kind: redis-acl
        url_env: REDIS_ADMIN_URL
    secrets:
      api-key:
        description: Vendor key of the web app
        issuer: {name: vendor}
        store: {name: vault, path: ai/key}
        consumers:
          web:
            owner: U0ALICE
            lane: prod
            reload: hot
            health_check: {url: "http://web.internal/healthz"}
            rollback: Pin the previous version
    """)


def variant(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def errors_of(text: str) -> list[str]:
    with pytest.raises(CatalogInvalid) as info:
        parse_catalog(text, "catalog.yml")
    return [str(e) for e in info.value.errors]


def assert_not_echoed(errors: list[str], value: str) -> None:
    text = "\n".join(errors)
    # Neither the value nor a recognisable piece of it (its end: prefixes are shapes).
    assert value not in text
    assert value[-10:] not in text


def test_base_is_valid() -> None:
    assert list(parse_catalog(BASE).secrets) == ["api-key"]


# --- item 5: literal credentials --------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "where", "says", "value"),
    [
        pytest.param(
            "headers_env: {Authorization: VENDOR_ADMIN_AUTH}\n      json",
            f"headers_env: {{Authorization: {GITHUB}}}\n      json",
            "catalog.yml:17: issuers.vendor.create.headers_env.Authorization",
            "looks like a GitHub token, not the name of an environment variable",
            GITHUB, id="github-token-as-header-env",
        ),
        pytest.param(
            "    token_env: VAULT_TOKEN", f"    token_env: {AWS}",
            "catalog.yml:10: stores.vault.token_env",
            "looks like an AWS access key id, not the name of an environment variable",
            AWS, id="aws-key-as-token-env",
        ),
        pytest.param(
            "url_env: REDIS_ADMIN_URL", f"url_env: {SLACK}",
            "catalog.yml:26: issuers.cache.url_env",
            "expected the name of an environment variable", SLACK, id="slack-token-as-url-env",
        ),
        pytest.param(
            "url_env: REDIS_ADMIN_URL", f"url_env: {ANTHROPIC}",
            "catalog.yml:26: issuers.cache.url_env",
            "expected the name of an environment variable", ANTHROPIC,
            id="anthropic-key-as-url-env",
        ),
        pytest.param(
            "url_env: REDIS_ADMIN_URL", f"url_env: K{HEX}",
            "catalog.yml:26: issuers.cache.url_env",
            "looks like a long random-looking string", HEX, id="high-entropy-env-name",
        ),
        pytest.param(
            "url_env: REDIS_ADMIN_URL", f"url_env: {MIXED}",
            "catalog.yml:26: issuers.cache.url_env",
            "looks like a long random-looking string", MIXED, id="random-env-name",
        ),
        pytest.param(
            'health_check: {url: "http://web.internal/healthz"}',
            f'health_check: {{url: "http://web.internal/healthz?access_token={MIXED}"}}',
            "catalog.yml:37: secrets.api-key.consumers.web.health_check.url",
            "has a credential in its query (parameter 'access_token')", MIXED,
            id="access-token-in-health-check-url",
        ),
        pytest.param(
            "url: https://api.vendor.example/v1/keys\n",
            f"url: https://api.vendor.example/v1/keys?api_key={PASSWORD}\n",
            "catalog.yml:16: issuers.vendor.create.url",
            "has a credential in its query (parameter 'api_key')", PASSWORD,
            id="api-key-in-issuer-url",
        ),
        pytest.param(
            "url: https://api.vendor.example/v1/keys/{key_id}",
            f"url: https://api.vendor.example/v1/keys/{{key_id}}?sig={PASSWORD}",
            "catalog.yml:22: issuers.vendor.revoke.url",
            "has a credential in its query (parameter 'sig')", PASSWORD,
            id="signature-in-revoke-url",
        ),
        pytest.param(
            "url: https://api.vendor.example/v1/keys\n",
            f"url: https://hooks.vendor.example/services/T0/B0/{MIXED}\n",
            "catalog.yml:16: issuers.vendor.create.url",
            "has a long random-looking string (a key or token) in its path", MIXED,
            id="random-secret-in-url-path",
        ),
        pytest.param(
            "url: http://127.0.0.1:8200", f"url: http://rotabot:{PASSWORD}@127.0.0.1:8200",
            "catalog.yml:9: stores.vault.url", "has a password in it", PASSWORD,
            id="password-in-url",
        ),
        pytest.param(
            "url: http://127.0.0.1:8200", f"url: https://{GITHUB}@vault.internal",
            "catalog.yml:9: stores.vault.url", "has a user name in it", GITHUB,
            id="token-as-url-user",
        ),
        pytest.param(
            "url: http://127.0.0.1:8200", f"url: postgres://admin:{PASSWORD}@db:5432/app",
            "catalog.yml:9: stores.vault.url", "expected an http(s) URL, not postgres://",
            PASSWORD, id="dsn-with-another-scheme",
        ),
        pytest.param(
            "url: http://127.0.0.1:8200", f"url: {PASSWORD}",
            "catalog.yml:9: stores.vault.url",
            "expected an http(s) URL, got text that is not one", PASSWORD,
            id="not-a-url-at-all",
        ),
        pytest.param(
            "json: {name: rotabot-managed, scopes: [read, write]}",
            f"json: {{name: rotabot-managed, password: {PASSWORD}}}",
            "catalog.yml:18: issuers.vendor.create.json",
            "'password' holds a literal credential", PASSWORD, id="password-in-json-body",
        ),
        pytest.param(
            "json: {name: rotabot-managed, scopes: [read, write]}",
            f"json: {{name: rotabot-managed, scopes: [read, {GITHUB}]}}",
            "catalog.yml:18: issuers.vendor.create.json",
            "'scopes.1' has a GitHub token", GITHUB, id="token-in-json-body",
        ),
        pytest.param(
            "description: Vendor key of the web app",
            f"description: Vendor key of the web app, currently {GITHUB}",
            "catalog.yml:29: secrets.api-key.description",
            "this value has a GitHub token in it (not repeated here)", GITHUB,
            id="token-in-a-description",
        ),
        pytest.param(
            "rollback: Pin the previous version", f"rollback: export KEY={ANTHROPIC}",
            "catalog.yml:38: secrets.api-key.consumers.web.rollback",
            "this value has an Anthropic API key in it", ANTHROPIC,
            id="token-in-a-rollback-note",
        ),
        pytest.param(
            "reload: hot", f"reload: {GITHUB}",
            "catalog.yml:36: secrets.api-key.consumers.web.reload",
            "expected one of hot, restart, staged, got a value that looks like a GitHub token",
            GITHUB, id="token-in-an-enum-field",
        ),
    ],
)
def test_literal_credentials_are_refused_without_echo(
    old: str, new: str, where: str, says: str, value: str
) -> None:
    errors = errors_of(variant(old, new))
    assert len(errors) == 1, errors
    assert errors[0].startswith(where + ": "), errors
    assert says in errors[0]
    assert_not_echoed(errors, value)


def test_placeholders_and_plain_values_are_not_credentials() -> None:
    # {key_id} in a query, a body without credentials, ids that are only words and numbers.
    text = variant(
        "url: https://api.vendor.example/v1/keys/{key_id}",
        "url: https://api.vendor.example/v1/keys?key={key_id}&region=eu-west-1",
    ).replace("scopes: [read, write]", "scopes: [read, write], project: PROJECT_2024")
    catalog = parse_catalog(text)
    assert catalog.issuers["vendor"].kind == "http"


def test_catalog_check_cli_refuses_and_never_echoes(tmp_path: Path) -> None:
    """One run of the real `rotabot catalog check`, every kind of literal at once."""
    text = variant("    token_env: VAULT_TOKEN", f"    token_env: {AWS}")
    text = text.replace("url: http://127.0.0.1:8200",
                        f"url: redis://:{PASSWORD}@cache.internal:6379")
    text = text.replace(
        'health_check: {url: "http://web.internal/healthz"}',
        f'health_check: {{url: "http://web.internal/healthz?token={MIXED}"}}',
    )
    text = text.replace("{Authorization: VENDOR_ADMIN_AUTH}\n      json",
                        f"{{Authorization: {GITHUB}}}\n      json")
    text = text.replace("description: Vendor key of the web app", f"description: {ANTHROPIC}")
    path = tmp_path / "catalog.yml"
    path.write_text(text)
    run = subprocess.run(
        [sys.executable, "-m", "bot.cli", "catalog", "check", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert out.splitlines()[-1] == f"{path}: INVALID, 5 errors"
    assert f"{path}:9: stores.vault.url: expected an http(s) URL, not redis://" in out
    assert f"{path}:10: stores.vault.token_env: this looks like an AWS access key id" in out
    assert f"{path}:17: issuers.vendor.create.headers_env.Authorization: this looks like " \
           "a GitHub token" in out
    assert f"{path}:29: secrets.api-key.description: this value has an Anthropic API key" in out
    assert (f"{path}:37: secrets.api-key.consumers.web.health_check.url: has a credential in "
            "its query (parameter 'token')") in out
    for value in (AWS, PASSWORD, MIXED, GITHUB, ANTHROPIC):
        assert_not_echoed([out], value)


# --- item 6: names that fit every Slack surface -----------------------------------------


def test_long_names_are_refused_with_their_length() -> None:
    secret, consumer = "s" * 160, "c" * 2100
    # YAML caps implicit keys at 1,024 characters: the long one is an explicit key (? ...).
    text = variant("  api-key:\n", f"  {secret}:\n").replace(
        "      web:\n        owner", f"      ? {consumer}\n      : owner")
    text = text.replace("  vault:\n", f"  {'v' * 101}:\n").replace(
        "{name: vault, path: ai/key}", f"{{name: {'v' * 101}, path: ai/key}}")
    text = text.replace("  cache:\n", f"  {'i' * 120}:\n")
    text = text.replace("lanes: [dev, prod]", f"lanes: [dev, {'p' * 51}]")
    text = text.replace("owner: U0ALICE", f"owner: U{'A' * 150}")
    errors = errors_of(text)
    assert errors == [
        "catalog.yml:5: defaults.lanes[1]: lane name is 51 characters long; at most 50 fit "
        "everywhere it is shown in Slack (pickers, buttons, prompts) and named in alerts",
        f"catalog.yml:7: stores.{'v' * 40}...: store name is 101 characters long; at most "
        "100 fit everywhere it is shown in Slack (pickers, buttons, prompts) and named in alerts",
        f"catalog.yml:24: issuers.{'i' * 40}...: issuer name is 120 characters long; at most "
        "100 fit everywhere it is shown in Slack (pickers, buttons, prompts) and named in alerts",
        f"catalog.yml:28: secrets.{'s' * 40}...: secret name is 160 characters long; at most "
        "100 fit everywhere it is shown in Slack (pickers, buttons, prompts) and named in alerts",
        f"catalog.yml:33: secrets.{'s' * 40}....consumers.{'c' * 40}...: consumer name is 2100 "
        "characters long; at most 100 fit everywhere it is shown in Slack (pickers, buttons, "
        "prompts) and named in alerts",
        f"catalog.yml:34: secrets.{'s' * 40}....consumers.{'c' * 40}....owner: is 151 "
        "characters long; a Slack user or user-group id is a few characters (at most 100)",
    ]


def test_names_at_the_limits_load_and_fit_the_slack_surfaces() -> None:
    secret, consumer, lane = "s" * 100, "c" * 100, "l" * 50
    text = variant("  api-key:\n", f"  {secret}:\n").replace("    web:\n", f"    {consumer}:\n")
    text = text.replace("lanes: [dev, prod]", f"lanes: [dev, {lane}]")
    text = text.replace("lane: prod", f"lane: {lane}")
    catalog = parse_catalog(text)
    # The start picker (option value <= 150) and a step button (value <= 2,000) accept them:
    # to_dict() checks every nested element and raises SlackObjectFormationError past Slack's
    # limits (as it does for a 160-character secret name).
    start_modal(sorted(catalog.secrets)).to_dict()
    value = StepButton(rotation_id=10**9, consumer=consumer, step=StepState.SIGNED_OFF)
    ButtonElement(text="Sign off", action_id="step", value=value.model_dump_json()).to_dict()
    with pytest.raises(SlackObjectFormationError):
        start_modal(["s" * 160]).to_dict()


# --- item 4 (catalog side): lane names are names ----------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        pytest.param("lanes: [dev, prod]", "lanes: [dev, 'pr<!here>od']",
                     "catalog.yml:5: defaults.lanes[1]", id="defaults-lanes"),
        pytest.param("lane: prod", "lane: 'pr<!channel>od'",
                     "catalog.yml:35: secrets.api-key.consumers.web.lane", id="consumer-lane"),
        pytest.param("    store: {name: vault, path: ai/key}\n",
                     "    store: {name: vault, path: ai/key}\n    lanes: ['<https://e.x|x>']\n",
                     "catalog.yml:32: secrets.api-key.lanes[0]", id="secret-lanes"),
    ],
)
def test_lane_names_follow_the_name_rule(old: str, new: str, where: str) -> None:
    errors = [e for e in errors_of(variant(old, new)) if "lane name" in e]
    assert len(errors) == 1, errors
    assert errors[0].startswith(where + ": lane name ")
    assert errors[0].endswith(
        "may contain only letters, digits, '.', '_' and '-' (it is shown in Slack)"
    )


# --- item 7 (part): store paths stay inside their store ----------------------------------


@pytest.mark.parametrize(
    ("path", "says"),
    [
        pytest.param("../../etc/passwd", "'..', '.' and empty components are refused", id="up"),
        pytest.param("ai/../../other-team/key", "'..', '.' and empty components are refused",
                     id="up-in-the-middle"),
        pytest.param("ai/./key", "'..', '.' and empty components are refused", id="dot"),
        pytest.param("ai//key", "'..', '.' and empty components are refused", id="empty"),
        pytest.param("/etc/shadow", "must be relative to the store", id="absolute"),
        pytest.param("ai\\\\..\\\\key", "must be relative to the store", id="backslash"),
        pytest.param("%2e%2e/key", "'?', '#' and '%' are refused", id="percent-encoded"),
        pytest.param("ai/key?version=1", "'?', '#' and '%' are refused", id="query"),
    ],
)
def test_store_paths_that_climb_out_are_refused(path: str, says: str) -> None:
    errors = errors_of(variant("path: ai/key}", f'path: "{path}"}}'))
    assert len(errors) == 1, errors
    assert errors[0].startswith("catalog.yml:31: secrets.api-key.store.path: ")
    assert says in errors[0]


@pytest.mark.parametrize("mount", ["../sys", "secret/../sys", "secret?x"])
def test_vault_mounts_that_climb_out_are_refused(mount: str) -> None:
    errors = errors_of(variant("    token_env: VAULT_TOKEN\n",
                               f'    token_env: VAULT_TOKEN\n    mount: "{mount}"\n'))
    assert len(errors) == 1, errors
    assert errors[0].startswith("catalog.yml:11: stores.vault.mount: ")
