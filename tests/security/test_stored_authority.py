"""Button authority comes from the database, never from the button (issue 14, item 3).

A signed click or modal submission carries whatever value its sender puts in it. These tests
send `rotabot serve` (a real process, signed HTTP only) values Slack never rendered: a
rollback "from alert A-0" by the owner of a dev consumer, rollback modals whose
private_metadata names no alert, someone else's alert or an alert that is no longer open, an
emergency re-rotation "from alert A-0", and a step for a consumer the rotation does not have
(or a step no button carries). Each is refused with words a person can act on and leaves the
rotation and the store exactly as they were; the rollback refusals are audited. A real alert's
Roll back by its consumer's owner still opens the confirmation and rolls back, and an admin's
Emergency re-rotation still starts one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness.messages import asks, is_rotation_message
from harness.serve import catalog_head
from security_harness import BotHandle, served_bot

from adapters.file_store import FileStore
from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.state import Ephemeral, Message
from handlers.ids import Action, View

PATH = "ai/model-api-key"
CATALOG = catalog_head(observe="1h") + """\
stores:
  local: {kind: file, path: ./secrets}
secrets:
  model-api-key:
    issuer: {kind: local}
    store: {name: local, path: ai/model-api-key}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: hot, rollback: pin previous}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot, rollback: pin previous}
