"""FileStore against a real folder: the store contract plus file modes, paths and races."""

from __future__ import annotations

import json
import multiprocessing
import os
import stat
from collections.abc import Iterator
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
from contract.store_contract import NEW, OLD, StoreContract, canary

from adapters.file_store import FileStore
from bot.domain.credentials import StoreConflict, StoreError, VersionUnavailable
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Store

WRITERS = 6


class TestFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Store:
        return FileStore(tmp_path / "store")

    def metadata_texts(self, store: Store, path: str) -> list[str]:
        # Everything on disk except the version files, which are where values belong.
        assert isinstance(store, FileStore)
        return [
            f.read_text(errors="replace")
            for f in store.root.rglob("*")
            if f.is_file() and not (f.name.startswith("v") and f.name.endswith(".json"))
        ]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> FileStore:
    return FileStore(root)


def rotated(store: FileStore, path: str) -> tuple[str, str]:
    old = store.write_pending(path, OLD, expected_current=None)
    store.promote(path, old)
    new = store.write_pending(path, NEW, expected_current=old)
    store.promote(path, new)
    return old, new


def mode(p: Path) -> int:
    return stat.S_IMODE(os.lstat(p).st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    # With umask 0 a file created the ordinary way would be 0666: only an explicit 0600 at
    # creation keeps it private, so this is what makes the mode assertions meaningful.
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


# --- file modes --------------------------------------------------------------------------


@pytest.mark.usefixtures("permissive_umask")
def test_every_file_is_0600_and_every_folder_0700(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    old, new = rotated(store, "team/app/api-key")
    store.restore_previous("team/app/api-key")

    secret = store.root / "team" / "app" / "api-key"
    files = [f for f in secret.iterdir() if f.is_file()]
    assert {f.name for f in files} >= {"meta.json", ".lock", f"v{old}.json", f"v{new}.json"}
    assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
    for folder in (store.root, store.root / "team", store.root / "team" / "app", secret):
        assert mode(folder) == 0o700, folder


def test_version_files_hold_the_data_and_meta_holds_only_references(store: FileStore) -> None:
    value, material = canary()
    first = store.write_pending("app/db", material, expected_current=None)
    store.promote("app/db", first)

    folder = store.root / "app" / "db"
    version_doc = json.loads((folder / f"v{first}.json").read_text())
    assert version_doc == {"version": int(first), "data": material.reveal()}
    meta_text = (folder / "meta.json").read_text()
    assert value not in meta_text
    meta = json.loads(meta_text)
    assert meta["current"] == first
    assert set(meta["versions"][first]) == {"created_at", "destroyed", "revoked"}


def test_retire_removes_the_value_from_disk(store: FileStore) -> None:
    old, _new = rotated(store, "app/key")

    store.retire("app/key", old)

    folder = store.root / "app" / "key"
    assert not (folder / f"v{old}.json").exists()
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["versions"][old] == {
        "created_at": meta["versions"][old]["created_at"],
        "destroyed": True,
        "revoked": True,
    }


def test_no_temporary_files_are_left_behind(store: FileStore) -> None:
    rotated(store, "app/key")
    store.restore_previous("app/key")
    leftovers = [f.name for f in (store.root / "app" / "key").iterdir() if f.suffix == ".tmp"]
    assert leftovers == []


def test_a_second_store_on_the_same_folder_sees_the_same_state(root: Path) -> None:
    old, new = rotated(FileStore(root), "app/key")

    again = FileStore(root)

    state = again.describe("app/key")
    assert (state.current, state.previous) == (new, old)
    assert again.read("app/key") == NEW


# --- paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_path",
    [
        "../outside",
        "app/../../outside",
        "/etc/passwd",
        "app//key",
        "app/./key",
        "app/key/",
        "",
        ".hidden",
        "app/meta.json",
        "app/v1.json",
        "app\\key",
        "app/ke\x00y",
    ],
)
def test_path_traversal_and_odd_paths_are_refused(
    tmp_path: Path, store: FileStore, bad_path: str
) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    for attempt in (
        lambda: store.write_pending(bad_path, OLD, expected_current=None),
        lambda: store.put(bad_path, OLD),
        lambda: store.describe(bad_path),
        lambda: store.read(bad_path),
    ):
        with pytest.raises(StoreError):
            attempt()

    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_symlinked_folder_is_refused(tmp_path: Path, store: FileStore) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (store.root / "team").symlink_to(elsewhere)

    with pytest.raises(StoreError, match="symbolic link"):
        store.write_pending("team/key", OLD, expected_current=None)
    assert list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("bad_version", ["../meta", "0", "01", "-1", "1.0", "x", "", "²"])
def test_odd_version_strings_are_refused(store: FileStore, bad_version: str) -> None:
    rotated(store, "app/key")
    for attempt in (
        lambda: store.read("app/key", bad_version),
        lambda: store.retire("app/key", bad_version),
        lambda: store.mark_pending("app/key", bad_version),
    ):
        with pytest.raises(VersionUnavailable):
            attempt()


# --- damage from outside -------------------------------------------------------------------


def test_a_version_file_deleted_by_hand_is_unavailable_not_empty(store: FileStore) -> None:
    old, new = rotated(store, "app/key")
    (store.root / "app" / "key" / f"v{old}.json").unlink()

    with pytest.raises(VersionUnavailable, match="missing"):
        store.read("app/key", old)
    with pytest.raises(VersionUnavailable):
        store.restore_previous("app/key")
    assert store.describe("app/key").current == new


def test_a_corrupt_version_file_fails_without_echoing_its_content(store: FileStore) -> None:
    value, material = canary()
    version = store.write_pending("app/key", material, expected_current=None)
    (store.root / "app" / "key" / f"v{version}.json").write_text('{"data": {"k": "' + value)

    with pytest.raises(StoreError) as info:
        store.read("app/key", version)

    exc = info.value
    assert "app/key" in str(exc) and f"v{version}.json" in str(exc)
    for text in (str(exc), repr(exc), repr(exc.__cause__), repr(exc.__context__)):
        assert value not in text
    assert exc.__suppress_context__


def test_an_orphan_version_file_is_never_overwritten(store: FileStore) -> None:
    # A crash between writing v2.json and saving meta.json leaves v2.json unreferenced.
    first = store.write_pending("app/key", OLD, expected_current=None)
    store.promote("app/key", first)
    orphan = store.root / "app" / "key" / "v2.json"
    orphan.write_text('{"version": 2, "data": {"api_key": "orphan"}}')

    version = store.write_pending("app/key", NEW, expected_current=first)

    assert version == "3"
    assert json.loads(orphan.read_text())["data"] == {"api_key": "orphan"}
    assert store.read("app/key", version) == NEW


def test_error_messages_name_the_path_and_the_cause(store: FileStore) -> None:
    old, new = rotated(store, "team/app-key")
    with pytest.raises(StoreConflict) as info:
        store.write_pending("team/app-key", OLD, expected_current=old)
    assert "team/app-key" in str(info.value)
    assert f"current version is {new}, expected {old}" in str(info.value)


# --- concurrent writers (separate processes) ------------------------------------------------


def _write_pending_in_child(
    root: str, path: str, expected: str, barrier: Barrier, results: multiprocessing.Queue[str]
) -> None:
    store = FileStore(Path(root))
    material = SecretMaterial({"api_key": f"from-{os.getpid()}"})
    barrier.wait()
    try:
        results.put(f"ok:{store.write_pending(path, material, expected_current=expected)}")
    except StoreConflict:
        results.put("conflict")
    except Exception as exc:  # reported to the parent, which fails the test with it
        results.put(f"error:{type(exc).__name__}:{exc}")


def _put_in_child(
    root: str, path: str, count: int, barrier: Barrier, results: multiprocessing.Queue[str]
) -> None:
    store = FileStore(Path(root))
    barrier.wait()
    try:
        for i in range(count):
            version = store.put(path, SecretMaterial({"api_key": f"{os.getpid()}-{i}"}))
            results.put(f"ok:{version}:{os.getpid()}-{i}")
    except Exception as exc:
        results.put(f"error:{type(exc).__name__}:{exc}")


def _run_children(target: object, args: tuple[object, ...], expected_results: int) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WRITERS)
    results: multiprocessing.Queue[str] = ctx.Queue()
    children = [
        ctx.Process(target=target, args=(*args, barrier, results))  # type: ignore[arg-type]
        for _ in range(WRITERS)
    ]
    for child in children:
        child.start()
    collected = [results.get(timeout=60) for _ in range(expected_results)]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    return collected


