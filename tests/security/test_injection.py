"""Mrkdwn injection through `rotabot serve`: catalog and user text is shown, never parsed.

A catalog whose description and rollback notes carry `<!channel>` and a disguised link, and a
break-glass reason with `<!here>`, go through the real process: `/rotate map`, a rotation
rolled back (its modal and thread note list the rollback notes), a break-glass revoke (the
reason is posted in the thread) and an alert. Afterwards every Web API call and response_url
post the stand-in recorded is searched: no `<!channel>`, `<!here>` or `<https://evil` is left
unescaped, and the escaped text is there. A non-admin's dry run shows the plan without what
the store and issuer said.
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.messages import asks, is_rotation_message
from harness.serve import catalog_head
from security_harness import BotHandle, served_bot

from adapters.file_store import FileStore
from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.model import Ephemeral
from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action, View

MARKUP = ("<!channel>", "<!here>", "<https://evil")
DESCRIPTION = "Database login <!channel> see <https://evil.example|the runbook>"
NOTE = "<!channel> <https://evil.example|Open the runbook> & restart the job"
REASON = "<!here> the old password was pasted in <https://evil.example|a public channel>"

CATALOG = catalog_head(observe="1h") + """\
stores:
  local: {{kind: file, path: {store}}}
secrets:
  model-api-key:
    description: "{description}"
    issuer: {{kind: local}}
    store: {{name: local, path: ai/model-api-key}}
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: restart, rollback: "{note}"}}
  db-password:
    description: "{description}"
    issuer: {{kind: local, fields: [password]}}
    store: {{name: local, path: infra/db}}
    consumers:
      reporting: {{owner: U0ALICE, lane: dev, reload: restart, rollback: "{note}"}}
