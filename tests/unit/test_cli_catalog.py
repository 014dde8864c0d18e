"""`rotabot catalog check` and `rotabot catalog map`: output and exit status."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from bot.cli.catalog import check, show_map

EXAMPLE = str(Path(__file__).resolve().parents[2] / "examples" / "catalog.yml")

THREE_ERRORS = textwrap.dedent("""\
    version: 1
    defaults: {channel: C0ROTATE}
    stores:
      vault: {kind: vault-kv2, url: "http://127.0.0.1:8200", token_env: VAULT_TOKEN}
    secrets:
      model-api-key:
        issuer: {kind: manual}
        store: {name: vault, path: ai/model-api-key}
        consumers:
          inference-api: {owner: U0ALICE, lane: prod, reload: restrat}
      cache-password:
        issuer: {kind: manual}
        store: {name: vualt, path: infra/cache}
        observe: soon
        consumers:
          retriever: {owner: U0BOB, lane: dev, reload: hot}
    """)

WARNS = textwrap.dedent("""\
    version: 1
    defaults: {channel: C0ROTATE}
    stores:
      local: {kind: file, path: ./var/secrets}
    secrets:
      api-key:
        issuer: {kind: manual}
        store: {name: local, path: api}
        consumers:
          web-dev: {owner: U0ALICE, lane: dev, reload: hot, health_check: {url: "http://w/h"}}
          web: {owner: U0ALICE, lane: prod, reload: hot}
    """)


def run(fn: object, *args: object) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = fn(*args, out=out)  # type: ignore[operator]
    return code, out.getvalue().splitlines()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "catalog.yml"
    path.write_text(text)
    return str(path)


def test_check_example_is_ok_even_strict() -> None:
    # Its hard cutover is a note (what the secret is), which --strict does not count.
    for strict in (False, True):
        code, lines = run(check, EXAMPLE, strict)
        assert code == 0
        assert lines[-1] == f"{EXAMPLE}: OK, 9 secrets, 19 consumers, 0 warnings, 1 note"
        [note] = lines[:-1]
        assert ": note: secrets.crm-api-token.issuer: hard cutover: " in note


def test_check_three_errors(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_ERRORS)
    assert run(check, path, False) == (1, [
        f"{path}:10: secrets.model-api-key.consumers.inference-api.reload: "
        "expected one of hot, restart, staged, got 'restrat'",
        f"{path}:13: secrets.cache-password.store.name: "
        "store 'vualt' is not defined under stores (did you mean 'vault'?)",
        f"{path}:14: secrets.cache-password.observe: "
        "expected a duration like 30s, 15m, 2h or 3d, got 'soon'",
        f"{path}: INVALID, 3 errors",
    ])


def test_check_warnings_pass_unless_strict(tmp_path: Path) -> None:
    path = write(tmp_path, WARNS)
    warning = (
        f"{path}:11: warning: secrets.api-key.consumers.web: web (prod) has no health_check: "
        "add a health_check so web can be checked on its real dependency path, not just "
        "'the process is up'"
    )
    assert run(check, path, False) == (
        0, [warning, f"{path}: OK, 1 secret, 2 consumers, 1 warning"]
    )
    assert run(check, path, True) == (1, [
        warning,
        f"{path}: FAILED (--strict: warnings count as errors), 1 secret, 2 consumers, "
        "1 warning",
    ])


def test_check_missing_file(tmp_path: Path) -> None:
    # Nothing was checked: 2, as for any command given a path it cannot read.
    path = str(tmp_path / "nope.yml")
    assert run(check, path, False) == (2, [
        f"{path}: cannot read the catalog: No such file or directory",
    ])


def test_map_prints_the_map() -> None:
    code, lines = run(show_map, EXAMPLE, "cache-password")
    assert code == 0
    assert lines[:6] == [
        "secret: cache-password",
        "description: Password of the `app_a`/`app_b` Redis users used by the retrieval service",
        "issuer: redis-acl 'cache', keeps old and new valid together",
        "evidence of the old credential's use: connections still authenticated as the old user "
        "(CLIENT LIST); reads of the old version since the switch (the store's audit log)",
        "store: vault (vault-kv2, http://127.0.0.1:8200, mount secret), path infra/cache",
        "lanes, in validation order: dev -> staging -> prod",
    ]
    assert "  retriever: owner U0BOB, reload restart" in lines
    assert "    identity (usage evidence): application_name retriever, address 10.0.3.0/24" in lines


def test_map_unknown_secret_names_closest() -> None:
    assert run(show_map, EXAMPLE, "cache-pasword") == (2, [
        f"{EXAMPLE}: no secret 'cache-pasword' in the catalog; did you mean 'cache-password'?"
    ])


def test_map_on_invalid_catalog(tmp_path: Path) -> None:
    path = write(tmp_path, THREE_ERRORS)
    code, lines = run(show_map, path, "model-api-key")
    assert code == 2
    assert len(lines) == 4
    assert lines[-1] == f"{path}: INVALID, 3 errors; fix it first (rotabot catalog check {path})"
