"""`rotabot sandbox` in a real browser: a whole rotation by clicking, as each user in turn.

The sandbox runs as the CLI runs it (a subprocess on a free port); Debian's chromium, driven by
Playwright, plays the people. Screenshots land in test-output/sandbox/ for a human to judge.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness.serve import stop_process

from bot.sandbox.emoji import EMOJI

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-output" / "sandbox"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ADDRESS = re.compile(r"open (http://\S+/) in a browser")
# model-api-key's consumers in lane order, with who clicks for each (rag-ingest is owned by
# the user group S0DATA, of which Carol is a member).
CONSUMERS = [
    ("notebook-sandbox", "U0ALICE"),
    ("rag-ingest", "U0CAROL"),
    ("inference-api", "U0BOB"),
]
WAIT = 20_000  # ms; Playwright polls, these are upper bounds, not timing assertions


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("sandbox") / "data"
    log_path = data_dir.parent / "sandbox.log"
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
        yield url
    finally:
        stop_process(proc, timeout=10)
        log.close()
        if proc.returncode not in (0, -15, None):
            print(log_path.read_text()[-3000:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def page(browser: Browser, sandbox: str) -> Iterator[Page]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(sandbox)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def act_as(page: Page, user: str) -> None:
    page.select_option("#user-switcher", user)
    expect(page.locator("#me")).to_contain_text(
        {
            "U0ADMIN": "Ada",
            "U0ALICE": "Alice",
            "U0BOB": "Bob",
            "U0CAROL": "Carol",
            "U0MALLORY": "Mallory",
        }[user]
    )


NAMES = {
    "U0ADMIN": "Ada Admin",
    "U0ALICE": "Alice Owner",
    "U0BOB": "Bob Owner",
    "U0CAROL": "Carol (S0DATA)",
}


def rotation_message(page: Page, ref: str = "R-1") -> Locator:
    """The rotation message of `ref` in the channel, whatever its header says by now
    ("rotating", "rotated", "rolled back", ...)."""
    header = page.locator(".b-header").filter(has_text=re.compile(rf"^{re.escape(ref)} · "))
    return page.locator("#messages .msg").filter(has=header).first


def start_rotation(page: Page, secret: str) -> str:
    """Start a rotation of `secret` from the composer, as the admin; its ref (R-N)."""
    act_as(page, "U0ADMIN")
    page.locator("#channel-list a[data-channel='C0ROTATE']").click()
    page.fill("#composer-input", f"/rotate start {secret}")
    page.press("#composer-input", "Enter")
    return running_ref(page, secret)


def running_ref(page: Page, secret: str) -> str:
    """The ref of the one rotation of `secret` that runs (a secret has one at a time)."""
    header = page.locator("#messages .b-header").filter(
        has_text=re.compile(rf"^R-\d+ · rotating {re.escape(secret)}$")
    )
    expect(header).to_have_count(1, timeout=WAIT)
    found = re.match(r"R-\d+", header.inner_text().strip())
    assert found, header.inner_text()
    return found.group(0)


def open_thread(page: Page, ref: str) -> None:
    rotation_message(page, ref).locator(".thread-link").click()
    expect(page.locator("#thread-pane")).to_be_visible()
    # The pane starts with the parent: make sure it is this rotation's thread.
    expect(page.locator("#thread-messages .msg").first.locator(".b-header")).to_have_text(
        re.compile(rf"^{re.escape(ref)} · "), timeout=WAIT
    )


def replies(page: Page) -> Locator:
    """The thread pane's replies (the parent comes first, then the reply count)."""
    return page.locator("#thread-messages .reply-count ~ .msg")


def thread_receipt(page: Page, text: str | re.Pattern[str]) -> Locator:
    found = replies(page).filter(has_text=text)
    expect(found).to_have_count(1, timeout=WAIT)
    return found


def expect_mentions(scope: Locator, *users: str) -> None:
    """Each of `users` is a rendered mention (@Name) in `scope`, not raw <@U…> text."""
    for user in users:
        expect(scope.locator(".mention").filter(has_text=f"@{NAMES[user]}")).not_to_have_count(0)
    expect(scope).not_to_contain_text("<@")


def prompt(page: Page, consumer: str, label: str) -> Locator:
    """The thread message asking `consumer`'s owner for `label` (its button still there)."""
    return (
        page.locator("#thread-messages .msg")
        .filter(has_text=consumer)
        .filter(has=page.get_by_role("button", name=label, exact=True))
    )


