"""The behaviour every ``Store`` must show, as a reusable pytest class.

Use it by subclassing in a test module and providing the ``store`` fixture::

    from contract.store_contract import StoreContract

    class TestFileStore(StoreContract):
        @pytest.fixture
        def store(self, tmp_path: Path) -> Store:
            return FileStore(tmp_path / "store")

The class name has no ``Test`` prefix (and this module no ``test_`` prefix), so pytest collects
it only through such subclasses, once per store. Hooks a subclass may override:

- ``path``: the secret path each test uses (default: unique per test, so a shared server works);
- ``put_unlabelled``: write a version the way a person would (default: ``store.put`` when the
  store has it, otherwise the tests that need it skip);
- ``metadata_texts``: every text the store keeps beside the values (labels, flags, audit), which
  must never contain a value (default: none to inspect).
"""

from __future__ import annotations

import re
import uuid

import pytest

from bot.domain.credentials import (
    StoreConflict,
    StoreError,
    StoreState,
    VersionLabel,
    VersionUnavailable,
)
from bot.domain.secret_material import SecretMaterial
from bot.services.ports import Store

OLD = SecretMaterial({"api_key": "old-value-1111"})
NEW = SecretMaterial({"api_key": "new-value-2222"})
OTHER = SecretMaterial({"api_key": "other-value-3333"})


def canary() -> tuple[str, SecretMaterial]:
    """A value no store could produce on its own: if it shows up in text, the store leaked it."""
    value = f"CANARY-{uuid.uuid4().hex}"
    return value, SecretMaterial({"username": "svc", "password": value})


def labels(state: StoreState, version: str) -> frozenset[VersionLabel]:
    (info,) = [v for v in state.versions if v.version == version]
    return info.labels


