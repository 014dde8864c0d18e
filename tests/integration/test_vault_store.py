"""VaultKV2Store against a real OpenBao dev server: the Store contract plus KV v2 specifics."""

# Everything here runs against OpenBao (`bao server -dev`), not HashiCorp Vault. The one
# behaviour that differs and matters to the adapter is OpenBao's metadata check-and-set
# (`metadata_cas`), which the adapter uses when the server reports `current_metadata_version`;
# see the module comment in adapters/vault_store.py.

from __future__ import annotations

import json
import os
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
from contract.store_contract import NEW, OLD, OTHER, StoreContract, canary
from servers import OpenBaoServer, free_port

from adapters.vault_store import (
    StorePermissionDenied,
    StoreSealed,
    StoreUnreachable,
    VaultKV2Store,
    VaultKV2Target,
    make_vault_client,
)
from bot.domain.credentials import (
    StoreConflict,
    StoreError,
    VersionLabel,
    VersionUnavailable,
    find_new_version,
)
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Store

pytestmark = pytest.mark.openbao

TOKEN_ENV = "ROTABOT_TEST_VAULT_TOKEN"


def root_client(server: OpenBaoServer) -> hvac.Client:
    return hvac.Client(url=server.url, token=server.token)


def unique_path(prefix: str = "it") -> str:
    return f"{prefix}/{uuid.uuid4().hex[:12]}/cred"


def raw_metadata(client: hvac.Client, path: str) -> dict[str, Any]:
    data: dict[str, Any] = client.secrets.kv.v2.read_secret_metadata(path=path)["data"]
    return data


def raw_data(client: hvac.Client, path: str, version: int | None = None) -> dict[str, Any]:
    response = client.secrets.kv.v2.read_secret_version(
        path=path, version=version, raise_on_deleted_version=True
    )
    data: dict[str, Any] = response["data"]["data"]
    return data


def labels_of(client: hvac.Client, path: str) -> dict[str, str]:
    custom = raw_metadata(client, path)["custom_metadata"] or {}
    return {k: v for k, v in custom.items() if k.startswith("rotabot-")}


def all_texts(exc: BaseException) -> str:
    """Every text a log line or traceback could show for ``exc``, chained exceptions included.

    Also checks that no hvac exception rides along: they carry the raw response body.
    """
    assert exc.__cause__ is None and exc.__context__ is None
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc), str(exc.__context__)])


@pytest.fixture
def root(openbao_server: OpenBaoServer) -> hvac.Client:
    return root_client(openbao_server)


@pytest.fixture
def vault_store(openbao_server: OpenBaoServer, monkeypatch: pytest.MonkeyPatch) -> VaultKV2Store:
    # The bot's token comes from the environment, under the name the catalog gives.
    monkeypatch.setenv(TOKEN_ENV, openbao_server.token)
    return VaultKV2Store(
        make_vault_client(openbao_server.url, token_env=TOKEN_ENV, env=os.environ)
    )


# --- the shared Store contract ------------------------------------------------------------


class TestVaultKV2StoreContract(StoreContract):
    @pytest.fixture
    def store(self, vault_store: VaultKV2Store) -> Store:
        return vault_store

    @pytest.fixture(autouse=True)
    def _root(self, root: hvac.Client) -> None:
        self._raw = root

    def put_unlabelled(self, store: Store, path: str, material: SecretMaterial) -> str:
        # A person's `bao kv put` at the staging path (the manual issuer's instructions): no
        # cas, no labels.
        assert isinstance(store, VaultKV2Store)
        response = self._raw.secrets.kv.v2.create_or_update_secret(
            path=store.staging_path(path), secret=material.reveal()
        )
        return f"staged-{response['data']['version']}"

    def metadata_texts(self, store: Store, path: str) -> list[str]:
        return [json.dumps(raw_metadata(self._raw, path))]


# --- KV v2 behaviour checked with raw hvac reads -------------------------------------------