def click_step(
    page: Page, consumer: str, user: str, label: str, state: str, ref: str = "R-1"
) -> None:
    act_as(page, user)
    target = prompt(page, consumer, label)
    expect(target).to_have_count(1, timeout=WAIT)
    target.get_by_role("button", name=label, exact=True).click()
    # The bot stores the step and re-renders the rotation message from the stored state.
    expect(rotation_message(page, ref)).to_contain_text(
        re.compile(rf"{consumer} · [^\n]*{state} by"), timeout=WAIT
    )


def click_admin_button(page: Page, label: str, confirm: str, ref: str = "R-1") -> None:
    act_as(page, "U0ADMIN")
    button = rotation_message(page, ref).get_by_role("button", name=label, exact=True)
    expect(button).to_be_visible(timeout=WAIT)
    button.click()
    dialog = page.locator("#confirm-layer .modal")
    expect(dialog).to_be_visible()
    shot(page, f"confirm-{confirm.lower()}")
    page.locator("#confirm-yes").click()


def test_whole_rotation_by_clicking(page: Page) -> None:
    expect(page.locator("#channel-list")).to_contain_text("rotations")
    expect(page.locator("#channel-list")).to_contain_text("incidents")
    act_as(page, "U0ADMIN")
    shot(page, "01-empty-channel")

    page.fill("#composer-input", "/rotate start model-api-key")
    page.press("#composer-input", "Enter")
    expect(rotation_message(page)).to_be_visible(timeout=WAIT)
    expect(page.locator("#messages .msg.ephemeral")).to_contain_text("Started R-1")
    write = page.locator("[data-write='model-api-key']")
    if write.count():
        # The manual issuer: do what a person does at the provider, then the bot notices.
        write.click()
    expect(rotation_message(page)).to_contain_text("distributing", timeout=WAIT)
    shot(page, "02-started")

    rotation_message(page).locator(".thread-link").click()
    expect(page.locator("#thread-pane")).to_be_visible()
    expect(prompt(page, "notebook-sandbox", "Distributed")).to_have_count(1, timeout=WAIT)
    shot(page, "03-thread-first-turn")

    # An outsider's click is refused, on screen, and changes nothing.
    act_as(page, "U0MALLORY")
    prompt(page, "notebook-sandbox", "Distributed").get_by_role(
        "button", name="Distributed", exact=True
    ).click()
    refusal = page.locator("#thread-messages .msg.ephemeral").filter(has_text="this step is")
    expect(refusal).to_contain_text("Only visible to you", timeout=WAIT)
    expect(refusal).to_contain_text("Alice")
    shot(page, "04-outsider-refused")
    act_as(page, "U0ALICE")
    expect(page.locator("#thread-messages .msg.ephemeral")).to_have_count(0)
    expect(prompt(page, "notebook-sandbox", "Distributed")).to_have_count(1)
    expect(rotation_message(page)).to_contain_text("0/1 validated")

    for consumer, owner in CONSUMERS:
        click_step(page, consumer, owner, "Distributed", "distributed")
        click_step(page, consumer, owner, "Validated", "validated")
    shot(page, "05-all-validated")

    click_admin_button(page, "Switch to new credential", "Switch")
    expect(rotation_message(page)).to_contain_text(re.compile("switched|observing"), timeout=WAIT)
    shot(page, "06-switched")

    for consumer, owner in CONSUMERS:
        click_step(page, consumer, owner, "Sign off", "signed off")
    shot(page, "07-signed-off")

    act_as(page, "U0ADMIN")
    # observe: 5s in the sandbox catalog; the bot's timer opens the gate.
    expect(rotation_message(page)).to_contain_text("ready to revoke", timeout=60_000)
    shot(page, "08-revocable")
    click_admin_button(page, "Revoke old credential", "Revoke")
    expect(rotation_message(page)).to_contain_text(
        "done: the old credential is revoked", timeout=WAIT
    )
    store = page.locator(".store[data-secret='model-api-key']")
    expect(store).to_contain_text("revoked", timeout=WAIT)
    page.locator("#thread-close").click()
    shot(page, "09-revoked")

    page.locator("#nav-home").click()
    expect(page.locator("#messages .home")).to_be_visible(timeout=WAIT)
    shot(page, "10-app-home")


def test_alert_panel_reaches_the_bot_signed(page: Page) -> None:
    """A connector's alert, signed with the alert secret, is accepted and shown in #incidents."""
    act_as(page, "U0ADMIN")
    page.select_option("#alert-secret", "vector-db-key")
    page.select_option("#alert-consumer", "embedder-dev")
    page.locator("#alert-send").click()
    result = page.locator("#alert-result")
    expect(result).to_contain_text("POST /alerts →", timeout=WAIT)
    shot(page, "11-alert-sent")
    expect(result.locator(".good")).to_be_visible()
    page.locator("#channel-list a[data-channel='C0INCIDENT']").click()
    alert = page.locator("#messages .msg").filter(has_text="embedder-dev")
    expect(alert).not_to_have_count(0, timeout=WAIT)
    shot(page, "11-alert-in-incidents")


