"""Three `rotabot serve` replicas on one PostgreSQL: requests spread across them, clicks raced
on different replicas, and the rotation still ends consistent, applied once, in one message."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest
from harness.serve import eventually
from rel_cluster import (
    OWNERS,
    SECRET,
    Cluster,
    clicks,
    on_every_replica,
    parent_posts,
    race,
    rounds,
    seed_vault,
    thread_posts,
    vault_versions,
)
from servers import OpenBaoServer

from bot.sandbox.slack_standin.slack_side import BotReply
from handlers.ids import Action

pytestmark = [pytest.mark.postgres, pytest.mark.openbao]


def start_and_status(cluster: Cluster, per_replica: int) -> list[Callable[[], BotReply]]:
    """`start` on replica 0 and `status R-1` on every other replica, `per_replica` times."""
    def status(i: int) -> Callable[[], BotReply]:
        return lambda: cluster.command("U0ADMIN", "status R-1", replica=i)
    calls = [lambda: cluster.command("U0ADMIN", f"start {SECRET}", replica=0)]
    return calls + [status(i) for i in range(1, len(cluster.replicas))
                    for _ in range(per_replica)]


def run_replicated_rotation(cluster: Cluster) -> None:
    state = cluster.state
    # `start` lands on replica 0 while an impatient admin asks for its status on the others:
    # the rotation exists in the database before its message does, which is the moment two
    # replicas could each decide to post "the" rotation message.
    race(*start_and_status(cluster, per_replica=3))
    cluster.wait_ephemeral("U0ADMIN", "Started R-1")
    cluster.wait_phase("distributing")

    for consumer, owner in OWNERS:
        for label in ("Distributed", "Validated"):
            prompt = cluster.open_prompt(consumer, label)
            # The owner's click reaches every replica at once, a stranger's click races it.
            race(*clicks(cluster, owner, prompt.ts, Action.STEP),
                 *clicks(cluster, "U0MALLORY", prompt.ts, Action.STEP, range(1)))
            step = label.lower()
            eventually(lambda c=consumer, s=step: cluster.steps().get(c) == s,
                       what=f"{consumer} {step}")

    eventually(lambda: cluster.has_button(Action.SWITCH), what="switch button")
    on_every_replica(cluster, "U0ADMIN", cluster.parent().ts, Action.SWITCH)
    cluster.wait_phase("observing")

    for consumer, owner in OWNERS:
        prompt = cluster.open_prompt(consumer, "Sign off")
        on_every_replica(cluster, owner, prompt.ts, Action.STEP)
    # Every replica runs the timer (until a leader is elected); the gate opens once.
    cluster.wait_phase("ready to revoke", timeout=30)
    on_every_replica(cluster, "U0ADMIN", cluster.parent().ts, Action.REVOKE)
    cluster.wait_phase("revoked")
    assert state.violations == []


@pytest.fixture
def three_replicas(
    make_cluster: Callable[..., Cluster],
    openbao_server: OpenBaoServer,
    store_path: str,
) -> Cluster:
    """Three replicas rotating a seeded local-issuer secret, behind a slow Slack."""
    seed_vault(openbao_server.url, openbao_server.token, store_path, {"api_key": "v1-value"})
    # A slow Slack (every Web API call takes a little longer) widens the window in which the
    # rotation exists but its message does not: the window the replicas must not both fill.
    cluster = make_cluster(replicas=3, issuer="{kind: local}", store_path=store_path,
                           proxied=("slack",))
    cluster.proxies["slack"].set_latency(0.2)
    return cluster


def test_rotation_across_three_replicas_is_consistent_and_applied_once(
    three_replicas: Cluster, openbao_server: OpenBaoServer, store_path: str
) -> None:
    cluster = three_replicas
    run_replicated_rotation(cluster)

    row = cluster.rotation_row()
    assert row["phase"] == "revoked"
    assert row["failure_reason"] is None
    assert cluster.steps() == {c: "signed-off" for c, _ in OWNERS}

    # Every step applied once, whatever number of replicas received the click.
    steps = Counter(cluster.sql(
        "select consumer, after from audit_events where action = 'step' and rotation_id = 1"))
    assert steps == Counter({(c, s): 1 for c, _ in OWNERS
                             for s in ("distributed", "validated", "signed-off")})
    phases = [p for (p,) in cluster.sql(
        "select after from audit_events where action = 'phase' and rotation_id = 1 order by id")]
    assert phases == ["prepared", "distributing", "validating", "switched", "observing",
                      "revocable", "revoked"]
    # Mallory's racing clicks were refused and audited, never applied.
    refused = cluster.sql("select count(*) from audit_events where action = 'refused' "
                          "and actor = 'U0MALLORY'")
    assert refused[0][0] == 6

    # One new store version, promoted once, the old one retired once.
    meta = vault_versions(openbao_server.url, openbao_server.token, store_path)
    assert sorted(meta["versions"]) == ["1", "2"]
    assert meta["versions"]["1"]["destroyed"] is True

    # ONE rotation message, and every thread prompt posted exactly once.
    assert len(cluster.parents()) == 1, [m.text for m in cluster.parents()]
    assert parent_posts(cluster) == 1
    posts = thread_posts(cluster)
    assert posts and max(posts.values()) == 1, {t: n for t, n in posts.items() if n > 1}
    prompts = [t for t in posts if t.split(" ")[0] in dict(OWNERS)]
    assert len(prompts) == 9  # three consumers, three prompts each
    assert cluster.rotation_row()["message_ts"] == cluster.parent().ts
    assert all(r.alive for r in cluster.replicas)
    assert json.dumps(cluster.state.violations) == "[]"


@pytest.mark.parametrize("n", range(rounds(2)))
def test_parent_message_is_posted_once_when_replicas_race_for_it(
    n: int, three_replicas: Cluster
) -> None:
    """Only the start and status race: repeated, since a lost race is a matter of timing."""
    cluster = three_replicas
    race(*start_and_status(cluster, per_replica=4))
    cluster.wait_phase("distributing")
    eventually(lambda: cluster.open_prompt("retriever", "Distributed"))
    assert len(cluster.parents()) == 1
    assert parent_posts(cluster) == 1
    assert max(thread_posts(cluster).values()) == 1


def test_post_claims_one_winner_a_stale_claim_taken_over_once_a_done_one_never(
    postgres_url: str,
) -> None:
    """The claims behind "one message, each prompt once" (storage/claims.py), on PostgreSQL."""
    from datetime import UTC, datetime, timedelta

    from rel_cluster import db_upgrade
    from sqlalchemy import create_engine, text

    from storage.claims import SqlPostClaims

    db_upgrade(postgres_url)
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text(
            "insert into rotations (id, secret, phase, lanes, overlap_seconds, observe_seconds,"
            " created_at, started_by, store_path, urgent, auto_revoke, revision) values (1, 's',"
            " 'ready-check', '[]', 1, 1, now(), 'U0ADMIN', '', false, false, 0)"))
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    a = SqlPostClaims(engine, lambda: now[0], lease=timedelta(seconds=60))
    b = SqlPostClaims(engine, lambda: now[0], lease=timedelta(seconds=60))
    assert a.claim(1, "rotation-message") is True
    assert b.claim(1, "rotation-message") is False
    now[0] += timedelta(seconds=61)  # a died holding it: exactly one replica takes over
    assert [b.claim(1, "rotation-message"), a.claim(1, "rotation-message")] == [True, False]
    b.done(1, "rotation-message")
    now[0] += timedelta(days=365)
    assert a.claim(1, "rotation-message") is False  # posted: never again
    assert a.claim(1, "prompt:distributed", "retriever") is True
    a.release(1, "prompt:distributed", "retriever")  # the post failed: anyone may retry
    assert b.claim(1, "prompt:distributed", "retriever") is True
    engine.dispose()
