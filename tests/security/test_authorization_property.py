"""Authorization as a property: random users press random buttons of random rotations.

A hypothesis state machine drives the real app (in-process, signed Slack requests) with clicks
on buttons the bot really rendered, forged button values pointing at other rotations and
alerts, modal submissions and `/rotate` commands. Before and after each one it snapshots the
state tables and reads the new audit rows, then checks them against the rules:

* steps (Distributed, Validated, Sign off): the consumer's owner or a member of its group;
* switch, revoke (incl. break-glass), cancel, resume, start: admins of the secret (users or
  members of an admin group);
* rollback: admins (the rotation's Roll back, which opens the confirmation for them only);
  from an alert, the stored alert decides, never the button or the modal's metadata: it must
  exist, be unresolved and offer its button on that rotation (its own rotation, or the one
  whose revocation it followed), and then admins or the owner of *its* consumer may roll back
  (admins only once the rotation is revoked, and for an emergency re-rotation);
* "Not related" on an alert: admins or the consumer's owner (it opens the reason modal);
  "Acknowledge" and "Check the store again" (which only notices what the timer would
  notice): anyone;
* a hard cutover's readiness review (`/rotate start` of a secret whose old value dies at
  mint): "Confirm ready" for an owner, by that owner or a member of its group; "Cancel" by
  admins. The last confirmation starts the rotation, in the name of the admin who opened the
  review.

Unauthorized: no state change, no audit row but a `refused` one naming the actor.
Authorized: no authorization refusal, every audit row names the actor (or is the bot's own
bookkeeping), and any state change comes with an audit row.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from harness.serve import USERS, catalog_head
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from security_harness import GROUPS, BotHandle, inprocess_bot

from adapters.file_store import FileStore
from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action, View

ADMINS = {"model-api-key": ["U0ADMIN", "S0SECOPS"], "cache-password": ["U0ADMIN"],
          "crm-token": ["U0ADMIN", "S0SECOPS"]}
OWNERS = {
    "model-api-key": {"retriever": "U0BOB", "nightly-ingest": "S0DATA", "inference-api": "U0ALICE"},
    "cache-password": {"cache-dev": "U0ALICE", "cache-api": "S0DATA"},
    # One owner (a group), so that its member's confirmation starts the rotation.
    "crm-token": {"crm-sync-dev": "S0DATA", "crm-sync": "S0DATA"},
}
CUTOVER = "crm-token"
CATALOG = catalog_head(observe="1h", admins=("U0ADMIN", "S0SECOPS")) + """\
stores:
  local: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: local, path: ai/model-api-key}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: hot, rollback: pin previous}
      nightly-ingest: {owner: S0DATA, lane: staging, reload: restart, rollback: restart pinned}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot, rollback: pin previous}
  cache-password:
    admins: [U0ADMIN]
    issuer: {kind: local}
    store: {name: local, path: infra/cache}
    consumers:
      cache-dev: {owner: U0ALICE, lane: dev, reload: restart, rollback: undo deploy}
      cache-api: {owner: S0DATA, lane: prod, reload: restart, rollback: undo deploy}
  crm-token:
    issuer: {kind: local, dual_valid: false, fields: [token]}
    store: {name: local, path: crm/token}
    consumers:
      crm-sync-dev: {owner: S0DATA, lane: dev, reload: hot, rollback: restart pinned}
      crm-sync: {owner: S0DATA, lane: prod, reload: restart, rollback: restart pinned}
