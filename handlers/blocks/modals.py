"""Modals (start, report a problem, break-glass revoke, rollback, emergency re-rotation, not
related) and the rollback's owner lines."""

from __future__ import annotations

from collections.abc import Sequence

from slack_sdk.models.blocks import (
    Block,
    ContextBlock,
    Option,
    PlainTextInputElement,
    PlainTextObject,
    SectionBlock,
    StaticSelectElement,
)
from slack_sdk.models.blocks.block_elements import RadioButtonsElement
from slack_sdk.models.blocks.blocks import InputBlock
from slack_sdk.models.views import View as SlackView

from bot.domain.alert import Alert
from bot.domain.break_glass import BreakGlassRequest
from bot.domain.freeze import Freeze
from bot.domain.gate import GateResult
from bot.domain.rotation import Rotation
from bot.services.emergency import OwnerNote
from handlers.blocks.common import (
    SECTION_LIMIT,
    code,
    escape_mrkdwn,
    md,
    mention,
    sections,
    told,
    when,
)
from handlers.ids import AlertButton, NotRelatedMeta, RotationButton, StepButton, View


def _reason_input() -> InputBlock:
    return InputBlock(
        block_id="reason",
        optional=True,
        label=PlainTextObject(text="Reason"),
        element=PlainTextInputElement(action_id="value"),
    )


def start_modal(secrets: Sequence[str]) -> SlackView:
    options = [Option(text=PlainTextObject(text=s[:75]), value=s) for s in secrets[:100]]
    return SlackView(
        type="modal",
        callback_id=View.START.value,
        title=PlainTextObject(text="Start a rotation"),
        submit=PlainTextObject(text="Start"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            InputBlock(
                block_id="secret",
                label=PlainTextObject(text="Secret"),
                element=StaticSelectElement(
                    action_id="value", options=options, placeholder=PlainTextObject(text="Pick one")
                ),
            ),
            InputBlock(
                block_id="overlap",
                optional=True,
                label=PlainTextObject(text="Overlap (e.g. 24h)"),
                element=PlainTextInputElement(action_id="value"),
            ),
            InputBlock(
                block_id="observe",
                optional=True,
                label=PlainTextObject(text="Observation window (e.g. 2h)"),
                element=PlainTextInputElement(action_id="value"),
            ),
        ],
    )


def report_problem_modal(button: StepButton) -> SlackView:
    return SlackView(
        type="modal",
        callback_id=View.REPORT_PROBLEM.value,
        private_metadata=button.model_dump_json(),
        title=PlainTextObject(text="Report a problem"),
        submit=PlainTextObject(text="Report"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=md(f"{code(button.consumer)} in R-{button.rotation_id}")),
            InputBlock(
                block_id="what",
                label=PlainTextObject(text="What fails?"),
                element=PlainTextInputElement(
                    action_id="value",
                    multiline=True,
                    placeholder=PlainTextObject(
                        text="e.g. 401 invalid_api_key from the provider (never paste the key)"
                    ),
                ),
            ),
        ],
    )


def override_modal(
    rotation: Rotation,
    gate: GateResult,
    *,
    approvals: int | None = None,
    freeze: Freeze | None = None,
) -> SlackView:
    """The break-glass revoke. ``approvals``: the secret needs that many admins (this one
    asks, the others approve in the thread). ``freeze``: a window is in force, so the admin
    must also say why to act inside it."""
    blocks: list[Block] = [
        *sections(
            [f"• {told(u)}" for u in gate.unmet[:20]],
            f"*{rotation.ref} is not ready to revoke:*",
        ),
        # Said even when it does not block: breaking glass where nothing can tell whether
        # the old credential is used is a different risk from breaking it where nothing is.
        *([ContextBlock(elements=[md(told(gate.usage[:1500]))])]
          if gate.usage.startswith("usage evidence:") else []),
    ]
    if approvals is not None:
        blocks.append(SectionBlock(text=md(
            f"This secret needs {approvals} admins to break the glass: submitting asks in the "
            "thread, and the old credential is revoked only when another admin approves "
            "in time.")))
    blocks.append(InputBlock(
        block_id="reason",
        label=PlainTextObject(text="Reason (posted and audited)"),
        element=PlainTextInputElement(action_id="value", multiline=True, min_length=10),
    ))
    if freeze is not None:
        blocks.append(InputBlock(
            block_id="freeze_reason",
            label=PlainTextObject(text="Why act inside the freeze? (posted and audited)"),
            hint=PlainTextObject(text=f"Frozen: {freeze.describe()}"[:150]),
            element=PlainTextInputElement(action_id="value", min_length=10),
        ))
    return SlackView(
        type="modal",
        callback_id=View.REVOKE_OVERRIDE.value,
        private_metadata=RotationButton(rotation_id=rotation.id or 0).model_dump_json(),
        title=PlainTextObject(text="Break-glass revoke"),
        submit=PlainTextObject(text="Ask for approval" if approvals else "Revoke anyway"),
        close=PlainTextObject(text="Cancel"),
        blocks=blocks,
    )