"""
BOB = "U0BOB"  # owns retriever, the dev consumer; no other role


@dataclass
class World:
    bot: BotHandle
    store: FileStore

    # --- what the bot holds ---------------------------------------------------------------

    def phase(self) -> str:
        with self.bot.db() as conn:
            return str(conn.execute("select phase from rotations where id = 1").fetchone()[0])

    def store_state(self) -> tuple[Any, ...]:
        state = self.store.describe(PATH)
        return (state.current, state.pending, state.previous,
                tuple((v.version, v.destroyed) for v in state.versions))

    def state_tables(self) -> list[list[dict[str, Any]]]:
        """Every state table but the audit trail (which a refusal appends to) and the
        rotation's revision (which the refusal's audit row bumps)."""
        out = []
        with self.bot.db() as conn:
            for table in ("rotations", "consumer_steps", "alerts", "credential_versions"):
                cursor = conn.execute(f"select * from {table} order by id")
                names = [d[0] for d in cursor.description]
                out.append([{k: v for k, v in zip(names, row, strict=True) if k != "revision"}
                            for row in cursor.fetchall()])
        return out

    def audit(self, actor: str, action: str) -> list[tuple[str | None, str | None, str]]:
        with self.bot.db() as conn:
            return conn.execute("select consumer, reason, detail from audit_events where actor = ?"
                                " and action = ? order by id", (actor, action)).fetchall()

    # --- Slack ----------------------------------------------------------------------------

    def parent(self) -> Message:
        return self.bot.state.wait_for(lambda s: next(
            (m for m in s.channel_messages("C0ROTATE") if is_rotation_message(m, "R-1")),
            None), 15)

    def incident(self, consumer: str) -> Message:
        return self.bot.state.wait_for(lambda s: next(
            (m for m in s.channel_messages("C0INCIDENT") if m.text.startswith(f"{consumer} (")),
            None), 15)

    def ephemeral(self, user: str, needle: str) -> Ephemeral:
        return self.bot.state.wait_for(lambda s: next(
            (e for e in s.ephemerals_for(user) if needle in e.text), None), 15)

    def direct_message(self, user: str, needle: str) -> Message:
        def find(state: Any) -> Message | None:
            for channel in list(state.channels.values()):
                if channel.is_im and channel.im_user == user:
                    for m in state.channel_messages(channel.id):
                        if needle in m.text:
                            return m
            return None
        return self.bot.state.wait_for(find, 15)

    def forge_click(self, user: str, message: Message, action: Action,
                    value: dict[str, Any]) -> None:
        """A validly signed block_actions whose button the bot never rendered."""
        element = {"type": "button", "action_id": action.value, "value": json.dumps(value),
                   "text": {"type": "plain_text", "text": "forged"}}
        reply = self.bot.slack._send_message_action(
            user, message.channel, message, {"type": "actions", "block_id": "forged"}, element)
        assert reply.status == 200, reply.body

    def open_rollback(self, user: str, consumer: str, value: dict[str, Any] | None = None
                      ) -> Any:
        """`user` presses Roll back on the incident message of `consumer`'s alert (its value
        replaced by `value` when given) and gets the confirmation modal."""
        incident = self.incident(consumer)
        rendered = next(e for b in incident.blocks if b.get("type") == "actions"
                        for e in b["elements"] if e["action_id"] == Action.ALERT_ROLLBACK.value)
        if value is None:
            self.bot.slack.click(user, channel="C0INCIDENT", message_ts=incident.ts,
                                 action_id=Action.ALERT_ROLLBACK.value)
        else:
            assert json.loads(rendered["value"]) != value
            self.forge_click(user, incident, Action.ALERT_ROLLBACK, value)
        return self.bot.state.wait_for(lambda s: next(
            (v for v in s.open_views(user) if v.view.get("callback_id") == View.ROLLBACK.value),
            None), 15)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[World]:
    """R-1 of model-api-key distributing: version 1 current, 2 pending."""
    store = FileStore(tmp_path / "secrets")
    store.put(PATH, SecretMaterial({"api_key": "initial"}))
    with served_bot(tmp_path, CATALOG) as bot:
        w = World(bot, store)
        bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
        w.ephemeral("U0ADMIN", "Started R-1")
        bot.wait_for(lambda: w.phase() == "distributing")
        yield w


@pytest.fixture
def world(started: World) -> World:
    """R-1 as `started`, and one open alert on each consumer: A-1 on retriever (Bob's), A-2
    on inference-api (Alice's)."""
    w, bot = started, started.bot
    for consumer in ("retriever", "inference-api"):
        body = json.dumps({"consumer": consumer, "secret": "model-api-key",
                           "status_code": 401}).encode()
        assert bot.post_alert(body).status_code == 200
        w.incident(consumer)

    def recorded() -> bool:
        # Posting follows the answer: wait until each alert's row holds its message too.
        with bot.db() as conn:
            return all(ts for (ts,) in conn.execute("select message_ts from alerts"))

    bot.wait_for(recorded)
    with bot.db() as conn:
        assert conn.execute("select id, consumer, rotation_id, status from alerts order by id"
                            ).fetchall() == [(1, "retriever", 1, "open"),
                                             (2, "inference-api", 1, "open")]
    assert w.store_state()[:2] == ("1", "2")
    return w


def test_a_forged_alert_0_rollback_click_by_a_dev_owner_is_refused_and_audited(
    world: World,
) -> None:
    """Bob owns only the dev consumer. A click naming R-1, alert 0 and his consumer used to
    open the rollback confirmation (and its submission rolled R-1 back and destroyed the new
    credential): no stored alert stands behind it now."""
    w = world
    before_state, before_store = w.state_tables(), w.store_state()
    w.forge_click(BOB, w.parent(), Action.ALERT_ROLLBACK,
                  {"alert_id": 0, "rotation_id": 1, "consumer": "retriever"})
    told = w.ephemeral(BOB, "A-0")
    assert "no alert A-0" in told.text and "/rotate rollback R-1" in told.text, told.text
    assert "something went wrong" not in told.text
    assert w.bot.state.open_views(BOB) == []  # the listener is done: it told Bob last
    refused = w.audit(BOB, "refused")
    assert len(refused) == 1, refused
    assert (refused[0][1] or "").startswith("only ") and "no alert A-0" in refused[0][1]
    assert json.loads(refused[0][2]) == {"attempted": "rollback"}
    assert (w.state_tables(), w.store_state()) == (before_state, before_store)
    assert w.phase() == "distributing"
    assert w.bot.state.violations == []


@pytest.mark.parametrize("forgery", ["no alert", "someone else's alert", "alert not open"])
def test_a_forged_rollback_submission_is_refused_and_changes_nothing(
    world: World, forgery: str
) -> None:
    """Bob legitimately opens the confirmation of his own alert A-1; what he submits names
    alert 0, or Alice's alert A-2 with his consumer, or A-1 after it stopped being open. The
    submission re-checks the stored alert before anything happens."""
    w = world
    modal = w.open_rollback(BOB, "retriever")
    meta = json.loads(modal.view["private_metadata"])
    assert meta == {"alert_id": 1, "rotation_id": 1, "consumer": "retriever"}
    if forgery == "no alert":
        meta, needle = {**meta, "alert_id": 0}, "no alert A-0"
    elif forgery == "someone else's alert":
        meta = {**meta, "alert_id": 2}
        needle = "only admins of model-api-key or the affected consumer's owner may roll back"
    else:
        # An admin marks A-1 not related (with its reason, in the modal).
        incident = w.incident("retriever")
        w.bot.slack.click("U0ADMIN", channel="C0INCIDENT", message_ts=incident.ts,
                          action_id=Action.ALERT_NOT_RELATED.value)
        reason = w.bot.wait_for(lambda: next(iter(w.bot.state.open_views("U0ADMIN")), None))
        w.bot.slack.submit_view("U0ADMIN", reason.id, {"reason": "an outage at the provider"})
        w.bot.wait_for(lambda: w.audit("U0ADMIN", "alert.not-related"))
        needle = "A-1 is not-related"
    # What Slack would send if the metadata were whatever the sender likes: signed all the same.
    modal.view["private_metadata"] = json.dumps(meta)
    before_state, before_store = w.state_tables(), w.store_state()
    reply = w.bot.slack.submit_view(BOB, modal.id, {"new_credential": "revoke",
                                                    "reason": "forged"})
    assert reply.status == 200
    told = w.direct_message(BOB, needle)
    assert "something went wrong" not in told.text
    refused = w.bot.wait_for(lambda: w.audit(BOB, "refused"))
    assert len(refused) == 1 and (refused[0][1] or "").startswith("only "), refused
    assert (w.state_tables(), w.store_state()) == (before_state, before_store)
    assert w.phase() == "distributing"
    assert w.store.describe(PATH).pending == "2"  # the new credential was not destroyed
    assert w.audit(BOB, "rollback.detail") == []
    assert w.bot.state.violations == []


@pytest.mark.parametrize("value", ["as rendered", "naming another consumer"])
def test_a_real_alerts_roll_back_by_its_consumers_owner_still_works(
    world: World, value: str
) -> None:
    """Bob's own alert A-1: its Roll back opens the confirmation and, submitted, rolls R-1
    back and destroys the new credential. The consumer is the stored alert's: a value that
    names Alice's consumer instead changes nothing about who may act or what is recorded."""
    w = world
    forged = None
    if value == "naming another consumer":
        forged = {"alert_id": 1, "rotation_id": 1, "consumer": "inference-api"}
    modal = w.open_rollback(BOB, "retriever", forged)
    assert json.loads(modal.view["private_metadata"]) == {
        "alert_id": 1, "rotation_id": 1, "consumer": "retriever"}
    assert "The new credential (version 2) is never made current" in json.dumps(
        modal.view["blocks"])
    assert w.phase() == "distributing"  # nothing happens before the submission
    reply = w.bot.slack.submit_view(BOB, modal.id, {"new_credential": "revoke",
                                                    "reason": "retriever 401s"})
    assert reply.status == 200
    w.bot.wait_for(lambda: w.phase() == "rolled-back")
    state = w.store.describe(PATH)
    assert (state.current, state.pending) == ("1", None)
    assert [(v.version, v.destroyed) for v in state.versions] == [("1", False), ("2", True)]
    assert [json.loads(d) for _, _, d in w.audit(BOB, "rollback.detail")] == [
        {"new_credential": "revoked"}]
    assert w.audit(BOB, "refused") == []
    w.bot.state.wait_for(lambda s: next(
        (m for m in s.thread("C0ROTATE", w.parent().ts) if "rolled back R-1" in m.text), None),
        15)
    assert w.bot.state.violations == []


@pytest.mark.parametrize(("action", "consumer", "step", "needle"), [
    (Action.STEP, "nobody", "distributed", "R-1 has no consumer `nobody`"),
    (Action.REPORT_PROBLEM, "nobody", "failed", "R-1 has no consumer `nobody`"),
    # A step no Step button carries: it marked the consumer failed without any alert.
    (Action.STEP, "retriever", "failed", "this button is out of date"),
])
def test_a_step_button_the_bot_never_rendered_is_refused_cleanly(
    world: World, action: Action, consumer: str, step: str, needle: str
) -> None:
    """Bob's own prompt, its value naming a consumer R-1 does not have (or a step no button
    carries): a refusal that says so and where to get a fresh button (not "something went
    wrong"), nothing changed, no modal."""
    w = world
    prompt = w.bot.state.wait_for(lambda s: next(
        (m for m in s.thread("C0ROTATE", w.parent().ts) if asks(m, "retriever", "Distributed")),
        None), 15)
    before_state, before_store = w.state_tables(), w.store_state()
    w.forge_click(BOB, prompt, action, {"rotation_id": 1, "consumer": consumer, "step": step})
    told = w.ephemeral(BOB, needle)
    assert "/rotate status" in told.text and "something went wrong" not in told.text, told.text
    assert (w.state_tables(), w.store_state()) == (before_state, before_store)
    assert w.bot.state.open_views(BOB) == []
    assert w.bot.state.violations == []


def test_the_emergency_re_rotation_after_revocation_is_authorized_from_the_stored_alert(
    started: World,
) -> None:
    """After R-1 revoked the old credential, a new failure's message offers an emergency
    re-rotation of R-1 (the alert has no rotation of its own: the stored facts tie it to R-1).
    A forged click naming alert 0 is refused even for an admin, the consumer's owner is
    refused (admins only), and the admin's click on the real button starts R-2, urgent."""
    w, bot = started, started.bot
    for owner, consumer in ((BOB, "retriever"), ("U0ALICE", "inference-api")):
        for label in ("Distributed", "Validated"):
            prompt = bot.state.wait_for(lambda s, c=consumer, lb=label: next(
                (m for m in s.thread("C0ROTATE", w.parent().ts) if asks(m, c, lb)), None), 15)
            bot.slack.click(owner, channel="C0ROTATE", message_ts=prompt.ts,
                            action_id=Action.STEP.value)
    bot.state.wait_for(lambda s: Action.SWITCH.value in json.dumps(w.parent().blocks), 15)
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=w.parent().ts,
                    action_id=Action.SWITCH.value)
    bot.wait_for(lambda: w.phase() == "observing")
    bot.state.wait_for(lambda s: Action.REVOKE.value in json.dumps(w.parent().blocks), 15)
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=w.parent().ts,
                    action_id=Action.REVOKE.value)  # the gate is closed: break glass
    override = bot.state.wait_for(lambda s: next(
        (v for v in s.open_views("U0ADMIN")
         if v.view.get("callback_id") == View.REVOKE_OVERRIDE.value), None), 15)
    bot.slack.submit_view("U0ADMIN", override.id, {"reason": "the provider leaked the key"})
    bot.wait_for(lambda: w.phase() == "revoked")

    body = json.dumps({"consumer": "retriever", "status_code": 401}).encode()
    assert bot.post_alert(body).status_code == 200
    incident = w.incident("retriever")
    assert "after R-1 revoked the old model-api-key credential" in incident.text
    offered = [e for b in incident.blocks if b.get("type") == "actions" for e in b["elements"]
               if e["action_id"] == Action.EMERGENCY_ROTATE.value]
    assert [json.loads(e["value"]) for e in offered] == [
        {"alert_id": 1, "rotation_id": 1, "consumer": "retriever"}]

    w.forge_click("U0ADMIN", incident, Action.EMERGENCY_ROTATE,
                  {"alert_id": 0, "rotation_id": 1, "consumer": "retriever"})
    w.ephemeral("U0ADMIN", "no alert A-0")
    bot.slack.click(BOB, channel="C0INCIDENT", message_ts=incident.ts,
                    action_id=Action.EMERGENCY_ROTATE.value)
    w.ephemeral(BOB, "only admins of model-api-key may start an emergency re-rotation")
    refused = [(actor, reason) for actor in ("U0ADMIN", BOB)
               for _, reason, d in w.audit(actor, "refused")
               if json.loads(d)["attempted"] == "emergency.re-rotation"]
    assert [(actor, (reason or "")[:28]) for actor, reason in refused] == [
        ("U0ADMIN", "only an open alert about R-1"), (BOB, "only admins of model-api-key")]
    assert bot.state.open_views("U0ADMIN") == [] and bot.state.open_views(BOB) == []
    with bot.db() as conn:
        assert conn.execute("select count(*) from rotations").fetchone() == (1,)

    bot.slack.click("U0ADMIN", channel="C0INCIDENT", message_ts=incident.ts,
                    action_id=Action.EMERGENCY_ROTATE.value)
    modal = bot.state.wait_for(lambda s: next(
        (v for v in s.open_views("U0ADMIN") if v.view.get("callback_id") == View.EMERGENCY.value),
        None), 15)
    bot.slack.submit_view("U0ADMIN", modal.id, {"reason": "retriever still on the old key"})
    w.direct_message("U0ADMIN", "Started R-2, an urgent re-rotation")
    with bot.db() as conn:
        assert conn.execute("select id, urgent from rotations order by id").fetchall() == [
            (1, 0), (2, 1)]
    assert bot.state.violations == []