"""


def parent(bot: BotHandle, ref: str) -> Message:
    return bot.wait_for(lambda: next(
        (m for m in bot.state.channel_messages("C0ROTATE") if is_rotation_message(m, ref)), None))


def wait_phase(bot: BotHandle, ref: str, words: str) -> Message:
    return bot.wait_for(lambda: m if words in (m := parent(bot, ref)).text else None)


def click_step(bot: BotHandle, ref: str, user: str, consumer: str, label: str) -> None:
    message = bot.wait_for(lambda: next(
        (m for m in reversed(bot.state.thread("C0ROTATE", parent(bot, ref).ts))
         if asks(m, consumer, label)), None))
    assert bot.slack.click(user, channel="C0ROTATE", message_ts=message.ts,
                           action_id=Action.STEP.value).status == 200
    bot.wait_for(lambda: (m := bot.state.find_message("C0ROTATE", message.ts)) is not None
                 and not any(b.get("type") == "actions" for b in m.blocks))


def has_button(message: Message, action: Action) -> bool:
    return any(e.get("action_id") == action.value for b in message.blocks
               for e in b.get("elements", []))


def switch(bot: BotHandle, ref: str, consumer: str, owner: str) -> Message:
    """Distribute and validate the one consumer, switch; the message once it observes."""
    click_step(bot, ref, owner, consumer, "Distributed")
    click_step(bot, ref, owner, consumer, "Validated")
    top = bot.wait_for(lambda: m if has_button(m := parent(bot, ref), Action.SWITCH) else None)
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=top.ts,
                    action_id=Action.SWITCH.value)
    return wait_phase(bot, ref, "observing")


def submit_open_view(bot: BotHandle, user: str, callback: View, values: dict[str, str]) -> None:
    view = bot.wait_for(lambda: next((v for v in bot.state.open_views(user)
                                      if v.view.get("callback_id") == callback.value), None))
    assert bot.slack.submit_view(user, view.id, values).status == 200


def reply_to(bot: BotHandle, user: str, words: str) -> Ephemeral:
    return bot.wait_for(lambda: next(
        (e for e in bot.state.ephemerals_for(user) if words in e.text), None))


def recorded(bot: BotHandle) -> str:
    """Every Web API call and response_url post, as sent."""
    return json.dumps([[c.method, c.args] for c in bot.state.calls], ensure_ascii=False)


def test_catalog_and_user_text_reach_slack_escaped(tmp_path: Path) -> None:
    store_dir = tmp_path / "secrets"
    store = FileStore(store_dir)
    store.put("ai/model-api-key", SecretMaterial({"api_key": "old-api-key-value"}))
    store.put("infra/db", SecretMaterial({"password": "old-db-password"}))
    catalog = CATALOG.format(store=store_dir, description=DESCRIPTION, note=NOTE)
    with served_bot(tmp_path, catalog) as bot:
        # The map, asked by someone who is nobody: description and rollback notes.
        bot.slack.command("U0MALLORY", "C0ROTATE", "map db-password")
        reply_to(bot, "U0MALLORY", "Dependency map")

        # A rollback after the switch: its modal and thread note list the rollback notes.
        bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
        wait_phase(bot, "R-1", "distributing")
        switch(bot, "R-1", "retriever", "U0BOB")
        bot.slack.command("U0ADMIN", "C0ROTATE", "rollback R-1")
        submit_open_view(bot, "U0ADMIN", View.ROLLBACK,
                         {"reason": REASON, "new_credential": "keep"})
        top = wait_phase(bot, "R-1", "rolled back")
        bot.wait_for(lambda: any("rolled back R-1" in m.text
                                 for m in bot.state.thread("C0ROTATE", top.ts)))

        # Break-glass: revoke past the gate, with a reason that pings.
        bot.slack.command("U0ADMIN", "C0ROTATE", "start db-password")
        wait_phase(bot, "R-2", "distributing")
        top2 = switch(bot, "R-2", "reporting", "U0ALICE")
        bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=top2.ts,
                        action_id=Action.REVOKE.value)
        submit_open_view(bot, "U0ADMIN", View.REVOKE_OVERRIDE, {"reason": REASON})
        wait_phase(bot, "R-2", "revoked")
        glass = bot.wait_for(lambda: next((m for m in bot.state.thread("C0ROTATE", top2.ts)
                                           if "break-glass" in m.text), None))

        # An alert whose text tries the same.
        body = json.dumps({"consumer": "retriever", "status_code": 401,
                           "error": NOTE, "message": REASON}).encode()
        assert bot.post_alert(body).status_code == 200
        bot.wait_for(lambda: bot.state.channel_messages("C0INCIDENT"))

        sent = recorded(bot)
        assert [m for m in MARKUP if m in sent] == []
        # The text was there, escaped: in the map, the rollback modal and note, the reason.
        assert sent.count("&lt;!channel&gt; &lt;https://evil.example|Open the runbook&gt; "
                          "&amp; restart the job") >= 3
        assert "Database login &lt;!channel&gt; see &lt;https://evil.example|the runbook&gt;" \
            in sent
        assert ("Reason: &lt;!here&gt; the old password was pasted in "
                "&lt;https://evil.example|a public channel&gt;") in glass.text
        assert bot.state.violations == []


DRY_RUN_CATALOG = catalog_head() + """\
stores:
  local: {{kind: file, path: {store}}}
issuers:
  cache: {{kind: redis-acl, url_env: CACHE_ADMIN_URL_FOR_TEST}}
secrets:
  cache-password:
    issuer: {{name: cache}}
    store: {{name: local, path: infra/cache}}
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: restart, rollback: undo deploy}}
"""


def test_a_non_admin_dry_run_shows_no_back_end_findings(tmp_path: Path) -> None:
    """The issuer cannot be built (its variable is not set): an admin's dry run says so, by
    name; anyone else gets the plan and a line saying the checks are for admins."""
    catalog = DRY_RUN_CATALOG.format(store=tmp_path / "secrets")
    with served_bot(tmp_path, catalog) as bot:
        bot.slack.command("U0ADMIN", "C0ROTATE", "start cache-password --dry-run")
        admin = reply_to(bot, "U0ADMIN", "Dry run")
        bot.slack.command("U0MALLORY", "C0ROTATE", "start cache-password --dry-run")
        other = reply_to(bot, "U0MALLORY", "Dry run")

        admin_text = json.dumps(admin.blocks)
        assert "issuer not usable" in admin_text
        assert "CACHE_ADMIN_URL_FOR_TEST is not set" in admin_text

        other_text = json.dumps(other.blocks)
        assert "`retriever`" in other_text  # the plan itself
        assert "issuer not usable" not in other_text
        assert "CACHE_ADMIN_URL_FOR_TEST" not in other_text
        assert "shown to the admins of `cache-password` only" in other_text
        assert bot.count("rotations") == 0  # a dry run changes nothing
