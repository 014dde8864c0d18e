"""Post claims (storage/claims.py): `finished` answers in one read which posts went out, so
re-offering a lane's prompts does not cost a query per consumer; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import event, text

from storage.claims import SqlPostClaims
from storage.engine import make_engine
from storage.migrate import upgrade

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_finished_lists_exactly_the_posts_that_went_out(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into rotations (id, secret, phase, lanes, overlap_seconds,"
                " observe_seconds, created_at, started_by, store_path, urgent, auto_revoke,"
                " revision) values (1, 's', 'distributing', '[]', 1, 1, :t, 'U0ADMIN', '',"
                " false, false, 0)"
            ),
            {"t": T0},
        )
    claims = SqlPostClaims(engine, lambda: T0)
    try:
        assert claims.finished(1) == set()
        assert claims.claim(1, "prompt:distributed", "web")
        assert claims.claim(1, "prompt:distributed", "api")
        assert claims.claim(1, "rotation-message")
        claims.done(1, "prompt:distributed", "web", "1700000000.000100")
        claims.done(1, "rotation-message")
        claims.release(1, "prompt:distributed", "api")  # failed post: not finished
        assert claims.claim(1, "prompt:validated", "web")  # in flight: not finished

        queries = 0

        def count(*_: object) -> None:
            nonlocal queries
            queries += 1

        event.listen(engine, "before_cursor_execute", count)
        assert claims.finished(1) == {
            ("prompt:distributed", "web"),
            ("rotation-message", ""),
        }
        event.remove(engine, "before_cursor_execute", count)
        assert queries == 1
        assert claims.finished(2) == set()  # another rotation's posts are not listed
        # Where each finished prompt went (so an ended rotation can take its buttons off):
        # prompts only, with a ts; the in-flight and released ones are not there.
        assert claims.posted(1, "prompt:") == {
            ("prompt:distributed", "web"): "1700000000.000100"}
        assert claims.posted(2, "prompt:") == {}
    finally:
        engine.dispose()
