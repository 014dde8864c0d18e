"""kill -9 at every phase boundary and in the middle of an issuer call, restart, resume.

The issuer is the real redis-acl issuer against a real Redis, reached through a fault proxy
that can stall the connection so the process is provably mid-call when it dies. After every
crash: the rotation has a named state, the old password still authenticates on Redis until
revocation, and nothing the bot posts in Slack is posted twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from faultproxy import FaultProxy
from harness.serve import eventually
from rel_cluster import OWNERS, SECRET, Cluster, authenticates, parent_posts, rounds, thread_posts
from servers import RedisServer

from bot.domain.lifecycle import Phase
from handlers.ids import Action

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.openbao]

OLD_PASSWORD = "old-password-for-crash-tests"
NAMED = {p.value for p in Phase}
KILL_DELAYS = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2)


def crash_and_restart(cluster: Cluster, redis: RedisServer, *, revoked: bool = False) -> None:
    replica = cluster.replicas[0]
    replica.kill9()
    # Between death and restart: the rotation is in a named phase, the old password works.
    row = cluster.rotation_row()
    assert row["phase"] in NAMED
    assert authenticates(redis.port, OLD_PASSWORD) is not revoked
    replica.start()


def assert_posted_once(cluster: Cluster) -> None:
    assert len(cluster.parents()) == 1, [m.text for m in cluster.parents()]
    assert parent_posts(cluster) == 1
    posts = thread_posts(cluster)
    assert not posts or max(posts.values()) == 1, {t: n for t, n in posts.items() if n > 1}


@pytest.mark.parametrize("round_", range(rounds(1)))
def test_kill_at_each_phase_boundary_and_mid_issuer_call(
    round_: int,
    redis_acl_cluster: Callable[..., Cluster],
    redis_server: RedisServer,
    proxy_for: Callable[[str, int], FaultProxy],
) -> None:
    redis_proxy = proxy_for("redis", redis_server.port)
    cluster = redis_acl_cluster(OLD_PASSWORD, redis_port=redis_proxy.port)

    # 1. Killed in the middle of minting: Redis holds the bot's ACL SETUSER, unanswered.
    redis_proxy.stall()
    cluster.command("U0ADMIN", f"start {SECRET}")
    assert redis_proxy.wait_for_stalled_traffic(15), "the bot never reached Redis"
    assert cluster.rotation_row()["phase"] == "ready-check"
    crash_and_restart(cluster, redis_server)
    redis_proxy.heal()
    # After the restart the timer retries the preparation; nothing is half-done.
    cluster.wait_phase("distributing", timeout=30)
    row = cluster.rotation_row()
    assert row["new_key_id"] and row["old_key_id"]
    assert authenticates(redis_server.port, OLD_PASSWORD)
    assert_posted_once(cluster)

    # 2. Killed at every boundary between owner steps.
    for consumer, owner in OWNERS:
        for label in ("Distributed", "Validated"):
            prompt = cluster.open_prompt(consumer, label, timeout=30)
            reply = cluster.click(owner, prompt.ts, Action.STEP.value)
            assert reply.status == 200
            step = label.lower()
            eventually(lambda c=consumer, s=step: cluster.steps().get(c) == s, 30,
                       f"{consumer} {step}")
            # Let the posts that belong to this step land before the crash (a crash between
            # the state change and its post is the next test's subject).
            eventually(lambda p=prompt: not any(
                b.get("type") == "actions"
                for b in (cluster.state.find_message("C0ROTATE", p.ts) or p).blocks), 15)
            crash_and_restart(cluster, redis_server)
            assert_posted_once(cluster)

    # 3. Killed after the switch, during observation, and once the gate opened.
    eventually(lambda: cluster.has_button(Action.SWITCH), 30, "switch button")
    cluster.click("U0ADMIN", cluster.parent().ts, Action.SWITCH.value)
    cluster.wait_phase("observing", timeout=30)
    crash_and_restart(cluster, redis_server)
    for consumer, owner in OWNERS:
        prompt = cluster.open_prompt(consumer, "Sign off", timeout=30)
        cluster.click(owner, prompt.ts, Action.STEP.value)
        eventually(lambda c=consumer: cluster.steps().get(c) == "signed-off", 30)
    crash_and_restart(cluster, redis_server)
    cluster.wait_phase("ready to revoke", timeout=40)
    crash_and_restart(cluster, redis_server)
    assert_posted_once(cluster)

    # 4. Killed in the middle of revoking: the old password is still valid, and the
    # rotation still revocable; pressing Revoke again finishes it.
    redis_proxy.stall()
    cluster.click("U0ADMIN", cluster.parent().ts, Action.REVOKE.value)
    assert redis_proxy.wait_for_stalled_traffic(15), "revoke never reached Redis"
    crash_and_restart(cluster, redis_server)
    redis_proxy.heal()
    assert cluster.rotation_row()["phase"] == "revocable"
    cluster.click("U0ADMIN", cluster.wait_phase("ready to revoke").ts, Action.REVOKE.value)
    cluster.wait_phase("revoked", timeout=30)
    assert not authenticates(redis_server.port, OLD_PASSWORD)
    crash_and_restart(cluster, redis_server, revoked=True)

    # Every step once in the audit trail; the rotation message once; prompts once.
    steps = cluster.sql("select consumer, after, count(*) from audit_events where "
                        "action = 'step' and rotation_id = 1 group by consumer, after")
    assert {n for _, _, n in steps} == {1} and len(steps) == 9
    assert_posted_once(cluster)
    assert cluster.state.violations == []
    assert cluster.replicas[0].starts >= 10


@pytest.mark.parametrize("round_", range(rounds(1)))
def test_kill_right_after_the_ack_leaves_a_named_state_and_no_duplicate(
    round_: int,
    redis_acl_cluster: Callable[..., Cluster],
    redis_server: RedisServer,
) -> None:
    """The listener runs after the ack: dying then may lose the click (the owner presses
    again) but must never leave a half state or a double post."""
    cluster = redis_acl_cluster(OLD_PASSWORD)
    cluster.command("U0ADMIN", f"start {SECRET}")
    cluster.wait_phase("distributing", timeout=30)
    for consumer, owner in OWNERS:
        for label in ("Distributed", "Validated"):
            # The kill lands ever later after the ack: before the commit, between the commit
            # and the posts, after everything. Slack does not resend an acked click, so a
            # click lost to the crash is pressed again, like a person would.
            for delay in KILL_DELAYS:
                # A kill between a prompt's claim and its post leaves it to the catch-up
                # after the claim's lease (30 s): hence the longer wait.
                prompt = cluster.open_prompt(consumer, label, timeout=75)
                assert cluster.click(owner, prompt.ts, Action.STEP.value).status == 200
                time.sleep(delay)
                crash_and_restart(cluster, redis_server)
                if cluster.steps().get(consumer) == label.lower():
                    break
            assert cluster.steps().get(consumer) == label.lower()
            assert cluster.rotation_row()["phase"] in NAMED
    posts = thread_posts(cluster)
    assert max(posts.values()) == 1, {t: n for t, n in posts.items() if n > 1}
    assert len(cluster.parents()) == 1
    assert authenticates(redis_server.port, OLD_PASSWORD)
