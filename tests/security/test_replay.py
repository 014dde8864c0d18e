"""Replayed and repeated Slack requests through `rotabot serve`: taken once, whatever happens.

Issue 14, item 2: a captured signed `/rotate start X`, sent again within the five-minute
signature window after `/rotate cancel`, started a second rotation and minted a new credential.
Each test drives the real process with signed HTTP, records requests exactly as they went on
the wire and sends them again:

- identical (a replay: same timestamp, body and signature) -> 200 with an empty body, no
  listener runs (the signature is remembered in the database: bot/runtime/slack_replay.py);
- re-signed with another timestamp (Slack or a proxy sending the same action again) -> the
  action's trigger/view id was recorded with what it created, so nothing new is created and
  the answer names the first result (bot/domain/replay.py);
- to a restarted process on the same SQLite file, or to a second process on the same
  PostgreSQL database -> still ignored.

No test sleeps: after a request that must do nothing, each waits for whichever comes first,
the effect it must not have or the line saying it was ignored, and then asserts which it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from harness.serve import ADMIN, CHANNEL, ServeProcess, catalog_head, process_env
from security_harness import BotHandle, served_bot
from sqlalchemy import text

from adapters.file_store import FileStore
from handlers.ids import Action, View
from storage.engine import make_engine
from storage.migrate import upgrade

OWNER = "U0BOB"
SECRET = "cache-password"
STORE_PATH = "infra/cache"

# A `local` issuer mints a new value at start, into a file store that keeps every version.
CATALOG = catalog_head(observe="3s") + """\
stores:
  local: {{kind: file, path: {store}}}
secrets:
  cache-password:
    issuer: {{kind: local}}
    store: {{name: local, path: infra/cache}}
    consumers:
      cache-api: {{owner: U0BOB, lane: dev, reload: restart, rollback: undo deploy}}
"""

REPLAY_LINE = "ignored a replayed Slack request"


def catalog(tmp_path: Path) -> str:
    return CATALOG.format(store=tmp_path / "secrets")


def store_versions(tmp_path: Path) -> list[str]:
    """Every version the store ever held for the secret, retired ones included."""
    return [v.version for v in FileStore(tmp_path / "secrets").describe(STORE_PATH).versions]


@contextmanager
def recording(bot: BotHandle) -> Iterator[list[httpx.Request]]:
    """Every request Slack's side sends, as it went on the wire (headers and body)."""
    sent: list[httpx.Request] = []
    hooks = bot.slack.http.event_hooks["request"]
    hooks.append(sent.append)
    try:
        yield sent
    finally:
        hooks.remove(sent.append)


def send_again(
    bot: BotHandle, request: httpx.Request, *, to: str | None = None, resign: bool = False
) -> httpx.Response:
    """``request`` sent again: identical (a replay), or with the same body signed at another
    timestamp (a repeat the signature check cannot recognise), to ``to`` or the same bot."""
    stamp = request.headers["x-slack-request-timestamp"]
    headers = {"Content-Type": request.headers["content-type"],
               "X-Slack-Request-Timestamp": stamp,
               "X-Slack-Signature": request.headers["x-slack-signature"]}
    if resign:
        headers.update(bot.slack.sign(request.content.decode(), int(stamp) - 1))  # in window
        assert headers["X-Slack-Signature"] != request.headers["x-slack-signature"]
    url = (to or bot.url) + "/slack/events"
    return bot.http.post(url, content=request.content, headers=headers)


def said(bot: BotHandle, user: str, words: str) -> list[str]:
    return [e.text for e in bot.state.ephemerals_for(user) if words in e.text]


def first_of(bot: BotHandle, **outcomes: Callable[[], bool]) -> str:
    """The name of the first outcome that holds (checked in the order given)."""
    return bot.wait_for(lambda: next((name for name, holds in outcomes.items() if holds()),
                                     None))


def start_and_cancel(bot: BotHandle, tmp_path: Path) -> httpx.Request:
    """`/rotate start` (a credential is minted), then `/rotate cancel R-1`; returns the start
    request as it was sent."""
    with recording(bot) as sent:
        assert bot.slack.command(ADMIN, CHANNEL, f"start {SECRET}").status == 200
    (start,) = sent
    bot.wait_for(lambda: said(bot, ADMIN, "Started R-1"))
    bot.wait_for(lambda: len(store_versions(tmp_path)) == 1)
    assert bot.slack.command(ADMIN, CHANNEL, "cancel R-1").status == 200
    bot.wait_for(lambda: said(bot, ADMIN, "R-1: cancelled"))
    return start


def test_a_replayed_start_after_cancel_starts_nothing_and_mints_nothing(tmp_path: Path) -> None:
    """The issue's scenario, word for word."""
    with served_bot(tmp_path, catalog(tmp_path)) as bot:
        start = start_and_cancel(bot, tmp_path)
        versions = store_versions(tmp_path)

        replay = send_again(bot, start)
        assert (replay.status_code, replay.text) == (200, "")  # Slack must not retry it
        outcome = first_of(bot, second_rotation=lambda: bot.count("rotations") > 1,
                           ignored=lambda: REPLAY_LINE + " (command)" in bot.log_text())
        assert outcome == "ignored"
        assert bot.count("rotations") == 1
        assert store_versions(tmp_path) == versions  # no new credential was minted
        assert bot.rows("rotations", "id, phase") == [(1, "cancelled")]
        assert len(said(bot, ADMIN, "Started")) == 1  # and nobody was told of a start


