"""Secret canary: every credential value the bot touches is a unique canary; none may escape.

One `rotabot serve` process runs the e2e scenarios back to back: a whole manual rotation to
revocation, an http-issuer rotation whose provider fails (echoing its admin token and a key in
the error body), a rollback, alerts, and a break-glass revoke. Canaries are the store values
(old and new), the values issuers mint, the provider's admin credential and the bot's own
environment credentials (bot token, signing secret, alert secret). Afterwards they are looked
for in the server's log, every recorded Slack Web API call and response_url post (arguments
and answers), every message and ephemeral the stand-in holds, a dump of the database, the
failure reasons (exception texts) and `GET /metrics`: zero hits.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness.loopback import Loopback, QuietHandler
from harness.messages import asks, is_rotation_message
from harness.serve import catalog_head
from security_harness import BotHandle, served_bot

from adapters.file_store import FileStore
from bot.domain.secret_material import SecretMaterial
from bot.sandbox.slack_standin.state import Message
from handlers.ids import Action, View


def canary(label: str) -> str:
    return f"canary-{label}-{secrets.token_hex(10)}"


STORE_OLD, STORE_NEW = canary("store-old"), canary("store-new")
PROVIDER_ADMIN = "Bearer " + canary("provider-admin")
PROVIDER_KEY = canary("provider-key")
ENV_CANARY = canary("env")  # an unused credential-shaped variable in the bot's environment


class Provider(QuietHandler):
    """A key-management API that fails creation and echoes secrets in its error body."""

    seen_auth: list[str] = []

    def do_POST(self) -> None:
        Provider.seen_auth.append(self.headers.get("Authorization", ""))
        self.reply(400, {"error": "quota exceeded", "echo_auth": self.headers.get(
            "Authorization"), "last_key": PROVIDER_KEY})


@pytest.fixture
def provider() -> Iterator[str]:
    with Loopback(Provider) as server:
        yield server.url


CATALOG = catalog_head(observe="3s") + """\
stores:
  local: {{kind: file, path: {store}}}
secrets:
  model-api-key:
    issuer: {{kind: manual}}
    store: {{name: local, path: ai/model-api-key}}
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: hot, rollback: pin previous}}
      nightly-ingest: {{owner: S0DATA, lane: staging, reload: restart, rollback: restart}}
      inference-api: {{owner: U0ALICE, lane: prod, reload: hot, rollback: pin previous}}
  vector-key:
    issuer:
      kind: http
      create:
        url: {provider}/v1/keys
        headers_env: {{Authorization: PROVIDER_ADMIN_AUTH}}
        key_id_path: data.id
        secret_path: data.key
      revoke:
        url: {provider}/v1/keys/{{key_id}}
        headers_env: {{Authorization: PROVIDER_ADMIN_AUTH}}
    store: {{name: local, path: ai/vector-key}}
    consumers:
      embedder: {{owner: U0ALICE, lane: dev, reload: hot, rollback: previous key id}}
  cache-password:
    issuer: {{kind: local}}
    store: {{name: local, path: infra/cache}}
    consumers:
      cache-api: {{owner: U0BOB, lane: dev, reload: restart, rollback: undo deploy}}
  db-password:
    issuer: {{kind: local, fields: [password]}}
    store: {{name: local, path: infra/db}}
    consumers:
      reporting: {{owner: U0CAROL, lane: dev, reload: restart, rollback: undo deploy}}