"""
STEP_ACTIONS = {Action.STEP.value, Action.REPORT_PROBLEM.value}
ROTATION_ACTIONS = {Action.SWITCH.value, Action.REVOKE.value, Action.RESUME.value,
                    Action.CHECK_STORE.value, Action.ROLLBACK.value}
ALERT_ACTIONS = {Action.ALERT_ROLLBACK.value, Action.ALERT_ACK.value,
                 Action.ALERT_NOT_RELATED.value, Action.EMERGENCY_ROTATE.value}
REVIEW_ACTIONS = {Action.CONFIRM_READY.value, Action.CANCEL_REVIEW.value}
# A review that took its rotation or was called off takes no more confirmations.
CLOSED_REVIEW = ("started", "cancelled")
# An alert after a revocation offers an emergency re-rotation of it for this long
# (bot.domain.alert_context.RECENT_ROTATION, restated: the model is not the code).
RECENT_ROTATION = timedelta(days=7)
TALLY: Counter[str] = Counter()  # what the runs exercised, checked by the last test


def owns(user: str, owner: str | None) -> bool:
    return owner is not None and (user == owner or user in GROUPS.get(owner, []))


def is_admin(user: str, secret: str | None) -> bool:
    return secret in ADMINS and any(owns(user, a) for a in ADMINS[secret])


@dataclass
class Expect:
    allowed: bool
    may_change: bool
    target_exists: bool
    # Who else may be named by the audit rows of an authorized change: the admin who opened
    # a hard cutover's review starts the rotation that its last confirmation releases.
    on_behalf_of: str | None = None


class AuthorizationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="authz-"))
        self._ctx = inprocess_bot(self.tmp, CATALOG)
        self.bot: BotHandle = self._ctx.__enter__()
        self.store = FileStore(self.tmp / "secrets")
        self.versions = 0

    def teardown(self) -> None:
        self._ctx.__exit__(None, None, None)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- reading the bot's state -----------------------------------------------------------

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        b = self.bot
        return {
            "rotations": b.rows("rotations", "id, secret, phase, failed_from, old_version, "
                                "new_version, switched_at, finished_at"),
            "steps": b.rows("consumer_steps", "id, rotation_id, name, state"),
            "versions": b.rows("credential_versions", "id, rotation_id, version, label"),
            "alerts": b.rows("alerts", "id, status, resolved_by"),
            "schedules": b.rows("scheduled_rotations", "id, secret, status, rotation_id"),
            "confirmations": b.rows("readiness_confirmations", "id, schedule_id, owner"),
        }

    def last_audit(self) -> int:
        rows = self.bot.rows("audit_events", "id")
        return rows[-1][0] if rows else 0

    def audit_since(self, after: int) -> list[tuple[str, str, str | None]]:
        with self.bot.db() as conn:
            return conn.execute("select actor, action, reason from audit_events where id > ?"
                                " order by id", (after,)).fetchall()

    def rotation(self, rid: Any) -> tuple[str, dict[str, str]] | None:
        with self.bot.db() as conn:
            row = conn.execute("select secret from rotations where id = ?", (rid,)).fetchone()
            if row is None:
                return None
            owners = dict(conn.execute("select name, owner from consumer_steps"
                                       " where rotation_id = ?", (rid,)).fetchall())
        return row[0], owners

    def alert(self, alert_id: Any) -> tuple[str, str] | None:
        with self.bot.db() as conn:
            row = conn.execute("select secret, consumer from alerts where id = ?",
                               (alert_id,)).fetchone()
        return (row[0], row[1]) if row else None

    def offered_on(self, alert_id: Any) -> int | None:
        """The rotation whose rollback (or emergency re-rotation) a stored, unresolved alert
        offers: its own, or, for an alert raised with no rotation running, the secret's last
        rotation when that one revoked the old credential shortly before the failure began."""
        with self.bot.db() as conn:
            row = conn.execute("select secret, rotation_id, status, first_seen from alerts"
                               " where id = ?", (alert_id,)).fetchone()
            if row is None or row[2] not in ("open", "acknowledged"):
                return None
            if row[1] is not None:
                return int(row[1])
            last = conn.execute("select id, phase, finished_at from rotations where secret = ?"
                                " order by id desc limit 1", (row[0],)).fetchone()
        if last is None or last[1] != "revoked" or last[2] is None:
            return None
        since = datetime.fromisoformat(row[3]) - datetime.fromisoformat(last[2])
        return int(last[0]) if timedelta(0) <= since <= RECENT_ROTATION else None

    def may_act_on_alert(self, user: str, alert_id: Any, rotation_id: Any,
                         *, emergency: bool) -> bool:
        """Roll back (or re-rotate) `rotation_id` on the strength of alert `alert_id`."""
        target = self.rotation(rotation_id)
        found = self.alert(alert_id)
        if target is None or found is None or self.offered_on(alert_id) != rotation_id:
            return False
        secret, owners = target
        with self.bot.db() as conn:
            phase = conn.execute("select phase from rotations where id = ?",
                                 (rotation_id,)).fetchone()[0]
        if emergency or phase == "revoked":
            return is_admin(user, secret)
        consumer = found[1]
        return is_admin(user, secret) or (consumer in owners and owns(user, owners[consumer]))

    def review(self, schedule_id: Any) -> tuple[str, str, str] | None:
        """(secret, status, created_by) of a scheduled rotation or readiness review."""
        with self.bot.db() as conn:
            row = conn.execute("select secret, status, created_by from scheduled_rotations"
                               " where id = ?", (schedule_id,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def confirmed(self, schedule_id: Any) -> set[str]:
        with self.bot.db() as conn:
            return {r[0] for r in conn.execute("select owner from readiness_confirmations"
                                               " where schedule_id = ?", (schedule_id,))}

    def buttons(self) -> list[tuple[Message, dict[str, Any], dict[str, Any]]]:
        out = []
        for channel in ("C0ROTATE", "C0INCIDENT"):
            for message in self.bot.state.channel_messages(channel):
                for block in message.blocks:
                    # Buttons in actions blocks, and a section's accessory (Confirm ready).
                    elements = (block.get("elements", []) if block.get("type") == "actions"
                                else [block["accessory"]] if "accessory" in block else [])
                    for element in elements:
                        if element.get("type") == "button" and "value" in element:
                            out.append((message, block, element))
        return out

    # --- the rules -------------------------------------------------------------------------

    def expect_click(self, user: str, action: str, value: dict[str, Any]) -> Expect:
        if action in REVIEW_ACTIONS:
            return self.expect_review_click(user, action, value)
        if action in STEP_ACTIONS:
            target = self.rotation(value.get("rotation_id"))
            if target is None or value.get("consumer") not in target[1]:
                return Expect(False, False, False)
            secret, owners = target
            owner_ok = owns(user, owners[value["consumer"]])
            if action == Action.STEP.value:
                return Expect(owner_ok, owner_ok, True)
            allowed = owner_ok or is_admin(user, secret)  # opens the modal, changes nothing
            return Expect(allowed, False, True)
        if action in ROTATION_ACTIONS:
            target = self.rotation(value.get("rotation_id"))
            if target is None:
                return Expect(False, False, False)
            if action == Action.CHECK_STORE.value:
                return Expect(True, True, True)
            if action == Action.ROLLBACK.value:
                # Opens the confirmation, for admins only; the submission checks again.
                return Expect(is_admin(user, target[0]), False, True)
            admin = is_admin(user, target[0])
            return Expect(admin, admin, True)
        alert = self.alert(value.get("alert_id"))
        if action == Action.ALERT_ACK.value:
            return Expect(alert is not None, alert is not None, alert is not None)
        if action == Action.ALERT_NOT_RELATED.value:
            if alert is None:
                return Expect(False, False, False)
            secret, consumer = alert
            allowed = is_admin(user, secret) or owns(user, OWNERS[secret].get(consumer))
            # Opens the reason modal; the submission checks again and changes the alert.
            return Expect(allowed, False, True)
        # ALERT_ROLLBACK, EMERGENCY_ROTATE: the stored alert decides (the value's consumer
        # plays no part); either only opens a modal. A refusal is audited on the rotation.
        if self.rotation(value.get("rotation_id")) is None:
            return Expect(False, False, False)
        allowed = self.may_act_on_alert(user, value.get("alert_id"), value.get("rotation_id"),
                                        emergency=action == Action.EMERGENCY_ROTATE.value)
        return Expect(allowed, False, True)

    def expect_review_click(self, user: str, action: str, value: dict[str, Any]) -> Expect:
        review = self.review(value.get("schedule_id"))
        if review is None:
            return Expect(False, False, False)
        secret, status, created_by = review
        if action == Action.CANCEL_REVIEW.value:
            admin = is_admin(user, secret)
            return Expect(admin, admin, True)
        owners = OWNERS[secret]
        owner = value.get("owner")
        if owner not in owners.values():
            return Expect(False, False, False)  # names no owner of the secret: nothing to do
        allowed = owns(user, owner)
        may_change = allowed and status not in CLOSED_REVIEW
        completes = may_change and self.confirmed(value.get("schedule_id")) | {owner} == set(
            owners.values())
        return Expect(allowed, may_change, True, created_by if completes else None)

    def check(self, what: str, user: str, expect: Expect, act: Any) -> None:
        before, mark = self.snapshot(), self.last_audit()
        reply = act()
        assert reply is None or reply.status == 200, (what, reply.status, reply.body)
        after, rows = self.snapshot(), self.audit_since(mark)
        changed = after != before
        refusals = ("refused", "click.refused")
        authz_refusals = [r for r in rows if r[1] in refusals
                          and (r[2] or "").startswith(("only ", "this step is"))]
        # Rows by "rotabot" are its own bookkeeping (e.g. message.posted), not a decision.
        acts = [r for r in rows if r[1] not in refusals and r[0] != "rotabot"]
        context = f"{what} by {user}: expected {expect}, audit {rows}"
        if not expect.may_change:
            assert not changed, f"state changed: {context}\n{before}\n{after}"
            assert acts == [], context
        if expect.allowed:
            assert authz_refusals == [], context
            assert all(r[0] in (user, expect.on_behalf_of) for r in acts), context
            if changed:
                assert acts, f"a state change without an audit row: {context}"
                TALLY["authorized change"] += 1
        else:
            assert all(r[0] == user for r in rows if r[0] != "rotabot"), context
            if expect.target_exists:
                assert authz_refusals, f"unauthorized attempt not audited: {context}"
            TALLY["refused"] += 1
        assert self.bot.state.violations == [], self.bot.state.violations

    @initialize()
    def start_rotations(self) -> None:
        self.new_version()
        # The hard cutover opens its readiness review; the others start at once.
        for secret in ("model-api-key", "cache-password", CUTOVER):
            self.bot.slack.command("U0ADMIN", "C0ROTATE", f"start {secret}")
        self.post_alert(consumer="retriever")
        self.post_alert(consumer="cache-api")

    @rule()
    def new_version(self) -> None:
        # The manual issuer: a person writes the new credential; nothing notices until a
        # "Check the store again" click (timers do not run in-process).
        self.versions += 1
        self.store.put("ai/model-api-key", SecretMaterial({"api_key": f"v{self.versions}"}))

    @rule(consumer=st.sampled_from(["retriever", "inference-api", "cache-dev", "cache-api"]))
    def post_alert(self, consumer: str) -> None:
        body = json.dumps({"consumer": consumer, "status_code": 401}).encode()
        response = self.bot.post_alert(body)
        assert response.status_code == 200, response.text

    # Buttons are picked by indexes drawn up front (modulo what is rendered), so the draws
    # do not depend on the bot's state and hypothesis can replay and shrink a run. The kind
    # of button first, then one of that kind: a kind rendered once (Cancel on the review)
    # is pressed as often as one rendered on every alert, and none goes unpressed in a run.
    @rule(user=st.sampled_from(sorted(USERS)), kind=st.integers(0, 10_000),
          pick=st.integers(0, 10_000))
    def click_a_rendered_button(self, user: str, kind: int, pick: int) -> None:
        rendered = self.buttons()
        kinds = sorted({element["action_id"] for _, _, element in rendered})
        if not kinds:
            return
        chosen = kinds[kind % len(kinds)]
        buttons = [b for b in rendered if b[2]["action_id"] == chosen]
        message, _block, element = buttons[pick % len(buttons)]
        action, value = element["action_id"], json.loads(element["value"])
        TALLY[action] += 1
        self.check(f"click {action} {value}", user, self.expect_click(user, action, value),
                   lambda: self.bot.slack.click(user, channel=message.channel,
                                                message_ts=message.ts, action_id=action,
                                                value=element["value"]))

    @rule(user=st.sampled_from(sorted(USERS)), pick=st.integers(0, 10_000),
          rotation_id=st.integers(1, 6), alert_id=st.integers(1, 6),
          consumer=st.sampled_from(["retriever", "nightly-ingest", "inference-api",
                                    "cache-dev", "cache-api", "crm-sync", "nobody"]),
          schedule_id=st.integers(1, 3),
          owner=st.sampled_from(["U0BOB", "S0DATA", "U0ALICE", "U0MALLORY"]),
          which=st.tuples(*[st.booleans()] * 5))
    def click_a_forged_button(self, user: str, pick: int, rotation_id: int, alert_id: int,
                              consumer: str, schedule_id: int, owner: str,
                              which: tuple[bool, ...]) -> None:
        """A validly signed click whose value the bot never rendered (other ids, consumers,
        reviews or owners)."""
        buttons = self.buttons()
        if not buttons:
            return
        message, block, element = buttons[pick % len(buttons)]
        value = json.loads(element["value"])
        for key, forged, use in zip(("rotation_id", "alert_id", "consumer", "schedule_id",
                                     "owner"),
                                    (rotation_id, alert_id, consumer, schedule_id, owner), which,
                                    strict=True):
            if key in value and use:
                value[key] = forged
        forged_element = {**copy.deepcopy(element), "value": json.dumps(value)}
        action = element["action_id"]
        TALLY["forged"] += 1
        self.check(f"forged {action} {value}", user, self.expect_click(user, action, value),
                   lambda: self.bot.slack._send_message_action(
                       user, message.channel, message, block, forged_element))

    @rule(user=st.sampled_from(sorted(USERS)),
          verb=st.sampled_from(["switch", "revoke", "cancel", "resume", "start", "status"]),
          rotation_id=st.integers(1, 4),
          secret=st.sampled_from(["model-api-key", "cache-password", CUTOVER]))
    def command(self, user: str, verb: str, rotation_id: int, secret: str) -> None:
        if verb == "start":
            text, target_secret = f"start {secret}", secret
        else:
            text = f"{verb} R-{rotation_id}"
            found = self.rotation(rotation_id)
            target_secret = found[0] if found else None
        admin = is_admin(user, target_secret)
        exists = target_secret is not None
        expect = (Expect(True, False, exists) if verb == "status"
                  else Expect(admin, admin, exists and verb != "start"))
        TALLY[f"/rotate {verb}"] += 1
        self.check(f"/rotate {text}", user, expect,
                   lambda: self.bot.slack.command(user, "C0ROTATE", text))

    @rule(pick=st.integers(0, 10_000),
          reason=st.sampled_from(["", "short", "the provider leaked the key"]))
    def submit_a_modal(self, pick: int, reason: str) -> None:
        views = [v for u in USERS for v in self.bot.state.open_views(u)
                 if v.view.get("callback_id") in (View.ROLLBACK.value,
                                                  View.REVOKE_OVERRIDE.value,
                                                  View.REPORT_PROBLEM.value)]
        if not views:
            return
        record = views[pick % len(views)]
        user, callback = record.user, record.view["callback_id"]
        meta = json.loads(record.view.get("private_metadata") or "{}")
        target = self.rotation(meta.get("rotation_id"))
        if target is None:
            expect = Expect(False, False, False)
        elif callback == View.ROLLBACK.value:
            if meta.get("alert_id") or meta.get("consumer") is not None:
                # Opened on an alert: the stored alert decides again, as it is now.
                allowed = self.may_act_on_alert(user, meta.get("alert_id"),
                                                meta.get("rotation_id"), emergency=False)
            else:
                allowed = is_admin(user, target[0])
            expect = Expect(allowed, allowed, True)
        elif callback == View.REVOKE_OVERRIDE.value:
            admin = is_admin(user, target[0])
            # Without a reason of ten characters the modal refuses before any check.
            expect = Expect(admin or len(reason) < 10, admin, admin or len(reason) >= 10)
        else:
            allowed = owns(user, target[1].get(meta.get("consumer"))) or is_admin(
                user, target[0])
            expect = Expect(allowed, allowed, True)
        TALLY[f"submit {callback}"] += 1
        values = {"reason": reason, "what": reason or "fails with 401"}
        self.check(f"submit {callback} {meta}", user, expect,
                   lambda: self.bot.slack.submit_view(user, record.id, values))

    @invariant()
    def one_active_rotation_per_secret(self) -> None:
        with self.bot.db() as conn:
            rows = conn.execute("select secret, count(*) from rotations where phase not in"
                                " ('revoked', 'rolled-back', 'cancelled') group by secret"
                                ).fetchall()
        assert all(n <= 1 for _, n in rows), rows


TestAuthorization = AuthorizationMachine.TestCase
TestAuthorization.settings = settings(
    max_examples=25, stateful_step_count=35, deadline=None, database=None,
    # No shrinking or "explain": each replay builds a whole app (and the explain phase's line
    # tracer makes it crawl); a failure is reported with its full list of steps instead.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_zz_the_machine_exercised_both_sides() -> None:
    """Runs after TestAuthorization (file order): both outcomes were really exercised."""
    if not TALLY:
        import pytest

        pytest.skip("run together with TestAuthorization")
    assert TALLY["authorized change"] > 0 and TALLY["refused"] > 0, TALLY
    assert TALLY["forged"] > 0 and TALLY[Action.STEP.value] > 0, TALLY
    # Hypothesis runs each example with a random subset of the rules (swarm testing), so a
    # run may press one of the review's two buttons only.
    assert TALLY[Action.CONFIRM_READY.value] + TALLY[Action.CANCEL_REVIEW.value] > 0, TALLY