def test_modals_start_with_errors_then_roll_back(page: Page) -> None:
    """The start modal (static_select, plain_text_input) with a validation error shown in the
    modal, then the rollback modal (radio_buttons) from the rotation message's button."""
    act_as(page, "U0ADMIN")
    page.locator("#channel-list a[data-channel='C0ROTATE']").click()
    page.fill("#composer-input", "/rotate start")
    page.press("#composer-input", "Enter")
    modal = page.locator("#modal-layer .modal")
    expect(modal).to_contain_text("Start a rotation", timeout=WAIT)
    modal.locator("select").select_option("vector-db-key")
    modal.locator(".b-input[data-block-id='overlap'] input").fill("soon")
    shot(page, "12-start-modal")
    page.locator("#modal-submit").click()
    expect(modal.locator(".b-input[data-block-id='overlap'] .error")).to_be_visible(timeout=WAIT)
    shot(page, "13-start-modal-error")
    # What the person chose survives the re-render with errors.
    expect(modal.locator("select")).to_have_value("vector-db-key")
    modal.locator(".b-input[data-block-id='overlap'] input").fill("2h")
    page.locator("#modal-submit").click()
    expect(page.locator("#modal-layer")).to_be_hidden(timeout=WAIT)

    # The header changes with the phase ("rolled back vector-db-key" at the end): hold on to
    # the message by its ref.
    message = rotation_message(page, running_ref(page, "vector-db-key"))
    write = page.locator("[data-write='vector-db-key']")
    expect(message).to_be_visible(timeout=WAIT)
    if write.count():
        write.click()
    expect(message).to_contain_text("distributing", timeout=WAIT)
    message.get_by_role("button", name="Roll back").click()
    expect(modal).to_contain_text("What will happen", timeout=WAIT)
    modal.get_by_label("Revoke it").check()
    modal.locator(".b-input[data-block-id='reason'] input").fill("rehearsing a rollback")
    shot(page, "14-rollback-modal")
    page.locator("#modal-submit").click()
    expect(page.locator("#modal-layer")).to_be_hidden(timeout=WAIT)
    expect(message).to_contain_text("rolled back", timeout=WAIT)
    shot(page, "15-rolled-back")


def test_app_home_has_no_composer(page: Page) -> None:
    """App Home is not a conversation: no composer is shown there and nothing can focus it;
    back in a channel the composer is there and posts."""
    act_as(page, "U0ADMIN")
    composer = page.locator("#composer")
    expect(composer).to_be_visible()
    page.locator("#nav-home").click()
    expect(page.locator("#messages .home")).to_be_visible(timeout=WAIT)
    expect(composer).to_be_hidden()
    focused = page.evaluate(
        "() => { const i = document.querySelector('#composer-input'); i.focus();"
        " return document.activeElement === i; }"
    )
    assert not focused, "the hidden composer took focus on App Home"
    for _ in range(40):  # every focusable thing on the page, and then some
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement && document.activeElement.id") != (
            "composer-input"
        ), "Tab reached the composer on App Home"
    shot(page, "16-app-home-no-composer")

    page.locator("#channel-list a[data-channel='C0INCIDENT']").click()
    expect(composer).to_be_visible()
    expect(page.locator("#composer-input")).to_have_attribute(
        "placeholder", re.compile("Message #incidents")
    )
    page.fill("#composer-input", "composer works after App Home")
    page.press("#composer-input", "Enter")
    posted = page.locator("#messages .msg").filter(has_text="composer works after App Home")
    expect(posted).to_have_count(1, timeout=WAIT)


def expect_pictures_drawn(scope: Locator, names: list[str]) -> None:
    """Each shortcode in `names` is a loaded picture (not text, not a broken image) in `scope`,
    and no other shortcode is left as text."""
    for name in names:
        picture = scope.locator(f"img.emo[alt=':{name}:']").first
        # The SVGs are 20x20: a broken or missing picture has naturalWidth 0.
        expect(picture).to_have_js_property("naturalWidth", 20, timeout=WAIT)
    expect(scope).not_to_contain_text(re.compile(r":[a-z][a-z0-9_+-]*:"))