def test_concurrent_pending_writers_one_wins_the_others_get_store_conflict(
    store: FileStore,
) -> None:
    current = store.write_pending("app/key", OLD, expected_current=None)
    store.promote("app/key", current)

    outcomes = _run_children(
        _write_pending_in_child, (str(store.root), "app/key", current), WRITERS
    )

    winners = [o for o in outcomes if o.startswith("ok:")]
    assert len(winners) == 1, outcomes
    assert sorted(outcomes) == sorted(winners + ["conflict"] * (WRITERS - 1)), outcomes
    state = store.describe("app/key")
    assert state.pending == winners[0].removeprefix("ok:")
    assert len(state.versions) == 2  # the losers wrote nothing


def test_concurrent_puts_lose_no_version(store: FileStore) -> None:
    per_child = 5

    outcomes = _run_children(
        _put_in_child, (str(store.root), "app/key", per_child), WRITERS * per_child
    )

    assert [o for o in outcomes if not o.startswith("ok:")] == []
    written = {o.split(":")[1]: o.split(":")[2] for o in outcomes}
    assert len(written) == WRITERS * per_child  # every version number handed out once
    state = store.describe("app/key")
    assert sorted(int(v.version) for v in state.versions) == list(
        range(1, WRITERS * per_child + 1)
    )
    for version, value in written.items():
        assert store.read("app/key", version) == SecretMaterial({"api_key": value})
