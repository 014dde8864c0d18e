"""Two-person break-glass requests read from a rotation's audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain.audit import AuditEvent
from bot.domain.break_glass import APPROVED, EXPIRED, REQUESTED, open_request
from bot.domain.freeze import FREEZE_OVERRIDE

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def event(what: str, actor: str = "U0ADMIN", *, after: str | None = None,
          reason: str | None = None, **detail: str) -> AuditEvent:
    return AuditEvent(at=T0, actor=actor, action=what, secret="s", rotation_id=1,
                      after=after, reason=reason, detail=detail)


def asked(**more: str) -> AuditEvent:
    return event(REQUESTED, reason="the key leaked",
                 expires_at=(T0 + timedelta(minutes=15)).isoformat(), approvals="3", **more)


def test_a_request_stays_open_until_approved_expired_revoked_or_the_rotation_moves() -> None:
    request = open_request([event("phase", after="observing"), asked()])
    assert request is not None
    assert (request.requester, request.reason, request.approvals) == (
        "U0ADMIN", "the key leaked", 3)
    assert not request.expired(T0 + timedelta(minutes=14)) and request.expired(
        T0 + timedelta(minutes=15))
    approved = open_request([asked(), event(APPROVED, "U0ALICE")])
    assert approved is not None and approved.approvers == ("U0ALICE",)
    assert approved.has_acted("U0ADMIN") and approved.has_acted("U0ALICE")
    assert not approved.has_acted("U0BOB")
    for closing in (event(EXPIRED, "rotabot"), event("revoke.override", "U0ALICE"),
                    event("phase", after="rolled-back")):
        assert open_request([asked(), closing]) is None
    # The gate opening (observing -> revocable) leaves it open; a new request replaces it.
    assert open_request([asked(), event("phase", after="revocable")]) is not None
    again = open_request([asked(), event(EXPIRED, "rotabot"), event(REQUESTED, "U0ALICE",
                          reason="still leaked", expires_at=T0.isoformat())])
    assert again is not None and again.requester == "U0ALICE" and again.approvers == ()


def test_a_freeze_overridden_with_the_request_carries_over_to_the_approval() -> None:
    override = event(FREEZE_OVERRIDE, action="revoke")
    request = open_request([override, asked()])
    assert request is not None and request.freeze_overridden
    switch_override = event(FREEZE_OVERRIDE, action="switch")
    later = open_request([switch_override, event("phase", after="observing"), asked()])
    assert later is not None and not later.freeze_overridden
