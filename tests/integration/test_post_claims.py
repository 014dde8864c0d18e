"""Post claims (storage/claims.py): `finished` answers in one read which posts went out, so
re-offering a lane's prompts does not cost a query per consumer; on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from harness.serve import eventually
from sqlalchemy import Engine, event, text

from adapters.slack_budget import METHOD_RATES, MemoryTokenBuckets, SlackCallBudget
from adapters.slack_notifier import SlackNotifier
from bot.domain.rotation import ConsumerPlan, Rotation
from handlers import blocks
from storage.claims import SqlPostClaims
from storage.engine import make_engine
from storage.migrate import upgrade

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def insert_rotation(engine: Engine, rotation_id: int) -> None:
    """A bare rotation row for claims to point at."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "insert into rotations (id, secret, phase, lanes, overlap_seconds,"
                " observe_seconds, created_at, started_by, store_path, urgent, auto_revoke,"
                " revision) values (:id, 's', 'distributing', '[]', 1, 1, :t, 'U0ADMIN', '',"
                " false, false, 0)"
            ),
            {"id": rotation_id, "t": T0},
        )


def test_finished_lists_exactly_the_posts_that_went_out(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    insert_rotation(engine, 1)
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


def test_a_prompt_queued_behind_a_busy_channel_is_not_posted_again_by_the_catch_up(
    database_url: str,
) -> None:
    """The claim is taken when Slack's budget gives the post its turn, not before the wait:
    a prompt waiting longer than the claim's lease in a busy channel's queue is not taken
    over (and posted a second time) by the catch-up."""
    upgrade(database_url)
    engine = make_engine(database_url)
    insert_rotation(engine, 7)
    now = [T0]
    claims = SqlPostClaims(engine, lambda: now[0], lease=timedelta(seconds=15))
    budget_clock = [1_800_000_000.0]
    budget = SlackCallBudget(MemoryTokenBuckets(), clock=lambda: budget_clock[0])
    for _ in range(int(METHOD_RATES["chat.postMessage"].burst)):  # the channel is busy
        budget.call("chat.postMessage", {"channel": "C0ROTATE", "thread_ts": "1.000001"},
                    lambda: None)
    stored = Rotation.begin(secret="s", lanes=["prod"],
                            consumers=[ConsumerPlan("web", "prod", "U0WEB", "hot")],
                            overlap=timedelta(hours=24), observe=timedelta(hours=2),
                            store_path="s", actor="U0ADMIN", now=T0)
    stored.prepared(old_version="1", new_version="2", old_key_id=None, new_key_id=None,
                    actor="U0ADMIN", now=T0)
    stored.id, stored.channel, stored.message_ts = 7, "C0ROTATE", "1.000001"
    assert [step.value for _, step in stored.pending_steps()] == ["distributed"]
    posts: list[str] = []

    class Slack:
        def chat_postMessage(self, *, channel: str, text: str, **_: Any) -> dict[str, str]:
            posts.append(text)
            return {"ok": "true", "channel": channel, "ts": f"2.{len(posts):06d}"}

        def chat_update(self, *, channel: str, ts: str, **_: Any) -> dict[str, str]:
            return {"ok": "true", "channel": channel, "ts": ts}

    notifier = SlackNotifier(client=Slack(), render=blocks,  # type: ignore[arg-type]
                             load=lambda _id: stored, attach=lambda *_: None,
                             claims=claims, budget=budget, min_interval=0.0)
    first = threading.Thread(target=notifier.rotation_changed,
                             args=(stored, stored.pending_steps()), daemon=True)
    first.start()
    eventually(lambda: budget.waiting() == 1, 10, "the prompt waiting for its turn")
    now[0] += timedelta(seconds=60)  # longer than the lease: the catch-up runs meanwhile
    catch_up = threading.Thread(target=notifier.catch_up, args=([stored],), daemon=True)
    catch_up.start()
    eventually(lambda: budget.waiting() == 2, 10, "the catch-up's post waiting too")
    budget_clock[0] += 120.0  # the channel's bucket refills
    budget.poke()
    first.join(10)
    catch_up.join(10)
    assert not first.is_alive() and not catch_up.is_alive()
    assert budget.flush()
    assert len(posts) == 1, posts
    assert claims.finished(7) == {("prompt:distributed", "web")}
    engine.dispose()