def test_rotation_message_draws_its_emoji(page: Page) -> None:
    """The step icons of a rotation message are pictures from the sandbox's emoji table: they
    draw on a machine without an emoji font."""
    act_as(page, "U0ADMIN")
    page.locator("#channel-list a[data-channel='C0ROTATE']").click()
    page.fill("#composer-input", "/rotate start webhook-secret")
    page.press("#composer-input", "Enter")
    message = page.locator("#messages .msg").filter(has_text="rotating webhook-secret").first
    expect(message).to_be_visible(timeout=WAIT)
    write = page.locator("[data-write='webhook-secret']")
    if write.count():
        write.click()
    expect(message).to_contain_text("distributing", timeout=WAIT)
    expect_pictures_drawn(message, ["white_circle"])
    shot(page, "17-rotation-emoji")


def test_every_table_shortcode_draws_and_unknown_stays_text(page: Page) -> None:
    """Every shortcode of the table draws as its picture; one not in it shows as its text."""
    act_as(page, "U0ADMIN")
    page.locator("#channel-list a[data-channel='C0INCIDENT']").click()
    names = sorted(EMOJI)
    text = "emoji check " + " ".join(f":{n}:" for n in names) + " *bold* :no_such_emoji:"
    page.fill("#composer-input", text)
    page.press("#composer-input", "Enter")
    message = page.locator("#messages .msg").filter(has_text="emoji check").last
    expect(message).to_contain_text(":no_such_emoji:", timeout=WAIT)
    # Underscores of shortcodes never turn into italics; bold still works beside them.
    expect(message.locator("i")).to_have_count(0)
    expect(message.locator("b")).to_have_text("bold")
    for name in names:
        picture = message.locator(f"img.emo[alt=':{name}:']")
        expect(picture).to_have_count(1)
        expect(picture).to_have_js_property("naturalWidth", 20, timeout=WAIT)
    expect(message.locator("img.emo")).to_have_count(len(names))
    expect(message).not_to_contain_text(re.compile(r":(?!no_such_emoji:)[a-z][a-z0-9_+-]*:"))
    shot(page, "18-emoji-table")


PROBLEM = "embedder gets 403 Forbidden from the vector database with the new key"
ROLLBACK_REASON = "embedder-dev is refused by the provider"


def report_problem(page: Page, consumer: str, user: str, what: str) -> None:
    """`user` presses "Report a problem" on `consumer`'s prompt and submits `what`."""
    act_as(page, user)
    target = prompt(page, consumer, "Report a problem")
    expect(target).to_have_count(1, timeout=WAIT)
    target.get_by_role("button", name="Report a problem", exact=True).click()
    modal = page.locator("#modal-layer .modal")
    expect(modal).to_contain_text("What fails?", timeout=WAIT)
    modal.locator(".b-input[data-block-id='what'] textarea").fill(what)
    page.locator("#modal-submit").click()


