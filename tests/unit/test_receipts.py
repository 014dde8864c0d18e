"""Receipts are read from the audit events one change recorded: each state change told once,
owner steps left to their prompts, the admins' turn said by the step that made it so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain.lifecycle import StepState
from bot.domain.receipts import ReceiptKind, receipts_for
from bot.domain.rotation import ConsumerPlan, Rotation

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def rotation() -> Rotation:
    r = Rotation.begin(
        secret="model-api-key", lanes=["dev"],
        consumers=[ConsumerPlan("web", "dev", "U0BOB", "hot")],
        overlap=timedelta(hours=1), observe=timedelta(hours=1),
        store_path="ai/key", actor="U0ADMIN", now=T0)
    r.id = 1
    r.events.clear()
    return r


def kinds(r: Rotation) -> list[ReceiptKind]:
    out = [x.kind for x in receipts_for(r.events, ready_to_switch=r.ready_to_switch())]
    r.events.clear()
    return out


def test_each_change_tells_what_happened_once() -> None:
    r = rotation()
    r.prepared(old_version="1", new_version="2", old_key_id=None, new_key_id=None,
               actor="rotabot", now=T0)
    assert kinds(r) == [ReceiptKind.PREPARED]
    r.mark_step("web", StepState.DISTRIBUTED, actor="U0BOB", now=T0)
    assert kinds(r) == []  # the clicked prompt is its own receipt
    r.mark_step("web", StepState.VALIDATED, actor="U0BOB", now=T0)
    assert kinds(r) == [ReceiptKind.READY_TO_SWITCH]
    r.switch(actor="U0ADMIN", now=T0)
    assert kinds(r) == [ReceiptKind.SWITCHED]  # switched then observing: told once
    r.fail(reason="store down", now=T0)
    (failed,) = receipts_for(r.events, ready_to_switch=False)
    assert (failed.kind, failed.reason) == (ReceiptKind.FAILED, "store down")
    r.events.clear()
    r.resume(actor="U0ADMIN", now=T0)
    (resumed,) = receipts_for(r.events, ready_to_switch=False)
    assert (resumed.kind, resumed.detail) == (ReceiptKind.RESUMED, {"phase": "observing"})
    r.events.clear()
    r.record_note(actor="U0ADMIN", now=T0, action="rollback.detail",
                  detail={"new_credential": "revoked"})
    r.rollback(actor="U0ADMIN", now=T0, reason="401s in prod")
    (rolled,) = receipts_for(r.events, ready_to_switch=False)
    assert (rolled.kind, rolled.actor, rolled.reason, rolled.detail) == (
        ReceiptKind.ROLLED_BACK, "U0ADMIN", "401s in prod", {"new_credential": "revoked"})


def test_alert_notes_become_receipts_with_their_consumer_and_reason() -> None:
    r = rotation()
    r.record_note(actor="U0BOB", now=T0, action="alert.reported", reason="401 from provider",
                  detail={"consumer": "web", "alert": "A-3", "lane": "dev"})
    r.record_note(actor="U0CAROL", now=T0, action="alert.not-related", reason="outage",
                  detail={"consumer": "web", "alert": "A-3"})
    r.record_note(actor="rotabot", now=T0, action="health.checked", reason="ok")
    got = receipts_for(r.events, ready_to_switch=False)
    assert [(x.kind, x.actor, x.consumer, x.reason) for x in got] == [
        (ReceiptKind.PROBLEM, "U0BOB", "web", "401 from provider"),
        (ReceiptKind.ALERT_NOT_RELATED, "U0CAROL", "web", "outage"),
    ]
