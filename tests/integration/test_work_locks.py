"""Work locks (storage/work_locks.py): one holder per rotation and kind across replicas, let
go when the work ends, and at once when the holder's process dies; SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, create_engine, text

from storage.sql_common import advisory_key
from storage.work_locks import SqlWorkLocks


def test_one_holder_per_rotation_and_kind_until_its_work_ends(
    two_replicas: tuple[Engine, Engine],
) -> None:
    a, b = SqlWorkLocks(two_replicas[0]), SqlWorkLocks(two_replicas[1])
    with a.hold(1, "revoke") as mine:
        assert mine
        with b.hold(1, "revoke") as theirs:
            assert not theirs
        with b.hold(1, "switch") as other_kind, b.hold(2, "revoke") as other_rotation:
            assert other_kind and other_rotation
    with b.hold(1, "revoke") as theirs:
        assert theirs  # a's work ended: let go
    with pytest.raises(RuntimeError), a.hold(1, "revoke") as mine:
        assert mine
        raise RuntimeError("the work failed")
    with b.hold(1, "revoke") as theirs:
        assert theirs  # let go on failure too


@pytest.mark.postgres
def test_a_holder_that_dies_lets_go_at_once(postgres_url: str) -> None:
    """kill -9 mid-revocation: its database session ends, and so does the lock; the button
    pressed again after the restart works without waiting for any lease."""
    holder, other = create_engine(postgres_url), create_engine(postgres_url)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with SqlWorkLocks(holder).hold(1, "revoke") as mine:
            assert mine
            with SqlWorkLocks(other).hold(1, "revoke") as theirs:
                assert not theirs
            key = advisory_key("rotabot-work:1:revoke")
            with admin.connect() as conn:  # the holder's process dies: its backend goes
                ended = conn.execute(text(
                    # A bigint key is held as two halves: classid high, objid low.
                    "select pg_terminate_backend(pid, 5000) from pg_locks"
                    " where locktype = 'advisory' and granted and objsubid = 1"
                    " and database = (select oid from pg_database"
                    "                 where datname = current_database())"
                    " and classid::bigint = :high and objid::bigint = :low"),
                    {"high": (key >> 32) & 0xFFFFFFFF, "low": key & 0xFFFFFFFF}).all()
            assert ended == [(True,)]  # waited for: the backend is gone
            with SqlWorkLocks(other).hold(1, "revoke") as theirs:
                assert theirs
    finally:
        for engine in (holder, other, admin):
            engine.dispose()
