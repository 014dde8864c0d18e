"""Consumer evidence through `rotabot serve`: signed `POST /evidence` reports, signed Slack clicks.

Done when (issue 19): a prod consumer that never reports the new version keeps the gate closed
and the refusal names it and the missing evidence (``require_evidence``); a consumer reporting
the old version after its lane moved raises ``drift``; a consumer that goes silent raises
``silent`` once, also after a restart. Reports are sent as docs/evidence.md's curl and Python
lines send them (the signature computed by the harness from the documented scheme).
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
import uuid
from typing import Any

import httpx
import pytest
from conftest import CANARY_NEW, BotConfig
from e2e_helpers import (
    click_step,
    has_button,
    parent_message,
    prompt_for,
    wait_ephemeral,
    wait_parent,
)
from harness.serve import alert_headers, catalog_head, eventually

from bot.domain.secret_material import SecretMaterial
from handlers.ids import Action

Bot = Any  # conftest.Bot, under the name the fixture gives it

REPORT_KEY = "evidence-key-" + secrets.token_hex(16)
PATH = "ai/model-api-key"

CATALOG = catalog_head(observe="3s") + """\
stores:
  local: {{kind: file, path: {store}}}
secrets:
  model-api-key:
    issuer: {{kind: manual}}
    store: {{name: local, path: ai/model-api-key}}
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: hot}}
      nightly-ingest: {{owner: S0DATA, lane: staging, reload: restart, heartbeat: 3s}}
      inference-api: {{owner: U0ALICE, lane: prod, reload: hot, require_evidence: true}}
"""


@pytest.fixture
def bot_config(tmp_path: Any) -> BotConfig:
    return BotConfig(catalog=CATALOG.format(store=tmp_path / "secrets"),
                     env={"ROTABOT_ALERT_SECRET": REPORT_KEY})


def report(bot: Bot, payload: dict[str, Any]) -> httpx.Response:
    body = json.dumps(payload).encode()
    return httpx.post(bot.url + "/evidence", content=body, timeout=30, headers=alert_headers(
        REPORT_KEY, body, delivery=str(uuid.uuid4())))


def start(bot: Bot) -> None:
    assert bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key").status == 200
    wait_ephemeral(bot, "U0ADMIN", "Started R-1")
    bot.store.put(PATH, SecretMaterial({"api_key": CANARY_NEW}))  # the manual issuer's step
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=parent_message(bot).ts,
                    action_id=Action.CHECK_STORE.value)
    bot.state.wait_for(lambda s: "distributing" in parent_message(bot).text, 10)


def incident(bot: Bot, needle: str) -> str:
    return bot.state.wait_for(lambda s: next(
        (m.text for m in s.channel_messages("C0INCIDENT") if needle in m.text), None), 15)


def alerts(bot: Bot, failure_class: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(bot.db_path) as db:
        return db.execute("select consumer, lane, reason from alerts where failure_class = ?",
                          (failure_class,)).fetchall()


def test_evidence_moves_steps_drift_alerts_and_a_silent_prod_consumer_keeps_the_gate_closed(
    bot: Bot,
) -> None:
    start(bot)
    # dev: the consumer reports the new version with a passing check; no click at all.
    sent = report(bot, {"consumer": "retriever", "secret": "model-api-key", "version": "2",
                        "workflow": "retrieval"})
    assert sent.status_code == 200, sent.text
    assert sent.json()["steps"] == ["distributed", "validated"]
    wait_parent(bot, "retriever reported version 2 (retrieval passed)")
    # staging: the owner group's member clicks; the message says it rests on no evidence.
    click_step(bot, "U0CAROL", "nightly-ingest", "Distributed")
    click_step(bot, "U0CAROL", "nightly-ingest", "Validated")
    wait_parent(bot, "*validated* by <@U0CAROL>, no evidence")
    # nightly-ingest then reports the old version: its lane moved, so this is drift.
    drift = report(bot, {"consumer": "nightly-ingest", "version": "1"})
    assert drift.status_code == 200 and drift.json()["alert"], drift.text
    text = incident(bot, "(drift)")
    assert "nightly-ingest (staging) still runs the old credential (drift)" in text
    assert alerts(bot, "drift") == [(
        "nightly-ingest", "staging",
        "nightly-ingest (staging) reports version 1, the old credential, after its lane "
        "(staging) moved to version 2 (step: validated)")]
    # prod requires evidence and inference-api never reports: its owner's click is refused,
    # naming the consumer and what is missing, and nothing moves.
    prompt = prompt_for(bot, "inference-api", "Distributed")
    bot.slack.click("U0ALICE", channel="C0ROTATE", message_ts=prompt.ts,
                    action_id=Action.STEP.value)
    refusal = wait_ephemeral(bot, "U0ALICE", "requires evidence")
    assert ("inference-api (prod) requires evidence: no report of version 2 from inference-api "
            "yet") in refusal.text
    # The gate stays closed and names the missing evidence: in the message, in the status
    # (which shows the same evidence), and no Switch button while prod is not validated.
    missing = "inference-api (prod) requires evidence: no report of version 2 from inference-api"
    wait_parent(bot, missing)
    bot.slack.command("U0ADMIN", "C0ROTATE", "status R-1")
    status = wait_ephemeral(bot, "U0ADMIN", "R-1 model-api-key")
    assert missing in json.dumps(status.blocks)
    assert not has_button(bot, Action.SWITCH)
    with sqlite3.connect(bot.db_path) as db:
        refused = db.execute("select actor, consumer from audit_events where action = 'refused'"
                             " and consumer = 'inference-api'").fetchall()
        assert refused == [("U0ALICE", "inference-api")]
        steps = dict(db.execute("select name, state from consumer_steps").fetchall())
        assert steps == {"retriever": "validated", "nightly-ingest": "validated",
                         "inference-api": "waiting"}
        kept = db.execute("select consumer, version, ok from evidence_reports "
                          "order by id").fetchall()
    assert kept == [("retriever", "2", 1), ("nightly-ingest", "1", 1)]
    assert bot.state.violations == []


def timer_runs_after(bot: Bot, after: float) -> float | None:
    """The last timer run this process reports (`/metrics`), once it is later than `after`."""
    try:
        text = httpx.get(bot.url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    found = re.search(r"^rotabot_timer_last_run_timestamp_seconds (\S+)$", text, re.M)
    value = float(found.group(1)) if found else 0.0
    return value if value > after else None


def test_a_silent_consumer_raises_one_silent_alert_also_after_a_restart(bot: Bot) -> None:
    start(bot)
    assert report(bot, {"consumer": "retriever", "version": "2"}).json()["steps"] == [
        "distributed", "validated"]
    # staging's turn came; nightly-ingest (heartbeat 3s) never reports.
    text = incident(bot, "has gone silent")
    assert "nightly-ingest (staging) has gone silent" in text
    (silent,) = alerts(bot, "silent")
    assert re.fullmatch(r"nightly-ingest has not reported for \d+s since R-1 reached staging; "
                        r"it reports every 3s", silent[2]), silent
    bot.restart()
    # Two timer runs of the new process later, still one alert and one message.
    first = eventually(lambda: timer_runs_after(bot, 0.0), what="a timer run after restart")
    eventually(lambda: timer_runs_after(bot, first), what="a second timer run")
    assert len(alerts(bot, "silent")) == 1
    assert len([m for m in bot.state.channel_messages("C0INCIDENT")
                if "has gone silent" in m.text]) == 1