def test_receipts_for_a_problem_a_rollback_and_a_revoke(page: Page) -> None:
    """Every state change is told in the rotation's thread with who did it (and why), as
    rendered @mentions; buttons that no longer apply go. One rotation gets a reported problem
    and is rolled back; a second one is walked to revocation."""
    # --- A problem, reported from the owner's prompt, then a rollback.
    ref = start_rotation(page, "vector-db-key")
    message = rotation_message(page, ref)
    expect(message).to_contain_text("distributing", timeout=WAIT)
    open_thread(page, ref)
    click_step(page, "embedder-dev", "U0BOB", "Distributed", "distributed", ref)

    # A blank description is refused in the modal, which stays open.
    report_problem(page, "embedder-dev", "U0BOB", "   ")
    modal = page.locator("#modal-layer .modal")
    error = modal.locator(".b-input[data-block-id='what'] .error")
    expect(error).to_have_text("Say what fails, in a sentence", timeout=WAIT)
    shot(page, "19-problem-modal-error")
    modal.locator(".b-input[data-block-id='what'] textarea").fill(PROBLEM)
    page.locator("#modal-submit").click()
    expect(page.locator("#modal-layer")).to_be_hidden(timeout=WAIT)

    told = thread_receipt(page, "reported a problem with")
    expect(told).to_contain_text(
        re.compile(
            rf"@Bob Owner reported a problem with embedder-dev \(dev\): {re.escape(PROBLEM)}\. "
            r"A-\d+ blocks revocation until it is resolved\. @Ada Admin, roll back from the "
            "alert or the rotation message if needed"
        )
    )
    expect_mentions(told, "U0BOB", "U0ADMIN")
    found = re.search(r"A-\d+", told.inner_text())
    assert found, told.inner_text()
    alert_ref = found.group(0)
    expect(message).to_contain_text("Open problems", timeout=WAIT)
    expect(message).to_contain_text(
        re.compile(rf"{alert_ref} embedder-dev \(dev\) · {re.escape(PROBLEM)} · reported by @Bob")
    )
    shot(page, "20-problem-reported")

    act_as(page, "U0ADMIN")
    message.get_by_role("button", name="Roll back", exact=True).click()
    expect(modal).to_contain_text("What will happen", timeout=WAIT)
    modal.locator(".b-input[data-block-id='reason'] input").fill(ROLLBACK_REASON)
    page.locator("#modal-submit").click()
    expect(page.locator("#modal-layer")).to_be_hidden(timeout=WAIT)

    rolled = thread_receipt(page, f"rolled back {ref}")
    expect(rolled).to_contain_text(f"@Ada Admin rolled back {ref}: the previous credential")
    expect(rolled).to_contain_text(f"Reason: {ROLLBACK_REASON}")
    expect_mentions(rolled, "U0ADMIN")
    # Every prompt that still offered a step lost its buttons and says why.
    expect(replies(page).locator("button")).to_have_count(0, timeout=WAIT)
    retired = replies(page).filter(has_text="no longer needed")
    expect(retired).not_to_have_count(0)
    expect(retired.filter(has_text="embedder-dev (dev)")).to_contain_text(
        f"no longer needed, {ref} is rolled back."
    )
    expect(message.locator(".b-header")).to_have_text(f"{ref} · rolled back vector-db-key")
    expect(message.locator("button").filter(has_text="Roll back")).to_have_count(0)
    shot(page, "21-rolled-back-thread")

    # The alert in #incidents is resolved by the rollback and keeps no buttons.
    page.locator("#channel-list a[data-channel='C0INCIDENT']").click()
    alert = page.locator("#messages .msg").filter(has_text=re.compile(rf"\b{alert_ref} · class"))
    expect(alert).to_have_count(1, timeout=WAIT)
    expect(alert).to_contain_text("resolved by @Ada Admin", timeout=WAIT)
    expect(alert.locator("button")).to_have_count(0)
    shot(page, "22-alert-resolved")

    # --- A rotation walked to revocation (model-api-key observes for 5s in the sandbox).
    page.locator("#thread-close").click()
    ref = start_rotation(page, "model-api-key")
    message = rotation_message(page, ref)
    expect(message).to_contain_text("distributing", timeout=WAIT)
    open_thread(page, ref)
    for consumer, owner in CONSUMERS:
        click_step(page, consumer, owner, "Distributed", "distributed", ref)
        click_step(page, consumer, owner, "Validated", "validated", ref)
    ready = thread_receipt(page, "every consumer validated the new credential")
    expect(ready).to_contain_text(
        f"{ref}: every consumer validated the new credential. @Ada Admin, press Switch to new "
        "credential"
    )
    expect_mentions(ready, "U0ADMIN")
    shot(page, "23-validated-receipt")

    click_admin_button(page, "Switch to new credential", "Switch", ref)
    switched = thread_receipt(page, f"switched {ref}")
    expect(switched).to_contain_text(f"@Ada Admin switched {ref}: the new credential is current")
    expect_mentions(switched, "U0ADMIN")
    # While observing, revoking is break-glass: no confirm dialog, the modal asks why.
    early = message.get_by_role("button", name="Revoke early (break-glass)…", exact=True)
    expect(early).to_be_visible(timeout=WAIT)
    early.click()
    expect(modal).to_contain_text(f"{ref} is not ready to revoke", timeout=WAIT)
    expect(page.locator("#confirm-layer")).to_be_hidden()
    shot(page, "24-break-glass-modal")
    page.locator("#modal-close").click()
    expect(page.locator("#modal-layer")).to_be_hidden(timeout=WAIT)

    for consumer, owner in CONSUMERS:
        click_step(page, consumer, owner, "Sign off", "signed off", ref)
    act_as(page, "U0ADMIN")
    expect(message).to_contain_text("ready to revoke", timeout=60_000)
    click_admin_button(page, "Revoke old credential", "Revoke", ref)
    revoked = thread_receipt(page, f"revoked the old credential of {ref}")
    expect(revoked).to_contain_text(
        f"@Ada Admin revoked the old credential of {ref}: the rotation is finished."
    )
    expect_mentions(revoked, "U0ADMIN")
    expect(message.locator(".b-header")).to_have_text(f"{ref} · rotated model-api-key")
    expect(replies(page).locator("button")).to_have_count(0)
    expect(page.locator("#thread-messages")).not_to_contain_text("signed-off")
    shot(page, "25-revoked-thread")