def approve_break_glass_modal(rotation: Rotation, request: BreakGlassRequest) -> SlackView:
    """A second admin confirms another admin's break-glass revoke, with their own reason."""
    return SlackView(
        type="modal",
        callback_id=View.APPROVE_BREAK_GLASS.value,
        private_metadata=RotationButton(rotation_id=rotation.id or 0).model_dump_json(),
        title=PlainTextObject(text="Approve break-glass"),
        submit=PlainTextObject(text="Approve"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=md(
                f"{mention(request.requester)} asks to revoke the old credential of "
                f"{rotation.ref} ({code(rotation.secret)}) past the gate: "
                f"{told(request.reason[:500])}"[:SECTION_LIMIT])),
            InputBlock(
                block_id="reason",
                label=PlainTextObject(text="Your reason (posted and audited)"),
                element=PlainTextInputElement(action_id="value", multiline=True, min_length=10),
            ),
        ],
    )


def owner_rollback_lines(notes: Sequence[OwnerNote]) -> list[str]:
    """One line per owner who must act on a rollback, for the modal and the thread alike
    (mrkdwn: the catalog's names and rollback notes are escaped)."""
    return [
        f"{mention(n.owner)} {code(n.consumer)} ({escape_mrkdwn(n.lane)}, "
        f"{escape_mrkdwn(n.reload)}): "
        f"{escape_mrkdwn(n.note) if n.note else 'no rollback note in the catalog'}"
        for n in notes
    ]


def rollback_modal(
    rotation: Rotation, consumer: str | None, restart_notes: Sequence[str], alert_id: int = 0
) -> SlackView:
    """The confirmation before a rollback: what the store and issuer will do, what happens to
    the new credential (the admin's choice), and which owners must act. ``restart_notes`` are
    mrkdwn lines from owner_rollback_lines."""
    if rotation.cutover:
        return _rollback_view(
            rotation, consumer, alert_id, what=_reissue_words(rotation),
            notes=list(restart_notes) or ["Every consumer picks up the re-issued value itself."],
            title=f"Re-issue {rotation.ref}", submit="Issue another",
        )
    switched = rotation.switched_at is not None
    old = (
        f"version {escape_mrkdwn(rotation.old_version)}"
        if rotation.old_version
        else "the old credential"
    )
    new = (
        f"version {escape_mrkdwn(rotation.new_version)}"
        if rotation.new_version
        else "the new credential"
    )
    path = code(rotation.store_path)
    if switched:
        what = (
            f"The previous credential ({old}) becomes current again at {path} "
            "(its data is written back as the current version) and the issuer keeps it valid. "
            f"The new credential ({new}) stops being current."
        )
    else:
        what = (
            f"Nothing changes for consumers that read the current credential: the previous "
            f"one ({old}) is still current at {path} and the issuer keeps it "
            f"valid. The new credential ({new}) is never made current."
        )
    what += (
        f" {rotation.ref} ends as rolled back. Below you choose whether the new credential "
        "stays valid but unused (pending) or is revoked now. Owners of restart and staged "
        "consumers are mentioned in the rotation thread with their rollback notes."
    )
    keep = Option(text=PlainTextObject(text="Keep it pending (valid, unused)"), value="keep")
    choice = InputBlock(
        block_id="new_credential",
        label=PlainTextObject(text="The new credential"),
        element=RadioButtonsElement(
            action_id="value",
            initial_option=keep,
            options=[
                keep,
                Option(text=PlainTextObject(text="Revoke it now"), value="revoke"),
            ],
        ),
    )
    return _rollback_view(
        rotation, consumer, alert_id, what=what,
        notes=list(restart_notes) or ["No consumer needs a restart to go back."],
        title=f"Roll back {rotation.ref}", submit="Roll back", choice=choice,
    )


