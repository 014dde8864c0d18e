"""Usage evidence from a real OpenBao's file audit device: who read an old KV v2 version.

OpenBao 2.x enables audit devices only from the server's config file; the `openbao_audited`
fixture starts one such dev server per session (accessors logged in clear, values HMAC'd).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import hvac
import pytest
from servers import OpenBaoServer

from adapters.vault_store import VaultKV2Store
from bot.services.ports import ReportsReads

pytestmark = pytest.mark.openbao

CANARY = "CANARY-audit-3c9e1f7a-never-show-me"


def reader(server: OpenBaoServer, name: str) -> tuple[hvac.Client, str]:
    """A consumer's own token (display name token-<name>) and its accessor."""
    root = hvac.Client(url=server.url, token=server.token)
    root.sys.create_or_update_policy(
        name="read-all", policy='path "secret/data/*" { capabilities = ["read"] }')
    auth = root.auth.token.create(policies=["read-all"], display_name=name, ttl="10m")["auth"]
    return hvac.Client(url=server.url, token=auth["client_token"]), str(auth["accessor"])


def read(client: hvac.Client, path: str, version: int | None = None) -> None:
    client.secrets.kv.v2.read_secret_version(path=path, version=version,
                                             raise_on_deleted_version=True)


def test_a_read_of_the_old_version_after_the_switch_is_listed_with_accessor_and_address(
    openbao_audited: OpenBaoServer,
) -> None:
    server = openbao_audited
    root = hvac.Client(url=server.url, token=server.token)
    store = VaultKV2Store(root, audit_log=str(server.audit_log))
    assert isinstance(store, ReportsReads)
    path = f"audit/{uuid.uuid4().hex[:10]}/db"
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"password": CANARY})
    root.secrets.kv.v2.create_or_update_secret(path=path, secret={"password": CANARY + "-2"})
    early, _ = reader(server, "early")
    read(early, path, 1)  # before the switch: not evidence
    switched = datetime.now(UTC)

    ingest, ingest_accessor = reader(server, "ingest")
    moved, _ = reader(server, "mover")
    read(ingest, path, 1)  # pinned to the old version after the switch
    read(moved, path, 1)
    read(moved, path)  # ...and then moved to the new one: no longer evidence
    read(root, path, 1)  # rotabot's own token (rollback reads): not a consumer

    evidence = store.reads_of(path, "1", since=switched)
    assert evidence.in_use is True
    assert evidence.summary.startswith(f"1 read of old version 1 of secret/data/{path}")
    [seen] = evidence.seen
    assert seen.vault_accessor == ingest_accessor
    assert seen.address == "127.0.0.1"
    assert seen.user == "token-ingest"
    assert seen.at is not None and seen.at >= switched
    assert any("later read a newer version" in d for d in evidence.details)
    # The value is HMAC'd in the log, and never part of the evidence either way.
    assert CANARY not in repr(evidence)

    # Since a later moment nobody read the old version: no evidence, in_use False.
    quiet = store.reads_of(path, "1", since=datetime.now(UTC) + timedelta(seconds=1))
    assert quiet.in_use is False and quiet.seen == ()


def test_without_audit_log_or_with_an_unreadable_one_the_store_says_why_it_cannot_tell(
    openbao_audited: OpenBaoServer,
) -> None:
    root = hvac.Client(url=openbao_audited.url, token=openbao_audited.token)
    now = datetime.now(UTC)
    plain = VaultKV2Store(root).reads_of("x/y", "1", since=now)
    assert plain.in_use is None
    assert plain.summary == ("the vault-kv2 store has no audit_log in the catalog, so reads of "
                             "the old version are not seen")
    missing = VaultKV2Store(root, audit_log="/nonexistent/openbao/audit.log")
    evidence = missing.reads_of("x/y", "1", since=now)
    assert evidence.in_use is None
    assert evidence.summary == (
        "cannot read the audit log /nonexistent/openbao/audit.log: No such file or directory; "
        "give rotabot read access to it or fix audit_log in the catalog")
