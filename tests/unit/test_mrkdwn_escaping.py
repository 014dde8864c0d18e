"""Every renderer escapes catalog and user text in mrkdwn; mention() is the only markup.

A rotation stored before the catalog refused such names (or a back end's words, a failure
reason, a note) may carry `<!here>`, `<!channel>` or a disguised link: each surface shows it
as text. Slack parses the `text` fallback too, so it is checked with the blocks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from slack_sdk.models.views import View as SlackView

from bot.catalog.dependency_map import ConsumerView, DependencyMap, HealthCheckView, LaneView
from bot.domain.alert import Alert
from bot.domain.alert_context import describe
from bot.domain.credentials import UsageEvidence, UsageSeen
from bot.domain.gate import GateResult
from bot.domain.lifecycle import Phase, StepState
from bot.domain.mentions import mention
from bot.domain.receipts import Receipt, ReceiptKind
from bot.domain.reminders import (
    ESCALATE,
    OVERLAP_WARNING,
    READY_TO_REVOKE,
    REMIND,
    Notice,
    gate_blocked_text,
    notice_text,
    step_kind,
)
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.domain.usage import unmapped_text
from bot.services.emergency import OwnerNote
from bot.services.health import HealthLine, RotationEvidence
from bot.services.rotations import MessageContext, Plan
from handlers import blocks

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
EVIL = "<!channel> <https://evil.example|Open the runbook> & <!here>"
MARKUP = ("<!channel>", "<!here>", "<https://evil")
ESCAPED = "&lt;!channel&gt; &lt;https://evil.example|Open the runbook&gt; &amp; &lt;!here&gt;"


def hostile_rotation() -> Rotation:
    r = Rotation.begin(
        secret="key<!here>", lanes=["dev", "pr<!here>od"],
        consumers=[
            ConsumerPlan("api<!channel>", "pr<!here>od", "U0ALICE", "restart<!here>"),
            ConsumerPlan("web", "dev", "S0DATA", "hot"),
        ],
        overlap=timedelta(hours=24), observe=timedelta(hours=2),
        store_path="ai/<https://evil.example|x>", actor="U0ADMIN", now=T0,
    )
    r.id = 7
    r.prepared(old_version="1", new_version="2<!here>", old_key_id=None, new_key_id=None,
               actor="U0ADMIN", now=T0)
    return r


def hostile_alert() -> Alert:
    return Alert(consumer="api<!channel>", secret="key<!here>", lane="pr<!here>od",
                 failure_class="authentication", reason=EVIL, first_seen=T0, last_seen=T0,
                 source="reported by U0ALICE", rotation_id=7, id=4)


def _mrkdwn(node: Any) -> list[str]:
    """Every text Slack parses as mrkdwn in a block or view (plain_text, button values and
    private_metadata are shown or returned as they are, never parsed)."""
    if isinstance(node, list):
        return [t for item in node for t in _mrkdwn(item)]
    if not isinstance(node, dict):
        return []
    found = [str(node["text"])] if node.get("type") == "mrkdwn" and "text" in node else []
    return found + [t for value in node.values() for t in _mrkdwn(value)]


def dumped(rendered: blocks.Rendered | SlackView | str) -> str:
    """What Slack parses of a message (its `text` fallback and mrkdwn), a view or a text."""
    if isinstance(rendered, str):
        return rendered
    if isinstance(rendered, SlackView):
        return json.dumps(_mrkdwn(rendered.to_dict()))
    text, body = rendered
    return json.dumps([text, *_mrkdwn([b.to_dict() for b in body])])


def assert_escaped(payload: str) -> None:
    found = [m for m in MARKUP if m in payload]
    assert found == [], payload
    assert "&lt;" in payload  # the hostile text is there, shown as text


def rotation_surfaces() -> dict[str, Callable[[], Any]]:
    r = hostile_rotation()
    api = r.consumers["api<!channel>"]
    # A Redis client name or a Vault display name is whatever the client chose.
    gate = GateResult((f"api<!channel> has not signed off (owner U0ALICE) {EVIL}",),
                      usage=f"usage evidence: cannot tell ({EVIL})")
    evidence = RotationEvidence(
        health={"api<!channel>": HealthLine(
            consumer="api<!channel>", ok=False, failure_class="authentication", reason=EVIL,
            version=None, at=T0)},
        usage=UsageEvidence(True, EVIL), usage_line=f"old credential still in use: {EVIL}",
        unmapped=(f"unmapped consumer 10.0.3.7, application_name {EVIL} (connected now)",))
    failed = hostile_rotation()
    failed.fail(reason=f"store said {EVIL}", now=T0)
    ready_check = Rotation.begin(
        secret="key<!here>", lanes=["dev"], consumers=[ConsumerPlan("web", "dev", "S0DATA", "hot")],
        overlap=timedelta(hours=24), observe=timedelta(hours=2),
        store_path="ai/<https://evil.example|x>", actor="U0ADMIN", now=T0)
    ready_check.id = 8
    note = OwnerNote(consumer="api<!channel>", owner="U0ALICE", lane="pr<!here>od",
                     reload="restart", note=EVIL)
    lines = blocks.owner_rollback_lines([note])
    observing = hostile_rotation()
    observing.phase = Phase.OBSERVING
    stranger = UsageSeen(address="10.0.3.7", application_name=EVIL, user="u<!here>", at=T0)
    return {
        "rotation message": lambda: blocks.rotation_message(r, gate, evidence),
        "observing message": lambda: blocks.rotation_message(observing, gate, evidence),
        "unmapped consumer note": lambda: unmapped_text(observing, stranger, T0),
        "failed rotation message": lambda: blocks.rotation_message(failed),
        "turn prompt": lambda: blocks.turn_prompt(r, api, StepState.DISTRIBUTED),
        "step done": lambda: blocks.step_done(r, api, StepState.VALIDATED, "U0ALICE"),
        "status list": lambda: blocks.status_list([r]),
        "home": lambda: blocks.home_view("U0ALICE", [r], [(r, api, StepState.VALIDATED)], [],
                                         [(r, f"unmapped consumer 10.0.3.7, user {EVIL}")]),
        "override modal": lambda: blocks.override_modal(r, gate),
        "rollback modal": lambda: blocks.rollback_modal(r, "api<!channel>", lines),
        "problems and instructions": lambda: blocks.rotation_message(
            ready_check, None, None, MessageContext(("U0ADMIN",), EVIL, (hostile_alert(),))),
        "open problems": lambda: blocks.rotation_message(
            r, None, None, MessageContext(("U0ADMIN",), None, (hostile_alert(),))),
        "not related modal": lambda: blocks.not_related_modal(hostile_alert(), None),
        "prompt retired": lambda: blocks.prompt_retired(r, api, StepState.VALIDATED),
        **{
            f"receipt {kind}": partial(blocks.receipt_message, r, Receipt(
                kind, "U0ADMIN", "api<!channel>", EVIL,
                {"lane": "pr<!here>od", "alert": "A-<!here>", "new_version": "2<!here>",
                 "phase": "validating", "by_hand": EVIL, "freeze": "audit <!here> week"}),
                ("U0ADMIN",), lines)
            # These tell of the rotation only: no name or reason to escape.
            for kind in set(ReceiptKind) - {ReceiptKind.READY_TO_SWITCH, ReceiptKind.SWITCHED,
                                            ReceiptKind.RESUMED,
                                            ReceiptKind.SWITCH_QUEUE_CANCELLED}
        },
        "emergency modal": lambda: blocks.emergency_modal(r, 4),
        "history": lambda: blocks.history_message("key<!here>", [r]),
        "gate blocked": lambda: gate_blocked_text(r, gate.unmet, ("U0ADMIN",)),
        **{
            f"notice {kind}": partial(notice_text, r, Notice(
                kind, "api<!channel>", "U0ALICE", step=StepState.VALIDATED,
                waited=timedelta(hours=1),
                pending=(("api<!channel>", "pr<!here>od", "U0ALICE"),)), ("U0ADMIN",))
            for kind in (step_kind(REMIND, StepState.VALIDATED),
                         step_kind(ESCALATE, StepState.VALIDATED), OVERLAP_WARNING,
                         READY_TO_REVOKE)
        },
    }


@pytest.mark.parametrize("surface", sorted(rotation_surfaces()))
def test_rotation_surfaces_escape_names_notes_and_reasons(surface: str) -> None:
    assert_escaped(dumped(rotation_surfaces()[surface]()))


def test_alert_context_and_message_escape_names_and_reason() -> None:
    r = hostile_rotation()
    context = describe(consumer="api<!channel>", lane="pr<!here>od",
                       failure_class="authentication", secret="key<!here>",
                       began=T0 + timedelta(minutes=5), rotation=r, owner="U0ALICE",
                       reload="restart<!here>")
    alert = Alert(consumer="api<!channel>", secret="key<!here>", lane="pr<!here>od",
                  failure_class="authentication", reason=EVIL, first_seen=T0, last_seen=T0,
                  id=3, rotation_id=7)
    assert_escaped(context.text)
    assert "<@U0ALICE>" in context.text  # the owner is still a mention
    assert_escaped(dumped(blocks.alert_message(alert, context.text, 7)))
    assert_escaped(dumped(blocks.home_view("U0ALICE", [], [], [alert])))


def test_plan_and_map_escape_catalog_text() -> None:
    plan = Plan(
        secret="key", lanes=("pr<!here>od",),
        order=(("pr<!here>od", (ConsumerPlan("api", "pr<!here>od", "U0ALICE", "hot"),)),),
        overlap=timedelta(hours=1), observe=timedelta(hours=1), issuer_kind="manual",
        store_kind="file", store_path="ai/<!here>", blockers=(f"store not reachable: {EVIL}",),
        warnings=(f"lane 'pr<!here>od' {EVIL}",), reload_notes=(f"api (pr<!here>od): {EVIL}",),
    )
    assert_escaped(dumped(blocks.plan_message(plan)))
    dmap = DependencyMap(
        secret="key", description=EVIL, issuer_kind="manual", issuer_name=None,
        dual_valid=True, evidence="none <!here>", store_name="local", store_kind="file",
        store_location="folder <!here>", store_path="ai/key",
        lanes=(LaneView(name="pr<!here>od", listed=True, consumers=(ConsumerView(
            name="api", owner="U0ALICE", lane="pr<!here>od", reload="hot",
            health_check=HealthCheckView(method="GET", url="http://x/<!here>", expect_status=200,
                                         version_field=None, timeout="5s"),
            rollback=EVIL),)),),
    )
    rendered = dumped(blocks.map_message(dmap))
    assert_escaped(rendered)
    assert json.dumps(ESCAPED)[1:-1] in rendered  # the rollback note, whole, as text


def test_mentions_stay_mentions_and_anything_else_is_text() -> None:
    assert mention("U0ALICE") == "<@U0ALICE>"
    assert mention("S0DATA") == "<!subteam^S0DATA>"
    # Not a Slack id (readiness warns): shown as text, never inside <...>.
    assert mention("!here") == "!here"
    assert mention("U0X><!channel") == "U0X&gt;&lt;!channel"
    from bot.domain import mentions  # the one escaper, next to mention(); blocks re-exports

    assert mentions.escape_mrkdwn(EVIL) == ESCAPED
    assert blocks.escape_mrkdwn is mentions.escape_mrkdwn