"""


def parent(bot: BotHandle, ref: str) -> Message:
    return bot.wait_for(lambda: next(
        (m for m in bot.state.channel_messages("C0ROTATE") if is_rotation_message(m, ref)), None))


def has_button(message: Message, action: Action) -> bool:
    return any(e.get("action_id") == action.value for b in message.blocks
               for e in b.get("elements", []))


def click_step(bot: BotHandle, ref: str, user: str, consumer: str, label: str) -> None:
    message = bot.wait_for(lambda: next(
        (m for m in reversed(bot.state.thread("C0ROTATE", parent(bot, ref).ts))
         if asks(m, consumer, label)), None))
    assert bot.slack.click(user, channel="C0ROTATE", message_ts=message.ts,
                           action_id=Action.STEP.value).status == 200
    bot.wait_for(lambda: (m := bot.state.find_message("C0ROTATE", message.ts)) is not None
                 and not any(b.get("type") == "actions" for b in m.blocks))


def wait_phase(bot: BotHandle, ref: str, words: str, timeout: float = 20) -> Message:
    return bot.wait_for(lambda: m if words in (m := parent(bot, ref)).text else None, timeout)


def distribute_validate_switch(bot: BotHandle, ref: str,
                               owners: list[tuple[str, str]]) -> Message:
    """Each (consumer, owner) distributes and validates; the admin switches once the button
    shows. Returns the rotation message once it observes."""
    for consumer, owner in owners:
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


def run_scenarios(bot: BotHandle, store: FileStore) -> list[str]:
    """The e2e scenarios; returns the values issuers minted (more canaries)."""
    minted: list[str] = []

    def harvest(path: str) -> None:
        # Read while every version exists: revocation and rollback destroy them.
        for version in store.describe(path).versions:
            if not version.destroyed:
                material = store.read(path, version.version).reveal()
                minted.extend(str(v) for v in material.values() if str(v) not in minted)

    # 1. A whole manual rotation, start to revoke, with an alert while it observes.
    bot.slack.command("U0ADMIN", "C0ROTATE", "start model-api-key")
    top = parent(bot, "R-1")
    store.put("ai/model-api-key", SecretMaterial({"api_key": STORE_NEW}))
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=top.ts,
                    action_id=Action.CHECK_STORE.value)
    wait_phase(bot, "R-1", "distributing")
    owners = [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"), ("inference-api", "U0ALICE")]
    distribute_validate_switch(bot, "R-1", owners)
    for consumer, owner in owners:
        click_step(bot, "R-1", owner, consumer, "Sign off")
    wait_phase(bot, "R-1", "ready to revoke")
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=top.ts,
                    action_id=Action.REVOKE.value)
    wait_phase(bot, "R-1", "revoked")

    # 2. A failing issuer: the provider refuses and echoes its admin token and a key.
    bot.slack.command("U0ADMIN", "C0ROTATE", "start vector-key")
    wait_phase(bot, "R-2", "failed")

    # 3. Alerts, one tagged with a rotation, one not.
    for consumer in ("inference-api", "embedder"):
        body = json.dumps({"consumer": consumer, "status_code": 401,
                           "error": "invalid_api_key"}).encode()
        assert bot.post_alert(body).status_code == 200

    # 4. A rollback after the switch, with the new credential revoked.
    bot.slack.command("U0ADMIN", "C0ROTATE", "start cache-password")
    wait_phase(bot, "R-3", "distributing")
    harvest("infra/cache")
    distribute_validate_switch(bot, "R-3", [("cache-api", "U0BOB")])
    bot.slack.command("U0ADMIN", "C0ROTATE", "rollback R-3")
    submit_open_view(bot, "U0ADMIN", View.ROLLBACK,
                     {"reason": "cache errors after the switch", "new_credential": "revoke"})
    wait_phase(bot, "R-3", "rolled back")

    # 5. Break-glass: revoke past the gate, with a reason.
    bot.slack.command("U0ADMIN", "C0ROTATE", "start db-password")
    wait_phase(bot, "R-4", "distributing")
    harvest("infra/db")
    top4 = distribute_validate_switch(bot, "R-4", [("reporting", "U0CAROL")])
    bot.slack.click("U0ADMIN", channel="C0ROTATE", message_ts=top4.ts,
                    action_id=Action.REVOKE.value)
    submit_open_view(bot, "U0ADMIN", View.REVOKE_OVERRIDE,
                     {"reason": "the old password was posted in a public channel"})
    wait_phase(bot, "R-4", "revoked")

    return minted


def test_no_canary_value_escapes_anywhere(tmp_path: Path, provider: str) -> None:
    store_dir = tmp_path / "secrets"
    store = FileStore(store_dir)
    store.put("ai/model-api-key", SecretMaterial({"api_key": STORE_OLD}))
    store.put("infra/cache", SecretMaterial({"api_key": canary("cache-old")}))
    store.put("infra/db", SecretMaterial({"password": canary("db-old")}))
    env = {"PROVIDER_ADMIN_AUTH": PROVIDER_ADMIN, "UNRELATED_API_TOKEN": ENV_CANARY}
    catalog = CATALOG.format(store=store_dir, provider=provider)
    with served_bot(tmp_path, catalog, env=env,
                    forbidden=(STORE_OLD, STORE_NEW, PROVIDER_ADMIN, PROVIDER_KEY)) as bot:
        minted = run_scenarios(bot, store)
        metrics = bot.http.get(bot.url + "/metrics")
        assert metrics.status_code == 200
        env_values = bot.extras["env"]
        canaries = {
            "store old": STORE_OLD, "store new": STORE_NEW, "provider admin": PROVIDER_ADMIN,
            "provider key": PROVIDER_KEY, "env canary": ENV_CANARY,
            "bot token": env_values["SLACK_BOT_TOKEN"],
            "signing secret": env_values["SLACK_SIGNING_SECRET"],
            "alert secret": env_values["ROTABOT_ALERT_SECRET"],
            **{f"minted {i}": v for i, v in enumerate(minted)},
        }
        assert len(minted) == 4  # old and new of cache-password and of db-password
        state = bot.state
        with bot.db() as conn:
            reasons = [r[0] or "" for r in conn.execute(
                "select failure_reason from rotations union all select reason from audit_events"
                " union all select reason from alerts")]
        places = {
            "server log": bot.log_text(),
            "Slack calls": json.dumps([[c.method, c.args, c.response] for c in state.calls],
                                      default=str),
            "stand-in messages": json.dumps(state.snapshot(), default=str),
            "database dump": bot.dump(),
            "exception texts": "\n".join(reasons),
            "metrics": metrics.text,
        }
        hits = [(name, where) for name, value in canaries.items()
                for where, text in places.items() if value in text]
        assert hits == [], hits
        # The canaries were really in play: the bot held them and used the provider's.
        environ = Path(f"/proc/{bot.process.pid}/environ").read_bytes() if bot.process else b""
        assert ENV_CANARY.encode() in environ and PROVIDER_ADMIN.encode() in environ
        assert PROVIDER_ADMIN in Provider.seen_auth
        # The stand-in checked every call against the forbidden values as it was made.
        assert state.violations == []
        # The scenarios really ran: the failure is explained, the rotations ended as planned.
        assert "quota" not in places["exception texts"]  # the provider's body is not quoted
        assert "preparing the new credential failed" in places["exception texts"]
        phases = [r[0] for r in bot.rows("rotations", "phase")]
        assert phases == ["revoked", "failed", "rolled-back", "revoked"]
        assert bot.count("alerts") >= 2
        assert "break-glass" in places["Slack calls"]