def test_a_start_sent_again_under_a_new_signature_answers_with_the_first_rotation(
    tmp_path: Path,
) -> None:
    """Past the signature check (another timestamp), the trigger id still names the action."""
    with served_bot(tmp_path, catalog(tmp_path)) as bot:
        start = start_and_cancel(bot, tmp_path)
        versions = store_versions(tmp_path)

        again = send_again(bot, start, resign=True)
        assert again.status_code == 200
        outcome = first_of(bot, second_rotation=lambda: bot.count("rotations") > 1,
                           answered=lambda: len(said(bot, ADMIN, "Started R-1")) == 2)
        assert outcome == "answered"
        assert bot.count("rotations") == 1
        assert store_versions(tmp_path) == versions
        assert "cancelled" in said(bot, ADMIN, "Started R-1")[-1]  # what became of it


def report_a_problem(bot: BotHandle) -> httpx.Request:
    """Start a rotation, press "Report a problem" on the owner's prompt and submit the
    modal; returns the submission as it was sent, once its alert is stored."""
    assert bot.slack.command(ADMIN, CHANNEL, f"start {SECRET}").status == 200
    prompt = bot.wait_for(lambda: next(
        (m for m in bot.state.channel_messages(CHANNEL) + [
            t for top in bot.state.channel_messages(CHANNEL)
            for t in bot.state.thread(CHANNEL, top.ts)]
         if any(e.get("action_id") == Action.REPORT_PROBLEM.value
                for b in m.blocks for e in b.get("elements", []))), None))
    assert bot.slack.click(OWNER, channel=CHANNEL, message_ts=prompt.ts,
                           action_id=Action.REPORT_PROBLEM.value).status == 200
    modal = bot.wait_for(lambda: next(
        (v for v in bot.state.open_views(OWNER)
         if v.view.get("callback_id") == View.REPORT_PROBLEM.value), None))
    with recording(bot) as sent:
        assert bot.slack.submit_view(OWNER, modal.id, {"what": "fails with 401"}).ok
    (submission,) = sent
    bot.wait_for(lambda: bot.count("alerts") == 1)
    return submission


def test_a_replayed_report_a_problem_adds_one_alert(tmp_path: Path) -> None:
    with served_bot(tmp_path, catalog(tmp_path)) as bot:
        submission = report_a_problem(bot)

        replay = send_again(bot, submission)
        assert (replay.status_code, replay.text) == (200, "")
        outcome = first_of(bot, second_alert=lambda: bot.count("alerts") > 1,
                           ignored=lambda: REPLAY_LINE + " (view_submission)" in bot.log_text())
        assert outcome == "ignored"
        assert bot.rows("alerts", "id, consumer") == [(1, "cache-api")]


def test_a_report_a_problem_sent_again_under_a_new_signature_adds_one_alert(
    tmp_path: Path,
) -> None:
    with served_bot(tmp_path, catalog(tmp_path)) as bot:
        submission = report_a_problem(bot)

        again = send_again(bot, submission, resign=True)
        assert again.status_code == 200
        outcome = first_of(
            bot, second_alert=lambda: bot.count("alerts") > 1,
            answered=lambda: "a repeated report on cache-api was answered with A-1"
            in bot.log_text())
        assert outcome == "answered"
        assert bot.rows("alerts", "id, consumer") == [(1, "cache-api")]


@contextmanager
def second_process(bot: BotHandle, tmp_path: Path, name: str) -> Iterator[ServeProcess]:
    """Another `rotabot serve` on the same environment (database, catalog, Slack)."""
    other = ServeProcess(process_env(bot.extras["env"]), tmp_path, tmp_path / f"{name}.log",
                         name=name)
    try:
        yield other.start()
    finally:
        other.stop()


def test_a_replay_reaching_the_restarted_bot_is_ignored(tmp_path: Path) -> None:
    with served_bot(tmp_path, catalog(tmp_path)) as bot:
        start = start_and_cancel(bot, tmp_path)
        versions = store_versions(tmp_path)
        assert bot.process is not None
        bot.process.terminate()  # the process that took the request is gone ...
        bot.process.wait(15)
        with second_process(bot, tmp_path, "restarted") as restarted:  # ... on the same file
            replay = send_again(bot, start, to=restarted.url)
            assert (replay.status_code, replay.text) == (200, "")
            outcome = first_of(bot, second_rotation=lambda: bot.count("rotations") > 1,
                               ignored=lambda: REPLAY_LINE in restarted.log_text())
            assert outcome == "ignored"
            assert bot.count("rotations") == 1
            assert store_versions(tmp_path) == versions


@pytest.mark.postgres
def test_a_replay_reaching_another_replica_on_postgres_is_ignored(
    tmp_path: Path, postgres_url: str
) -> None:
    upgrade(postgres_url)  # `rotabot serve` does not migrate PostgreSQL itself
    engine = make_engine(postgres_url)

    def rotations() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("select count(*) from rotations")).scalar_one())

    try:
        with served_bot(tmp_path, catalog(tmp_path), env={"DATABASE_URL": postgres_url}) as bot, \
                second_process(bot, tmp_path, "replica") as replica:
            start = start_and_cancel(bot, tmp_path)
            versions = store_versions(tmp_path)

            replay = send_again(bot, start, to=replica.url)  # the balancer picked the other
            assert (replay.status_code, replay.text) == (200, "")
            outcome = first_of(bot, second_rotation=lambda: rotations() > 1,
                               ignored=lambda: REPLAY_LINE in replica.log_text())
            assert outcome == "ignored"
            assert rotations() == 1
            assert store_versions(tmp_path) == versions
    finally:
        engine.dispose()
