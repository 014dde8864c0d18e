"""Every Slack message and view rotabot shows, composed from slack_sdk.models, one module per
surface:

- ``common``: ``Rendered``, Slack's limits, ``mention`` and ``escape_mrkdwn`` (both from
  ``bot.domain.mentions``: the one mention syntax and the one mrkdwn escaper), ``code`` and
  ``told`` (escaped names and domain words), ``with_mentions``, ``when``, section and button
  helpers, ``text_message``, ``error_message``, phase and step words;
- ``rotation``: the rotation message, its buttons and evidence, and the note after a step;
- ``replies``: answers to `/rotate list`, `history`, `map`, `help` and the dry run;
- ``prompts``: an owner's turn prompt; ``receipts``: the thread note after each change and
  a prompt that no longer applies; ``alerts``: the incident message;
- ``modals``: start, report a problem, break-glass revoke, rollback, emergency re-rotation;
- ``home``: the App Home tab; ``schedule``: readiness reviews and due reminders.

Each builder returns ``(text, blocks)``: ``text`` is the plain fallback Slack shows in
notifications and to screen readers. Listeners use ``blocks.X``; the composition root hands
this module to the Slack notifier as its renderer (``rotation_message``, ``turn_prompt``,
``text_message``, ``with_mentions``).
"""

from handlers.blocks.alerts import alert_message
from handlers.blocks.common import (
    MESSAGE_BLOCK_LIMIT,
    PHASE_WORDS,
    SECTION_LIMIT,
    STEP_ICON,
    STEP_LABEL,
    VIEW_BLOCK_LIMIT,
    Rendered,
    code,
    error_message,
    escape_mrkdwn,
    frozen_switch_message,
    mention,
    mentions,
    phase_words,
    step_words,
    text_message,
    told,
    when,
    with_mentions,
)
from handlers.blocks.home import home_view
from handlers.blocks.modals import (
    approve_break_glass_modal,
    emergency_modal,
    not_related_modal,
    override_modal,
    owner_rollback_lines,
    report_problem_modal,
    rollback_modal,
    start_modal,
)
from handlers.blocks.prompts import turn_prompt
from handlers.blocks.receipts import prompt_retired, receipt_message
from handlers.blocks.replies import (
    help_message,
    history_message,
    map_message,
    plan_message,
    secrets_message,
    status_list,
)
from handlers.blocks.rotation import (
    COMPACT_AFTER,
    HEALTH_LINES,
    consumer_line,
    evidence_blocks,
    evidence_step,
    rotation_actions,
    rotation_message,
    step_done,
)
from handlers.blocks.schedule import (
    ask_admins_message,
    due_message,
    review_message,
    scheduled_message,
)

__all__ = [
    "COMPACT_AFTER",
    "HEALTH_LINES",
    "MESSAGE_BLOCK_LIMIT",
    "PHASE_WORDS",
    "SECTION_LIMIT",
    "STEP_ICON",
    "STEP_LABEL",
    "VIEW_BLOCK_LIMIT",
    "Rendered",
    "alert_message",
    "approve_break_glass_modal",
    "ask_admins_message",
    "code",
    "consumer_line",
    "due_message",
    "emergency_modal",
    "error_message",
    "escape_mrkdwn",
    "evidence_blocks",
    "evidence_step",
    "frozen_switch_message",
    "help_message",
    "history_message",
    "home_view",
    "map_message",
    "mention",
    "mentions",
    "not_related_modal",
    "override_modal",
    "owner_rollback_lines",
    "phase_words",
    "plan_message",
    "prompt_retired",
    "receipt_message",
    "report_problem_modal",
    "review_message",
    "rollback_modal",
    "rotation_actions",
    "rotation_message",
    "scheduled_message",
    "secrets_message",
    "start_modal",
    "status_list",
    "step_done",
    "step_words",
    "text_message",
    "told",
    "turn_prompt",
    "when",
    "with_mentions",
]