class StoreContract:
    """Tests every ``Store`` implementation must pass (subclass as ``Test<Name>``)."""

    # --- hooks ----------------------------------------------------------------------------

    @pytest.fixture
    def store(self) -> Store:
        raise NotImplementedError("a StoreContract subclass must provide the `store` fixture")

    @pytest.fixture
    def path(self) -> str:
        return f"contract/{uuid.uuid4().hex[:12]}/api-key"

    def put_unlabelled(self, store: Store, path: str, material: SecretMaterial) -> str:
        put = getattr(store, "put", None)
        if put is None:
            pytest.skip(f"{type(store).__name__} has no way for a person to write a version")
        version: str = put(path, material)
        return version

    def metadata_texts(self, store: Store, path: str) -> list[str]:
        return []

    # --- helpers --------------------------------------------------------------------------

    def rotate_once(self, store: Store, path: str) -> tuple[str, str]:
        """OLD current, then NEW promoted: returns (old_version, new_version)."""
        old = store.write_pending(path, OLD, expected_current=None)
        old = store.promote(path, old)
        new = store.write_pending(path, NEW, expected_current=old)
        new = store.promote(path, new)
        return old, new

    # --- the contract ---------------------------------------------------------------------

    def test_is_a_store(self, store: Store) -> None:
        assert isinstance(store, Store)
        assert isinstance(store.kind, str) and store.kind

    def test_empty_path_has_no_versions(self, store: Store, path: str) -> None:
        state = store.describe(path)
        assert state.versions == ()
        assert (state.current, state.pending, state.previous) == (None, None, None)

    def test_first_write_on_empty_path_is_pending_not_current(
        self, store: Store, path: str
    ) -> None:
        version = store.write_pending(path, OLD, expected_current=None)

        state = store.describe(path)
        assert state.pending == version
        assert state.current is None
        assert labels(state, version) == {VersionLabel.PENDING}
        assert store.read(path, version) == OLD
        with pytest.raises(StoreError):
            store.read(path)  # nothing is current yet: a consumer must not get the pending one

    def test_pending_is_written_beside_current_and_both_are_readable(
        self, store: Store, path: str
    ) -> None:
        old = store.write_pending(path, OLD, expected_current=None)
        old = store.promote(path, old)

        new = store.write_pending(path, NEW, expected_current=old)

        assert new != old
        state = store.describe(path)
        assert (state.current, state.pending) == (old, new)
        assert store.read(path) == OLD  # consumers still get the old value
        assert store.read(path, old) == OLD
        assert store.read(path, new) == NEW

    def test_promote_moves_labels(self, store: Store, path: str) -> None:
        old, new = self.rotate_once(store, path)

        state = store.describe(path)
        assert (state.current, state.previous, state.pending) == (new, old, None)
        assert labels(state, new) == {VersionLabel.CURRENT}
        assert labels(state, old) == {VersionLabel.PREVIOUS}
        assert store.read(path) == NEW
        assert store.read(path, old) == OLD  # previous stays readable during the overlap

    def test_promote_again_is_a_no_op(self, store: Store, path: str) -> None:
        old, new = self.rotate_once(store, path)

        store.promote(path, new)  # a retry after a crash

        state = store.describe(path)
        assert (state.current, state.previous) == (new, old)

    def test_promote_refuses_a_version_that_is_not_pending(self, store: Store, path: str) -> None:
        first = store.write_pending(path, OLD, expected_current=None)
        first = store.promote(path, first)
        second = store.write_pending(path, NEW, expected_current=first)
        second = store.promote(path, second)

        with pytest.raises(StoreError):
            store.promote(path, first)  # an old version cannot jump back to current this way
        assert store.describe(path).current == second

    def test_versions_only_grow(self, store: Store, path: str) -> None:
        old, new = self.rotate_once(store, path)
        restored = store.restore_previous(path)
        assert int(old) < int(new) < int(restored)

    def test_restore_previous_makes_old_data_current_as_a_new_version(
        self, store: Store, path: str
    ) -> None:
        old, new = self.rotate_once(store, path)

        restored = store.restore_previous(path)

        assert restored not in (old, new)
        state = store.describe(path)
        assert state.current == restored
        assert store.read(path) == OLD
        assert store.read(path, restored) == OLD
        # History is untouched: each version still holds what it held.
        assert store.read(path, new) == NEW
        assert store.read(path, old) == OLD

    def test_restore_previous_keeps_the_rolled_back_version_as_previous(
        self, store: Store, path: str
    ) -> None:
        # The new credential stays valid until it is retired, so it is the one labelled
        # previous now; restoring again flips back (as AWS Secrets Manager's labels do).
        _old, new = self.rotate_once(store, path)

        store.restore_previous(path)

        assert store.describe(path).previous == new
        again = store.restore_previous(path)
        assert store.read(path, again) == NEW

    def test_restore_previous_without_a_previous_version_is_refused(
        self, store: Store, path: str
    ) -> None:
        only = store.write_pending(path, OLD, expected_current=None)
        only = store.promote(path, only)

        with pytest.raises(VersionUnavailable):
            store.restore_previous(path)
        assert store.describe(path).current == only

    def test_restore_previous_refuses_a_retired_previous(self, store: Store, path: str) -> None:
        old, new = self.rotate_once(store, path)
        store.retire(path, old)

        with pytest.raises(VersionUnavailable):
            store.restore_previous(path)
        assert store.describe(path).current == new
        assert store.read(path) == NEW

    def test_retire_destroys_the_version_and_refuses_later_reads(
        self, store: Store, path: str
    ) -> None:
        old, new = self.rotate_once(store, path)

        store.retire(path, old)

        state = store.describe(path)
        (info,) = [v for v in state.versions if v.version == old]
        assert info.destroyed
        assert info.labels == {VersionLabel.REVOKED}
        assert state.previous is None
        assert state.current == new
        with pytest.raises(VersionUnavailable):
            store.read(path, old)
        assert store.read(path) == NEW  # current untouched

    def test_retire_is_idempotent(self, store: Store, path: str) -> None:
        old, _new = self.rotate_once(store, path)
        store.retire(path, old)

        store.retire(path, old)

        assert labels(store.describe(path), old) == {VersionLabel.REVOKED}

    def test_retire_refuses_the_current_version(self, store: Store, path: str) -> None:
        _old, new = self.rotate_once(store, path)

        with pytest.raises(StoreError):
            store.retire(path, new)
        assert store.read(path) == NEW

    def test_retire_of_a_pending_version_cancels_it(self, store: Store, path: str) -> None:
        old = store.write_pending(path, OLD, expected_current=None)
        old = store.promote(path, old)
        new = store.write_pending(path, NEW, expected_current=old)

        store.retire(path, new)

        state = store.describe(path)
        assert state.pending is None
        assert state.current == old
        # A fresh attempt can write a pending version again.
        again = store.write_pending(path, OTHER, expected_current=old)
        assert store.read(path, again) == OTHER

    def test_cas_conflict_on_a_stale_expected_current(self, store: Store, path: str) -> None:
        old, new = self.rotate_once(store, path)

        with pytest.raises(StoreConflict):
            store.write_pending(path, OTHER, expected_current=old)

        state = store.describe(path)
        assert (state.current, state.pending) == (new, None)
        assert len(state.versions) == 2  # nothing written

    def test_cas_none_requires_an_empty_path(self, store: Store, path: str) -> None:
        only = store.write_pending(path, OLD, expected_current=None)
        only = store.promote(path, only)

        with pytest.raises(StoreConflict):
            store.write_pending(path, NEW, expected_current=None)
        assert store.read(path) == OLD

    def test_a_second_pending_writer_conflicts(self, store: Store, path: str) -> None:
        # Two rotations that both read "current is v1" must not both write a pending version.
        old = store.write_pending(path, OLD, expected_current=None)
        old = store.promote(path, old)
        first = store.write_pending(path, NEW, expected_current=old)

        with pytest.raises(StoreConflict):
            store.write_pending(path, OTHER, expected_current=old)

        state = store.describe(path)
        assert state.pending == first
        assert store.read(path, first) == NEW

    def test_mark_pending_of_a_version_a_person_wrote(self, store: Store, path: str) -> None:
        old = store.write_pending(path, OLD, expected_current=None)
        old = store.promote(path, old)
        written = self.put_unlabelled(store, path, NEW)
        state = store.describe(path)
        assert labels(state, written) == frozenset()
        assert (state.current, state.pending) == (old, None)

        store.mark_pending(path, written)
        store.mark_pending(path, written)  # noticing twice is harmless

        assert store.describe(path).pending == written
        written = store.promote(path, written)
        assert store.read(path) == NEW
        assert store.describe(path).previous == old

    def test_mark_pending_refuses_an_unknown_version(self, store: Store, path: str) -> None:
        old = store.write_pending(path, OLD, expected_current=None)
        old = store.promote(path, old)

        with pytest.raises(StoreError):
            store.mark_pending(path, str(int(old) + 41))
        assert store.describe(path).pending is None

    def test_mark_pending_refuses_a_labelled_version(self, store: Store, path: str) -> None:
        old, _new = self.rotate_once(store, path)

        with pytest.raises(StoreError):
            store.mark_pending(path, old)  # previous cannot become pending
        assert store.describe(path).pending is None

    def test_read_of_an_unknown_version_is_refused(self, store: Store, path: str) -> None:
        store.write_pending(path, OLD, expected_current=None)
        with pytest.raises(StoreError):
            store.read(path, "999")

    def test_labels_never_include_values(self, store: Store, path: str) -> None:
        value, material = canary()
        first = store.write_pending(path, material, expected_current=None)
        first = store.promote(path, first)
        store.write_pending(path, NEW, expected_current=first)

        state = store.describe(path)
        for info in state.versions:
            assert info.labels <= set(VersionLabel)
            assert all(label in {"pending", "current", "previous", "revoked"}
                       for label in info.labels)
            # A reference: a number, a staged-N, a VersionId; never free text.
            assert re.fullmatch(r"[A-Za-z0-9-]{1,64}", info.version)
        assert value not in repr(state)

    def test_a_planted_value_never_appears_outside_the_value_itself(
        self, store: Store, path: str
    ) -> None:
        value, material = canary()
        texts: list[str] = []
        first = store.write_pending(path, material, expected_current=None)
        texts.append(repr(store.read(path, first)))
        first = store.promote(path, first)
        second = store.write_pending(path, NEW, expected_current=first)
        second = store.promote(path, second)
        restored = store.restore_previous(path)  # the canary is current again, as a new version
        texts += [repr(store), repr(store.describe(path)), str(store.describe(path))]

        # Every refusal, while the canary sits in the store: its text must not carry it.
        errors: list[StoreError] = []
        for attempt in (
            lambda: store.write_pending(path, OTHER, expected_current=first),
            lambda: store.write_pending(path, OTHER, expected_current=None),
            lambda: store.retire(path, restored),
            lambda: store.mark_pending(path, first),  # older than current
            lambda: store.promote(path, first),
            lambda: store.read(path, "999"),
        ):
            with pytest.raises(StoreError) as info:
                attempt()
            errors.append(info.value)
        store.retire(path, second)  # no previous left to restore
        store.retire(path, first)  # the canary's first version: destroyed, unreadable
        for attempt in (lambda: store.restore_previous(path), lambda: store.read(path, first)):
            with pytest.raises(VersionUnavailable) as unavailable:
                attempt()
            errors.append(unavailable.value)

        for exc in errors:
            texts += [str(exc), repr(exc), str(exc.__cause__), str(exc.__context__)]
        texts += [repr(store.describe(path)), *self.metadata_texts(store, path)]
        leaks = [text for text in texts if value in text]
        assert leaks == []
        assert store.read(path) == material  # and yet the value itself is intact
