"""The sandbox's store panel shows what each lane's targets hold: model-api-key's dotenv files
(dev, staging, prod) get the new key on their lane's turn, and prod keeps the current one until
then. Driven through the sandbox's own endpoints (as the page does) and in a real browser.

The sandbox runs as the CLI runs it (a subprocess on a free port, its own data folder per
test). Waiting is done on the page API's long-poll (`/sandbox/state?since=N`) or Playwright's
expect, never by sleeping.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from harness.serve import stop_process

from handlers.ids import Action

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "sandbox"
ADDRESS = re.compile(r"open (http://\S+/) in a browser")
SECRET = "model-api-key"
LANES = ("dev", "staging", "prod")
# model-api-key's consumers in lane order, with who clicks for each (rag-ingest is owned by
# the user group S0DATA, of which Carol is a member).
CONSUMERS = (
    ("notebook-sandbox", "U0ALICE"),
    ("rag-ingest", "U0CAROL"),
    ("inference-api", "U0BOB"),
)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT = 20.0  # seconds; upper bounds for waits, not timing assertions


@dataclass
class Running:
    url: str
    data_dir: Path

    def lane_file(self, lane: str) -> Path:
        return self.data_dir / "lanes" / f"{lane}.env"

    def lane_value(self, lane: str) -> str:
        """The value of MODEL_API_KEY in `lane`'s dotenv file, as the test's plant."""
        text = self.lane_file(lane).read_text()
        found = re.search(r"^MODEL_API_KEY=(.*)$", text, re.MULTILINE)
        assert found, f"no MODEL_API_KEY line in {self.lane_file(lane)}"
        value = found.group(1).strip("'\"")
        assert len(value) >= 20, "the sandbox's keys are long random tokens"
        return value


@pytest.fixture()
def sandbox(tmp_path: Path) -> Iterator[Running]:
    """`rotabot sandbox --port 0` with a fresh data folder; yields its address and folder."""
    data_dir = tmp_path / "data"
    log_path = tmp_path / "sandbox.log"
    rotabot = Path(sys.executable).with_name("rotabot")
    cmd = [str(rotabot), "sandbox", "--port", "0", "--data-dir", str(data_dir)]
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, env={**os.environ})
    url = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if not line and proc.poll() is not None:
                break
            match = ADDRESS.search(line)
            if match:
                url = match.group(1)
        if url is None:
            pytest.fail(f"rotabot sandbox printed no address; log:\n{log_path.read_text()[-3000:]}")
        assert httpx.get(url + "healthz", timeout=10).status_code == 200
        yield Running(url, data_dir)
    finally:
        stop_process(proc, timeout=10)
        log.close()
        if proc.returncode not in (0, -15, None):
            print(log_path.read_text()[-3000:])


# ------------------------------------------------------- the page API, as the page uses it


def state(sb: Running, since: int = -1) -> tuple[dict[str, Any], str]:
    """`/sandbox/state` as the admin sees it (long-polls past `since`): its JSON and raw text."""
    r = httpx.get(sb.url + "sandbox/state", params={"user": "U0ADMIN", "since": since},
                  timeout=30)
    assert r.status_code == 200, r.text
    return r.json(), r.text


def wait_state(
    sb: Running, what: str, found: Callable[[dict[str, Any]], Any]
) -> tuple[dict[str, Any], str]:
    """The first state for which `found` is truthy, waiting on the long-poll between looks."""
    data, text = state(sb)
    deadline = time.monotonic() + TIMEOUT
    while not found(data):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; last stores: {data.get('stores')}")
        data, text = state(sb, since=data["seq"])
    return data, text


def holds(data: dict[str, Any]) -> dict[str, str]:
    """Lane -> what its one target holds."""
    out = {}
    for lane in data["stores"][SECRET]["lanes"]:
        (target,) = lane["targets"]
        out[lane["lane"]] = target["holds"]
    return out


def labelled(data: dict[str, Any], label: str) -> str | None:
    """The store version labelled `label` (current, pending, ...)."""
    return next(
        (v["version"] for v in data["stores"][SECRET]["versions"] if label in v["labels"]), None
    )


def messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    channel = next(c for c in data["channels"] if c["id"] == "C0ROTATE")
    return list(channel["messages"])


def button(message: dict[str, Any], label: str) -> dict[str, Any] | None:
    """The button labelled `label` in `message`, with the block it sits in."""
    for block in message.get("blocks", []):
        if block.get("type") != "actions":
            continue
        for element in block.get("elements", []):
            if element.get("text", {}).get("text") == label:
                return {**element, "block_id": block.get("block_id")}
    return None


def click(sb: Running, user: str, message: dict[str, Any], label: str) -> None:
    found = button(message, label)
    assert found is not None, f"no {label!r} button on {message['text'][:80]!r}"
    r = httpx.post(
        sb.url + "sandbox/action",
        json={
            "user": user,
            "channel": "C0ROTATE",
            "message_ts": message["ts"],
            "action_id": found.get("action_id"),
            "value": found.get("value"),
            "block_id": found.get("block_id"),
        },
        timeout=30,
    )
    assert r.status_code == 200 and r.json().get("ok") is not False, r.text


def press_step(sb: Running, consumer: str, user: str, label: str) -> dict[str, Any]:
    """`user` presses `label` on `consumer`'s thread prompt; returns the state once the
    prompt has no button left (the bot stored the step)."""
    def prompt(data: dict[str, Any]) -> dict[str, Any] | None:
        return next(
            (m for m in reversed(messages(data))
             if m["text"].startswith(consumer + " ") and button(m, label)),
            None,
        )

    data, _ = wait_state(sb, f"{consumer}'s {label} prompt", prompt)
    asked = prompt(data)
    assert asked is not None
    click(sb, user, asked, label)

    def answered(d: dict[str, Any]) -> bool:
        m = next((m for m in messages(d) if m["ts"] == asked["ts"]), None)
        return m is not None and button(m, label) is None

    return wait_state(sb, f"{consumer}'s {label} step", answered)[0]


def assert_no_value(text: str, values: list[str]) -> None:
    """Neither a planted value nor its SHA-256 hex appears in the response."""
    for value in values:
        assert value not in text, "a credential value reached /sandbox/state"
        assert hashlib.sha256(value.encode()).hexdigest() not in text, "a value's hash leaked"


# ------------------------------------------------------------------ tests


def test_state_tells_what_each_lane_holds_through_a_rotation(sandbox: Running) -> None:
    data, text = state(sandbox)
    assert holds(data) == dict.fromkeys(LANES, "current"), "every lane starts on the current one"
    old_version = labelled(data, "current")
    assert old_version is not None and labelled(data, "pending") is None
    for lane in data["stores"][SECRET]["lanes"]:
        (target,) = lane["targets"]
        assert target == {
            "label": f"env-file lanes/{lane['lane']}.env MODEL_API_KEY",
            "holds": "current",
            "version": old_version,
        }
    # Secrets without targets say so with an empty list.
    assert data["stores"]["vector-db-key"]["lanes"] == []
    old = sandbox.lane_value("prod")
    assert {sandbox.lane_value(lane) for lane in LANES} == {old}
    assert_no_value(text, [old])

    r = httpx.post(
        sandbox.url + "sandbox/command",
        json={"user": "U0ADMIN", "channel": "C0ROTATE", "text": f"/rotate start {SECRET}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    data, text = wait_state(
        sandbox, "dev's target to hold the new key", lambda d: holds(d)["dev"] == "new (pending)"
    )
    # Only dev's lane is open: staging and prod read the current (old) key, which the store
    # still has as current; the new one waits as pending.
    assert holds(data) == {"dev": "new (pending)", "staging": "current", "prod": "current"}
    assert labelled(data, "current") == old_version
    new_version = labelled(data, "pending")
    assert new_version is not None and new_version != old_version
    new = sandbox.lane_value("dev")
    assert new != old and sandbox.lane_value("prod") == old
    assert_no_value(text, [old, new])

    press_step(sandbox, "notebook-sandbox", "U0ALICE", "Distributed")
    data = press_step(sandbox, "notebook-sandbox", "U0ALICE", "Validated")
    data, text = wait_state(
        sandbox, "staging's lane to open", lambda d: holds(d)["staging"] == "new (pending)"
    )
    assert holds(data) == {"dev": "new (pending)", "staging": "new (pending)", "prod": "current"}
    assert sandbox.lane_value("staging") == new and sandbox.lane_value("prod") == old
    assert_no_value(text, [old, new])

    for consumer, owner in CONSUMERS[1:]:
        press_step(sandbox, consumer, owner, "Distributed")
        press_step(sandbox, consumer, owner, "Validated")
    data, _ = wait_state(sandbox, "every lane open",
                         lambda d: set(holds(d).values()) == {"new (pending)"})
    assert labelled(data, "current") == old_version

    def switch_button(d: dict[str, Any]) -> dict[str, Any] | None:
        return next(
            (m for m in messages(d) if m["text"].startswith("R-1 ")
             and button(m, "Switch to new credential")),
            None,
        )

    data, _ = wait_state(sandbox, "the Switch button", switch_button)
    parent = switch_button(data)
    assert parent is not None
    click(sandbox, "U0ADMIN", parent, "Switch to new credential")
    data, text = wait_state(sandbox, "the switch",
                            lambda d: labelled(d, "current") == new_version)
    # After the switch every lane holds the new key, which is now the store's current one.
    assert holds(data) == dict.fromkeys(LANES, "current")
    assert all(
        lane["targets"][0]["version"] == new_version for lane in data["stores"][SECRET]["lanes"]
    )
    assert labelled(data, "previous") == old_version
    assert {sandbox.lane_value(lane) for lane in LANES} == {new}
    assert_no_value(text, [old, new])


# ------------------------------------------------------------------ in a browser


def test_the_sandbox_rotates_a_webhook_secret_without_any_server(sandbox: Running) -> None:
    # The webhook-hmac issuer needs no provider: the sandbox offers it as it is.
    r = httpx.post(
        sandbox.url + "sandbox/command",
        json={"user": "U0ADMIN", "channel": "C0ROTATE", "text": "/rotate start ingest-webhook"},
        timeout=30,
    )
    assert r.status_code == 200, r.text

    data, _ = wait_state(sandbox, "the webhook rotation to distribute", lambda d: any(
        x["secret"] == "ingest-webhook" and x["phase"] == "distributing"
        for x in d["rotations"]))

    versions = {v["version"]: v["labels"] for v in data["stores"]["ingest-webhook"]["versions"]}
    assert versions == {"1": ["current"], "2": ["pending"]}


def test_the_sandbox_rehearses_a_hard_cutover_without_any_server(sandbox: Running) -> None:
    # saas-token's local issuer holds one valid value: start opens the readiness review, and
    # the last owner's confirmation cuts over both lanes at once.
    r = httpx.post(
        sandbox.url + "sandbox/command",
        json={"user": "U0ADMIN", "channel": "C0ROTATE", "text": "/rotate start saas-token"},
        timeout=30,
    )
    assert r.status_code == 200, r.text

    def review(data: dict[str, Any]) -> dict[str, Any] | None:
        return next((m for m in messages(data)
                     if m["text"].startswith("Hard cutover readiness review: saas-token")), None)

    data, _ = wait_state(sandbox, "the hard cutover's readiness review", review)
    assert not any(x["secret"] == "saas-token" for x in data["rotations"])  # nothing minted
    for owner in ("U0BOB", "U0ALICE"):
        message = review(data)
        assert message is not None
        row = next(
            b for b in message["blocks"]
            if b.get("accessory", {}).get("action_id") == Action.CONFIRM_READY.value
            and json.loads(b["accessory"]["value"])["owner"] == owner
        )
        r = httpx.post(sandbox.url + "sandbox/action", json={
            "user": owner, "channel": "C0ROTATE", "message_ts": message["ts"],
            "action_id": Action.CONFIRM_READY.value, "value": row["accessory"]["value"],
            "block_id": row.get("block_id"),
        }, timeout=30)
        assert r.status_code == 200 and r.json().get("ok") is not False, r.text
        data, _ = state(sandbox, since=data["seq"])

    def cut_over(d: dict[str, Any]) -> bool:
        lanes = d["stores"]["saas-token"].get("lanes", [])
        return bool(lanes) and all(
            t["holds"] == "current" and t.get("version") == "2"
            for lane in lanes for t in lane["targets"])

    data, _ = wait_state(sandbox, "the cutover to write both lanes", cut_over)
    [rotation] = [x for x in data["rotations"] if x["secret"] == "saas-token"]
    assert rotation["phase"] == "distributing"


@pytest.fixture()
def browser() -> Iterator[Browser]:
    pytest.importorskip("playwright")
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Browser, sandbox: Running) -> Iterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(sandbox.url)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.mark.browser
def test_store_panel_shows_prod_on_the_old_key_while_dev_has_the_new(page: Page) -> None:
    from playwright.sync_api import expect

    wait = TIMEOUT * 1000
    store = page.locator(".store[data-secret='model-api-key']")

    def target(lane: str) -> Any:
        return store.locator(f".lane[data-lane='{lane}'] .target")

    for lane in LANES:
        expect(target(lane)).to_contain_text(f"lanes/{lane}.env MODEL_API_KEY", timeout=wait)
        expect(target(lane).locator(".holds")).to_have_text("current · v1")
    # Secrets without targets show no lane rows.
    expect(page.locator(".store[data-secret='vector-db-key'] .lane")).to_have_count(0)

    page.select_option("#user-switcher", "U0ADMIN")
    expect(page.locator("#me")).to_contain_text("Ada")
    page.locator("#channel-list a[data-channel='C0ROTATE']").click()
    page.fill("#composer-input", f"/rotate start {SECRET}")
    page.press("#composer-input", "Enter")

    dev = target("dev").locator(".holds")
    expect(dev).to_have_text("new (pending) · v2", timeout=wait)
    expect(dev).to_have_class(re.compile(r"\bnew\b"))
    for lane in ("staging", "prod"):
        badge = target(lane).locator(".holds")
        expect(badge).to_have_text("current · v1")
        expect(badge).to_have_class(re.compile(r"\bcurrent\b"))
    # The store's own line is unchanged: v1 current, v2 pending.
    expect(store.locator(".version").filter(has_text="v1")).to_contain_text("current")
    expect(store.locator(".version").filter(has_text="v2")).to_contain_text("pending")
    rotation = page.locator("#messages .msg").filter(has_text=f"R-1 · rotating {SECRET}").first
    expect(rotation).to_contain_text("distributing", timeout=wait)
    store.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "26-lane-targets.png"))


def test_a_consumer_report_from_the_sandbox_is_evidence_apart_from_claims(
    sandbox: Running,
) -> None:
    """The page's "Send a consumer report" panel (`/sandbox/evidence`, signed `POST /evidence`):
    a report of the new version validates notebook-sandbox with no click, and the rotation
    message tells that step from rag-ingest's, which rests on a click only."""
    r = httpx.post(
        sandbox.url + "sandbox/command",
        json={"user": "U0ADMIN", "channel": "C0ROTATE", "text": f"/rotate start {SECRET}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    data, _ = wait_state(sandbox, "dev's lane to open",
                         lambda d: holds(d)["dev"] == "new (pending)")
    new_version = labelled(data, "pending")
    sent = httpx.post(sandbox.url + "sandbox/evidence", json={
        "secret": SECRET, "consumer": "notebook-sandbox", "version": new_version,
        "workflow": "inference", "ok": True}, timeout=30).json()
    assert sent["ok"] and sent["status"] == 200, sent
    assert '"steps":["distributed","validated"]' in sent["body"]
    press_step(sandbox, "rag-ingest", "U0CAROL", "Distributed")
    press_step(sandbox, "rag-ingest", "U0CAROL", "Validated")

    evidence = f"*validated*: notebook-sandbox reported version {new_version} (inference passed)"
    claim = "*validated* by <@U0CAROL>, no evidence"

    def parent(d: dict[str, Any]) -> str | None:
        found = next((m for m in messages(d) if m["text"].startswith("R-1 ")), None)
        text = str(found.get("blocks")) if found else ""
        return text if evidence in text and claim in text else None

    wait_state(sandbox, "the message to show evidence and claims apart", parent)