def _reissue_words(rotation: Rotation) -> str:
    """A hard cutover's rollback: the previous value is gone, so it means another one."""
    return (
        f"{rotation.ref} is a *hard cutover*: the previous value stopped working when the new "
        "one was issued and *cannot come back*. Rolling back *issues another replacement* at "
        f"once, makes it current at {code(rotation.store_path)} and writes it to every target "
        "of every lane at the same moment; the current new value stops being current. "
        f"{rotation.ref} ends as rolled back, and every owner is told in the thread to reload "
        "with the re-issued value now."
    )


def _rollback_view(
    rotation: Rotation, consumer: str | None, alert_id: int, *, what: str, notes: list[str],
    title: str, submit: str, choice: InputBlock | None = None,
) -> SlackView:
    return SlackView(
        type="modal",
        callback_id=View.ROLLBACK.value,
        private_metadata=AlertButton(
            alert_id=alert_id, rotation_id=rotation.id, consumer=consumer
        ).model_dump_json(),
        title=PlainTextObject(text=title[:24]),
        submit=PlainTextObject(text=submit),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=md(f"*What will happen:* {what}"[:SECTION_LIMIT])),
            *sections([f"• {n}" for n in notes], "*Owners to act*"),
            *([choice] if choice is not None else []),
            _reason_input(),
        ],
    )


def not_related_modal(alert: Alert, message: tuple[str, str] | None) -> SlackView:
    """Marking an alert not related removes a revocation blocker: say why (told in the
    rotation's thread and kept in the audit trail)."""
    meta = NotRelatedMeta(
        alert_id=alert.id or 0,
        channel=message[0] if message else None,
        ts=message[1] if message else None,
    )
    return SlackView(
        type="modal",
        callback_id=View.ALERT_NOT_RELATED.value,
        private_metadata=meta.model_dump_json(),
        title=PlainTextObject(text="Not related"),
        submit=PlainTextObject(text="Mark not related"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=md(
                f"{alert.ref} on {code(alert.consumer)} ({escape_mrkdwn(alert.lane)}): "
                f"{escape_mrkdwn(alert.reason[:300])}. Marked not related, it stops blocking "
                "revocation."
            )),
            InputBlock(
                block_id="reason",
                label=PlainTextObject(text="Why is it not caused by the rotation?"),
                element=PlainTextInputElement(
                    action_id="value",
                    multiline=True,
                    placeholder=PlainTextObject(
                        text="e.g. the provider had an outage at the same time"),
                ),
            ),
        ],
    )


def emergency_modal(
    revoked: Rotation, factor: int, alert_id: int = 0, consumer: str | None = None
) -> SlackView:
    """After revocation rollback is impossible: confirm an urgent re-rotation instead."""
    what = (
        f"{revoked.ref} already revoked the old credential of {code(revoked.secret)}"
        f"{' on ' + when(revoked.finished_at) if revoked.finished_at else ''}: there is no "
        "previous credential to go back to. An *emergency re-rotation* starts a new rotation of "
        f"{code(revoked.secret)} marked urgent: a new credential is created beside the current "
        "one (both stay valid), owners are asked again lane by lane, and their reminders and "
        f"escalations come {factor} times sooner than usual."
    )
    if revoked.cutover:
        what = (
            f"{revoked.ref} finished a hard cutover of {code(revoked.secret)}: there is no "
            "previous credential to go back to. An *emergency re-rotation* starts an urgent "
            "hard cutover at once, without a readiness review: another value is issued (the "
            "current one stops working), written to every target at the same moment, and "
            "every owner is asked to validate, with reminders and escalations "
            f"{factor} times sooner than usual."
        )
    return SlackView(
        type="modal",
        callback_id=View.EMERGENCY.value,
        private_metadata=AlertButton(
            alert_id=alert_id, rotation_id=revoked.id, consumer=consumer
        ).model_dump_json(),
        title=PlainTextObject(text="Emergency re-rotation"),
        submit=PlainTextObject(text="Start urgent rotation"),
        close=PlainTextObject(text="Cancel"),
        blocks=[
            SectionBlock(text=md(f"*What will happen:* {what}"[:SECTION_LIMIT])),
            _reason_input(),
        ],
    )