def test_full_flow_pending_promote_restore_retire(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    path = unique_path("flow")
    kv = root.secrets.kv.v2
    staging = vault_store.staging_path(path)

    first = vault_store.write_pending(path, OLD, expected_current=None)
    assert first == "staged-1"
    assert labels_of(root, path) == {"rotabot-pending": "staged-1"}
    # A normal read of the secret's path finds nothing yet: the value waits at the staging path.
    with pytest.raises(hvac.exceptions.InvalidPath):
        raw_data(root, path)
    assert raw_data(root, staging, 1) == OLD.reveal()
    # Someone's own metadata beside ours must survive every label change.
    custom = raw_metadata(root, path)["custom_metadata"]
    kv.update_metadata(path=path, custom_metadata={**custom, "owner": "secops"})

    assert vault_store.promote(path, first) == "1"
    assert labels_of(root, path) == {"rotabot-current": "1", "rotabot-promoted": "staged-1"}
    assert raw_metadata(root, staging)["versions"]["1"]["destroyed"] is True

    second = vault_store.write_pending(path, NEW, expected_current="1")
    assert second == "staged-2"
    # Until the switch, every unpinned read of the secret's path returns the old value.
    assert raw_data(root, path) == OLD.reveal()
    assert raw_metadata(root, path)["current_version"] == 1
    assert raw_data(root, staging, 2) == NEW.reveal()
    assert labels_of(root, path) == {
        "rotabot-current": "1", "rotabot-pending": "staged-2", "rotabot-promoted": "staged-1"}

    assert vault_store.promote(path, second) == "2"
    assert raw_data(root, path) == NEW.reveal()
    assert labels_of(root, path) == {
        "rotabot-current": "2", "rotabot-previous": "1", "rotabot-promoted": "staged-2"}
    # A retried switch (a crash after the copy) changes nothing and answers the same version.
    assert vault_store.promote(path, second) == "2"
    assert raw_metadata(root, path)["current_version"] == 2

    restored = vault_store.restore_previous(path)
    assert restored == "3"
    meta = raw_metadata(root, path)
    assert meta["current_version"] == 3
    assert raw_data(root, path) == OLD.reveal()  # an unpinned read gets the old value again
    assert labels_of(root, path) == {"rotabot-current": "3", "rotabot-previous": "2"}

    vault_store.retire(path, "2")
    meta = raw_metadata(root, path)
    assert meta["versions"]["2"]["destroyed"] is True
    assert meta["versions"]["1"]["destroyed"] is False
    assert meta["versions"]["3"]["destroyed"] is False
    with pytest.raises(hvac.exceptions.InvalidPath):
        raw_data(root, path, 2)
    assert labels_of(root, path) == {"rotabot-current": "3", "rotabot-revoked": "2"}
    assert meta["custom_metadata"]["owner"] == "secops"

    state = vault_store.describe(path)
    assert [v.version for v in state.versions] == ["1", "2", "3"]
    assert all(v.created_at is not None for v in state.versions)
    by_version = {v.version: v for v in state.versions}
    assert by_version["2"].destroyed and by_version["2"].labels == {VersionLabel.REVOKED}
    assert by_version["3"].labels == {VersionLabel.CURRENT}
    assert by_version["1"].labels == frozenset()


def test_a_switch_that_crashed_after_the_copy_is_finished_not_repeated(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    path = unique_path("crash-switch")
    v1 = vault_store.promote(path, vault_store.write_pending(path, OLD, expected_current=None))
    staged = vault_store.write_pending(path, NEW, expected_current=v1)
    # The copy landed, the labels did not (the process died in between).
    root.secrets.kv.v2.create_or_update_secret(path=path, secret=NEW.reveal(), cas=1)

    assert vault_store.promote(path, staged) == "2"

    assert raw_metadata(root, path)["current_version"] == 2  # no third copy
    assert vault_store.describe(path).current == "2"
    assert vault_store.describe(path).previous == "1"


def test_a_pending_version_written_in_place_before_staging_still_switches(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    # A rotation in flight across the upgrade: its pending version is on the path itself.
    path = unique_path("legacy")
    v1 = vault_store.promote(path, vault_store.write_pending(path, OLD, expected_current=None))
    root.secrets.kv.v2.create_or_update_secret(path=path, secret=NEW.reveal(), cas=1)
    vault_store.mark_pending(path, "2")

    assert vault_store.promote(path, "2") == "2"
    assert vault_store.describe(path).previous == v1
    vault_store.retire(path, v1)
    assert labels_of(root, path) == {"rotabot-current": "2", "rotabot-revoked": "1"}


def test_second_retire_keeps_revoked_list_newest_first(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    path = unique_path("revoked")
    v1 = vault_store.write_pending(path, OLD, expected_current=None)
    v1 = vault_store.promote(path, v1)
    v2 = vault_store.write_pending(path, NEW, expected_current=v1)
    v2 = vault_store.promote(path, v2)
    vault_store.retire(path, v1)
    v3 = vault_store.write_pending(path, OTHER, expected_current=v2)
    v3 = vault_store.promote(path, v3)
    vault_store.retire(path, v2)

    assert labels_of(root, path) == {
        "rotabot-current": "3", "rotabot-revoked": "2,1", "rotabot-promoted": "staged-3"}


def test_cas_conflict_when_another_client_wrote_meanwhile(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    path = unique_path("cas")
    v1 = vault_store.promote(path, vault_store.write_pending(path, OLD, expected_current=None))
    value, material = canary()

    # Another writer slips in a version between our describe and our write.
    assert vault_store.describe(path).current == "1"
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"api_key": "by-hand"})

    with pytest.raises(StoreConflict) as info:
        vault_store.write_pending(path, material, expected_current=v1)

    message = str(info.value)
    assert f"someone else wrote secret/data/{path}" in message
    assert "(now version 2)" in message
    assert "the rotation pauses: check who wrote it, then resume" in message
    assert value not in all_texts(info.value)
    meta = raw_metadata(root, path)
    assert meta["current_version"] == 2  # nothing of ours was written
    assert labels_of(root, path) == {"rotabot-current": "1", "rotabot-promoted": "staged-1"}


def test_promote_conflicts_when_a_newer_version_appeared(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    path = unique_path("promote-race")
    v1 = vault_store.promote(path, vault_store.write_pending(path, OLD, expected_current=None))
    v2 = vault_store.write_pending(path, NEW, expected_current=v1)
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"api_key": "by-hand"})

    with pytest.raises(StoreConflict, match=r"\(now version 2\)"):
        vault_store.promote(path, v2)
    assert labels_of(root, path) == {
        "rotabot-current": "1", "rotabot-pending": "staged-2", "rotabot-promoted": "staged-1"}
    assert raw_data(root, path) == {"api_key": "by-hand"}  # ours was not written over it


@pytest.mark.parametrize("how", ["deleted", "destroyed"])
def test_restore_previous_refuses_a_deleted_or_destroyed_version(
    vault_store: VaultKV2Store, root: hvac.Client, how: str
) -> None:
    path = unique_path("restore")
    v1 = vault_store.promote(path, vault_store.write_pending(path, OLD, expected_current=None))
    vault_store.promote(path, vault_store.write_pending(path, NEW, expected_current=v1))
    if how == "deleted":
        root.secrets.kv.v2.delete_secret_versions(path=path, versions=[1])
    else:
        root.secrets.kv.v2.destroy_secret_versions(path=path, versions=[1])

    with pytest.raises(VersionUnavailable) as info:
        vault_store.restore_previous(path)

    message = str(info.value)
    assert f"version 1 of secret/data/{path}" in message
    assert f"is {how}" in message
    assert raw_metadata(root, path)["current_version"] == 2  # nothing written
    assert vault_store.describe(path).current == "2"


def test_adopts_a_pre_existing_unlabelled_secret(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    path = unique_path("adopt")
    kv = root.secrets.kv.v2
    kv.create_or_update_secret(path=path, secret={"password": "a", "port": 5432, "tls": True})
    kv.create_or_update_secret(path=path, secret={"password": "b", "port": 5432, "tls": True})

    state = vault_store.describe(path)
    assert state.current == "2"
    assert state.pending is None
    # Numbers and booleans a person wrote come back as their JSON text.
    assert vault_store.read(path).reveal() == {"password": "b", "port": "5432", "tls": "true"}

    v3 = vault_store.write_pending(path, NEW, expected_current="2")

    assert v3 == "staged-1"
    assert labels_of(root, path) == {"rotabot-current": "2", "rotabot-pending": "staged-1"}
    assert vault_store.read(path).reveal()["password"] == "b"


def test_describe_reports_deleted_versions(vault_store: VaultKV2Store, root: hvac.Client) -> None:
    path = unique_path("describe")
    vault_store.promote(path, vault_store.write_pending(path, OLD, expected_current=None))
    root.secrets.kv.v2.create_or_update_secret(path=path, secret=NEW.reveal(), cas=1)
    root.secrets.kv.v2.delete_secret_versions(path=path, versions=[2])

    state = vault_store.describe(path)
    by_version = {v.version: v for v in state.versions}
    assert by_version["2"].deleted and not by_version["2"].destroyed
    newest = state.newest()
    assert newest is not None and newest.version == "1"
    with pytest.raises(VersionUnavailable, match="is deleted"):
        vault_store.read(path, "2")
    with pytest.raises(VersionUnavailable, match="is deleted"):
        vault_store.mark_pending(path, "2")


# --- legible failures ----------------------------------------------------------------------


def test_permission_denied_with_a_read_only_token(
    openbao_server: OpenBaoServer, root: hvac.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"ro-{uuid.uuid4().hex[:8]}"
    path = f"{prefix}/cred"
    policy = f"ro-{prefix}"
    root.sys.create_or_update_policy(
        name=policy,
        policy=(
            f'path "secret/data/{prefix}/*" {{ capabilities = ["read"] }}\n'
            f'path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}\n'
            f'path "secret/metadata/rotabot-pending/{prefix}/*" {{ capabilities = ["read"] }}\n'
        ),
    )
    limited = root.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    owner = VaultKV2Store(root_client(openbao_server))
    v1 = owner.promote(path, owner.write_pending(path, OLD, expected_current=None))
    v2 = owner.promote(path, owner.write_pending(path, NEW, expected_current=v1))

    monkeypatch.setenv(TOKEN_ENV, limited)
    store = VaultKV2Store(
        make_vault_client(openbao_server.url, token_env=TOKEN_ENV, env=os.environ)
    )
    value, material = canary()

    assert store.describe(path).current == v2  # reading is allowed
    assert store.read(path) == NEW

    with pytest.raises(StorePermissionDenied) as write_denied:
        store.write_pending(path, material, expected_current=v2)
    message = str(write_denied.value)
    assert message.startswith(f"token lacks permission on secret/data/rotabot-pending/{path}")
    assert '"create", "update"' in message and "(see policy)" in message
    assert openbao_server.url in message

    with pytest.raises(StorePermissionDenied) as destroy_denied:
        store.retire(path, v1)
    assert f"token lacks permission on secret/destroy/{path}" in str(destroy_denied.value)

    for exc in (write_denied.value, destroy_denied.value):
        texts = all_texts(exc)
        assert value not in texts and limited not in texts
    assert raw_metadata(root, path)["current_version"] == 2
    assert raw_metadata(root, path)["versions"]["1"]["destroyed"] is False


@pytest.fixture
def sealable_server() -> Iterator[OpenBaoServer]:
    # A dedicated short-lived instance: sealing the shared one would break other tests.
    server = OpenBaoServer.start()
    try:
        yield server
    finally:
        server.stop()


def test_sealed_server_is_named_and_says_what_to_do(
    sealable_server: OpenBaoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = unique_path("sealed")
    monkeypatch.setenv(TOKEN_ENV, sealable_server.token)
    store = VaultKV2Store(
        make_vault_client(sealable_server.url, token_env=TOKEN_ENV, env=os.environ)
    )
    v1 = store.write_pending(path, OLD, expected_current=None)
    store.promote(path, v1)
    value, material = canary()

    root_client(sealable_server).sys.seal()

    expected = (
        f"OpenBao/Vault at {sealable_server.url} is sealed: unseal it, then resume the rotation"
    )
    with pytest.raises(StoreSealed) as described:
        store.describe(path)
    assert str(described.value) == expected
    with pytest.raises(StoreSealed) as written:
        store.write_pending(path, material, expected_current=v1)
    assert str(written.value) == expected
    assert value not in all_texts(written.value)


def test_connection_error_against_a_closed_port(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv(TOKEN_ENV, "hvs.not-a-real-token")
    store = VaultKV2Store(make_vault_client(url, token_env=TOKEN_ENV, timeout=3, env=os.environ))
    value, material = canary()

    with pytest.raises(StoreUnreachable) as info:
        store.write_pending("x/y", material, expected_current=None)

    assert str(info.value).startswith(f"cannot reach {url}")
    assert "secret/metadata/x/y" in str(info.value)
    texts = all_texts(info.value)
    assert value not in texts and "hvs.not-a-real-token" not in texts
    with pytest.raises(StoreUnreachable, match=f"cannot reach {url}"):
        store.describe("x/y")


# --- credentials from the environment ------------------------------------------------------


@pytest.fixture
def approle(root: hvac.Client) -> Iterator[tuple[str, str, str, str]]:
    """An AppRole mount with a role allowed to rotate under one prefix:
    (mount, prefix, role_id, secret_id)."""
    mount = f"approle-{uuid.uuid4().hex[:8]}"
    prefix = f"ar-{uuid.uuid4().hex[:8]}"
    root.sys.enable_auth_method(method_type="approle", path=mount)
    root.sys.create_or_update_policy(
        name=mount,
        policy=(
            f'path "secret/data/{prefix}/*" {{ capabilities = ["create", "update", "read"] }}\n'
            f'path "secret/metadata/{prefix}/*" '
            '{ capabilities = ["create", "update", "read"] }\n'
            f'path "secret/destroy/{prefix}/*" {{ capabilities = ["update"] }}\n'
            # Where pending credentials wait until the switch: rotabot's alone.
            f'path "secret/data/rotabot-pending/{prefix}/*" '
            '{ capabilities = ["create", "update", "read"] }\n'
            f'path "secret/metadata/rotabot-pending/{prefix}/*" '
            '{ capabilities = ["create", "update", "read"] }\n'
            f'path "secret/destroy/rotabot-pending/{prefix}/*" {{ capabilities = ["update"] }}\n'
        ),
    )
    root.auth.approle.create_or_update_approle(
        role_name="rotabot", token_policies=[mount], token_ttl="10m", mount_point=mount
    )
    role_id = root.auth.approle.read_role_id(role_name="rotabot", mount_point=mount)["data"][
        "role_id"
    ]
    secret_id = root.auth.approle.generate_secret_id(role_name="rotabot", mount_point=mount)[
        "data"
    ]["secret_id"]
    try:
        yield mount, prefix, role_id, secret_id
    finally:
        root.sys.disable_auth_method(path=mount)


def test_approle_login_from_environment(
    openbao_server: OpenBaoServer,
    approle: tuple[str, str, str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    mount, prefix, role_id, secret_id = approle
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.vault-token to fall back on
    monkeypatch.setenv("ROTABOT_ROLE_ID", role_id)
    monkeypatch.setenv("ROTABOT_SECRET_ID", secret_id)

    client = make_vault_client(
        openbao_server.url,
        env=os.environ,
        approle_role_id_env="ROTABOT_ROLE_ID",
        approle_secret_id_env="ROTABOT_SECRET_ID",
        approle_mount=mount,
    )
    store = VaultKV2Store(client)
    path = f"{prefix}/cred"
    v1 = store.promote(path, store.write_pending(path, OLD, expected_current=None))
    v2 = store.promote(path, store.write_pending(path, NEW, expected_current=v1))
    store.retire(path, v1)

    assert client.token and client.token != openbao_server.token
    state = store.describe(path)
    assert (state.current, state.previous) == (v2, None)
    # The policy is scoped: the AppRole token cannot touch other paths.
    with pytest.raises(StorePermissionDenied):
        store.write_pending(unique_path("outside"), OLD, expected_current=None)


def test_approle_login_refused_names_the_variables_not_the_values(
    openbao_server: OpenBaoServer,
    approle: tuple[str, str, str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mount, _prefix, role_id, _secret_id = approle
    wrong = f"wrong-{uuid.uuid4()}"
    monkeypatch.setenv("ROTABOT_ROLE_ID", role_id)
    monkeypatch.setenv("ROTABOT_SECRET_ID", wrong)

    with pytest.raises(StorePermissionDenied) as info:
        make_vault_client(
            openbao_server.url,
            env=os.environ,
            approle_role_id_env="ROTABOT_ROLE_ID",
            approle_secret_id_env="ROTABOT_SECRET_ID",
            approle_mount=mount,
        )

    message = str(info.value)
    assert "$ROTABOT_ROLE_ID" in message and "$ROTABOT_SECRET_ID" in message
    texts = all_texts(info.value)
    assert wrong not in texts and role_id not in texts


def test_missing_environment_variables_are_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.delenv("ROTABOT_ROLE_ID", raising=False)
    # hvac would fall back to VAULT_TOKEN and ~/.vault-token; the factory must not.
    monkeypatch.setenv("VAULT_TOKEN", "hvs.ambient")
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".vault-token").write_text("root")

    with pytest.raises(StoreError, match=f"environment variable {TOKEN_ENV} is not set"):
        make_vault_client("http://127.0.0.1:1", token_env=TOKEN_ENV, env=os.environ)
    with pytest.raises(StoreError, match="environment variable ROTABOT_ROLE_ID is not set"):
        make_vault_client(
            "http://127.0.0.1:1",
            env=os.environ,
            approle_role_id_env="ROTABOT_ROLE_ID",
            approle_secret_id_env="ROTABOT_SECRET_ID",
        )
    with pytest.raises(StoreError, match="together"):
        make_vault_client(
            "http://127.0.0.1:1", approle_role_id_env="ROTABOT_ROLE_ID", env=os.environ
        )


def test_canary_never_reaches_labels_or_messages(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    path = unique_path("canary")
    value, material = canary()
    v1 = vault_store.promote(
        path, vault_store.write_pending(path, material, expected_current=None))
    vault_store.promote(path, vault_store.write_pending(path, NEW, expected_current=v1))
    vault_store.restore_previous(path)  # the canary is copied into a new version

    failures: list[StoreError] = []
    for attempt in (
        lambda: vault_store.write_pending(path, material, expected_current=v1),
        lambda: vault_store.write_pending(path, material, expected_current=None),
        lambda: vault_store.retire(path, "3"),
        lambda: vault_store.read(path, "42"),
    ):
        with pytest.raises(StoreError) as info:
            attempt()
        failures.append(info.value)

    meta = raw_metadata(root, path)
    assert value not in json.dumps(meta)
    assert value not in repr(vault_store.describe(path)) and value not in repr(vault_store)
    for exc in failures:
        assert value not in all_texts(exc)
    assert vault_store.read(path) == material


def test_a_persons_write_at_the_staging_path_is_found_as_the_new_version(
    vault_store: VaultKV2Store, root: hvac.Client
) -> None:
    # The manual issuer: a person puts the new credential where rotabot stages it.
    path = unique_path("manual")
    v1 = vault_store.promote(path, vault_store.write_pending(path, OLD, expected_current=None))
    root.secrets.kv.v2.create_or_update_secret(
        path=vault_store.staging_path(path), secret=NEW.reveal())

    state = vault_store.describe(path)
    found = find_new_version(state)

    assert found is not None and found.startswith("staged-")
    vault_store.mark_pending(path, found)
    assert raw_data(root, path) == OLD.reveal()  # consumers still read the old one
    assert vault_store.promote(path, found) == "2"
    assert vault_store.describe(path).previous == v1
    assert raw_data(root, path) == NEW.reveal()


# --- lane targets ----------------------------------------------------------------------------


def test_a_vault_target_holds_what_consumers_read_and_adds_no_version_for_the_same_value(
    openbao_server: OpenBaoServer, root: hvac.Client
) -> None:
    path = unique_path("target")
    target = VaultKV2Target(root_client(openbao_server), path=path)
    assert target.read() is None
    assert target.where == f"vault-kv2 secret/{path} at {openbao_server.url}"

    assert target.write(OLD) == "1"
    assert target.write(OLD) == "1"  # a retried lane: nothing new
    assert target.write(NEW) == "2"

    assert raw_data(root, path) == NEW.reveal()  # an unpinned read, as consumers do
    assert target.read() == NEW


def test_a_vault_target_with_a_field_holds_that_field_only(
    openbao_server: OpenBaoServer, root: hvac.Client
) -> None:
    path = unique_path("target-field")
    value, material = canary()
    target = VaultKV2Target(root_client(openbao_server), path=path, field="password")

    target.write(material)

    assert raw_data(root, path) == {"password": value}
    with pytest.raises(StoreError) as info:
        VaultKV2Target(root_client(openbao_server), path=path, field="token").write(material)
    assert "has no field 'token'" in str(info.value) and value not in str(info.value)
