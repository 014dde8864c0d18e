"""The signed HTTP reload hook against a receiver on loopback that records, answers, redirects
and hangs; signatures are checked on the receiver side with ``verify_signature``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from harness.loopback import Loopback, QuietHandler
from servers import free_port

from adapters.reload_hook import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HttpReloadHook,
    sign,
    verify_signature,
)
from bot.catalog.model import ReloadHookSpec
from bot.domain.credentials import ReloadFailed
from bot.services.ports import ReloadHook

KEY = b"whsec-CANARY-51e0aa-reload-signing-key"
CANARY_VALUE = "sk-CANARY-9b27c1-the-new-credential"  # what the target now holds
# Error answers echo this, as a careless consumer echoes what it was sent or holds.
CANARY_BODY = "db-password-CANARY-d41f07-in-an-error-page"
EVENT = {
    "secret": "payments/stripe-key",
    "rotation": "R-42",
    "lane": "prod",
    "target": "env-file /srv/app/.env STRIPE_KEY",
    "version": "7",
}


@dataclass
class Answer:
    """What the receiver does with the next request instead of answering 204."""

    status: int = 204
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # answer nothing until the test releases it


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.arrived = threading.Event()  # set when any request has been read
        self.release = threading.Event()  # lets hanging handlers finish

    def answer_next(self, *answers: Answer) -> None:
        with self.lock:
            self.answers.extend(answers)


def _handler(receiver: Receiver) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            with receiver.lock:
                receiver.seen.append(Seen(self.command, self.path, dict(self.headers), raw))
                answer = receiver.answers.pop(0) if receiver.answers else Answer()
            receiver.arrived.set()
            if answer.hang:
                receiver.release.wait(10)
                return
            self.reply(answer.status, answer.body, headers=answer.headers,
                       content_type="text/plain")

        do_POST = _serve
        do_PUT = _serve

    return Handler


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    state = Receiver()
    with Loopback(_handler(state), before_stop=state.release.set) as server:
        yield state, server.url


def make(url: str, sleeps: list[float] | None = None, **kwargs: Any) -> HttpReloadHook:
    record = sleeps if sleeps is not None else []
    return HttpReloadHook(url, sleep=record.append, **kwargs)


def assert_clean(text: str) -> None:
    for canary in (KEY.decode(), CANARY_VALUE, CANARY_BODY, "token=", "hunter2"):
        assert canary not in text


def verified(seen: Seen, key: bytes = KEY, *, now: float | None = None) -> bool:
    return verify_signature(
        key, seen.headers[TIMESTAMP_HEADER], seen.body, seen.headers[SIGNATURE_HEADER],
        now=time.time() if now is None else now,
    )


# --- the request ------------------------------------------------------------------------


def test_a_signed_call_carries_the_event_and_verifies_on_the_receiver(
    receiver: tuple[Receiver, str],
) -> None:
    state, base = receiver
    state.answer_next(Answer(202))
    hook = make(base + "/hooks/restart", signing_key=KEY)
    assert isinstance(hook, ReloadHook)

    line = hook.call(EVENT)

    assert line == f"POST {base}/hooks/restart -> 202"
    [seen] = state.seen
    assert (seen.method, seen.path) == ("POST", "/hooks/restart")
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["User-Agent"] == "rotabot-reload-hook"
    assert verified(seen)
    stamp = seen.headers[TIMESTAMP_HEADER]
    assert seen.headers[SIGNATURE_HEADER] == sign(KEY, stamp, seen.body)
    assert seen.headers[SIGNATURE_HEADER].startswith("v1=")
    body = json.loads(seen.body)
    assert body == {"type": "rotabot.reload", **EVENT, "sent_at": body["sent_at"]}
    sent_at = datetime.strptime(body["sent_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert int(sent_at.timestamp()) == int(stamp)
    assert abs(int(stamp) - time.time()) < 60
    # References only: neither the credential nor the signing key travels.
    assert_clean(seen.body.decode())
    assert_clean(json.dumps(seen.headers).replace(seen.headers[SIGNATURE_HEADER], ""))


def test_the_signature_fails_with_a_wrong_key_an_altered_body_or_a_stale_timestamp(
    receiver: tuple[Receiver, str],
) -> None:
    state, base = receiver
    make(base + "/hook", signing_key=KEY).call(EVENT)
    [seen] = state.seen
    stamp, signature = seen.headers[TIMESTAMP_HEADER], seen.headers[SIGNATURE_HEADER]
    sent = int(stamp)

    assert verify_signature(KEY, stamp, seen.body, signature, now=sent)
    assert not verify_signature(b"another-key", stamp, seen.body, signature, now=sent)
    altered = seen.body.replace(b'"version":"7"', b'"version":"8"')
    assert altered != seen.body
    assert not verify_signature(KEY, stamp, altered, signature, now=sent)
    # Within the tolerance either way; beyond it, stale (or from a clock far ahead).
    assert verify_signature(KEY, stamp, seen.body, signature, now=sent + 300)
    assert not verify_signature(KEY, stamp, seen.body, signature, now=sent + 301)
    assert not verify_signature(KEY, stamp, seen.body, signature, now=sent - 301)
    assert not verify_signature(KEY, stamp, seen.body, signature, now=sent + 60, tolerance=30)
    # A timestamp moved to look fresh breaks the signature, since it is signed too.
    assert not verify_signature(KEY, str(sent + 1000), seen.body, signature, now=sent + 1000)
    # Malformed headers are refused, not raised on.
    assert not verify_signature(KEY, "soon", seen.body, signature, now=sent)
    assert not verify_signature(KEY, "9" * 5000, seen.body, signature, now=sent)
    assert not verify_signature(KEY, stamp, seen.body, "v1=" + "0" * 64, now=sent)
    assert not verify_signature(KEY, stamp, seen.body, signature.removeprefix("v1="), now=sent)
    assert not verify_signature(KEY, stamp, seen.body, "v1=\u00e9", now=sent)
    # A list of signatures (a receiver checking across a key change) needs one match.
    assert verify_signature(KEY, stamp, seen.body, f"v1={'ab' * 32}, {signature}", now=sent)


def test_without_a_signing_key_the_call_is_unsigned(receiver: tuple[Receiver, str]) -> None:
    state, base = receiver
    hook = make(base + "/hook")
    assert hook.signed is False

    assert hook.call(EVENT) == f"POST {base}/hook -> 204"

    [seen] = state.seen
    assert SIGNATURE_HEADER not in seen.headers
    assert TIMESTAMP_HEADER not in seen.headers
    assert seen.headers[IDEMPOTENCY_HEADER]
    assert json.loads(seen.body)["secret"] == EVENT["secret"]


def test_the_idempotency_key_is_stable_per_reload_and_differs_between_reloads(
    receiver: tuple[Receiver, str],
) -> None:
    state, base = receiver
    hook = make(base + "/hook", signing_key=KEY)
    hook.call(EVENT)
    hook.call(dict(EVENT))
    hook.call({**EVENT, "version": "8"})
    hook.call({**EVENT, "target": "vault-kv2 apps/payments"})

    first, repeat, next_version, other_target = (s.headers[IDEMPOTENCY_HEADER] for s in state.seen)
    assert first == repeat
    assert len({first, next_version, other_target}) == 3
    assert len(first) == 64 and all(c in "0123456789abcdef" for c in first)


def test_put_and_the_event_cannot_override_type(receiver: tuple[Receiver, str]) -> None:
    state, base = receiver
    state.answer_next(Answer(200))
    hook = make(base + "/deploy", method="put", signing_key=KEY)
    assert hook.where == f"PUT {base}/deploy"

    assert hook.call({**EVENT, "type": "something.else"}) == f"PUT {base}/deploy -> 200"

    [seen] = state.seen
    assert seen.method == "PUT"
    assert json.loads(seen.body)["type"] == "rotabot.reload"
    assert verified(seen)


def test_where_and_results_drop_the_query_string_and_user_info(
    receiver: tuple[Receiver, str],
) -> None:
    state, base = receiver
    url = base.replace("http://", "http://deployer:hunter2@") + "/hooks/restart?token=abc123"
    hook = make(url)

    assert hook.where == f"POST {base}/hooks/restart"
    line = hook.call(EVENT)
    assert line == f"POST {base}/hooks/restart -> 204"
    assert_clean(line)
    assert state.seen[0].path == "/hooks/restart?token=abc123"  # still sent, just not shown

    state.answer_next(Answer(500, CANARY_BODY))
    with pytest.raises(ReloadFailed) as failed:
        hook.call(EVENT)
    assert_clean(str(failed.value))
    assert "abc123" not in str(failed.value)


# --- failures ---------------------------------------------------------------------------


def test_a_500_fails_with_the_status_and_never_the_response_body(
    receiver: tuple[Receiver, str],
) -> None:
    state, base = receiver
    state.answer_next(Answer(500, CANARY_BODY, headers={"X-Debug": CANARY_BODY}))
    sleeps: list[float] = []
    hook = make(base + "/hooks/restart", sleeps, signing_key=KEY)

    with pytest.raises(ReloadFailed) as failed:
        hook.call(EVENT)

    message = str(failed.value)
    assert f"POST {base}/hooks/restart" in message
    assert "HTTP 500" in message
    assert_clean(message)
    assert failed.value.__cause__ is None and failed.value.__context__ is None
    assert len(state.seen) == 1  # a 500 may have restarted something: no retry
    assert sleeps == []


def test_a_redirect_is_a_failure_and_is_not_followed(receiver: tuple[Receiver, str]) -> None:
    state, base = receiver
    state.answer_next(Answer(302, headers={"Location": base + "/elsewhere"}))
    hook = make(base + "/hook", signing_key=KEY)

    with pytest.raises(ReloadFailed) as failed:
        hook.call(EVENT)

    assert "HTTP 302" in str(failed.value)
    assert [s.path for s in state.seen] == ["/hook"]


def test_a_timeout_fails_naming_the_error_class_and_is_not_retried(
    receiver: tuple[Receiver, str],
) -> None:
    state, base = receiver
    state.answer_next(Answer(hang=True))
    sleeps: list[float] = []
    hook = make(base + "/hook", sleeps, signing_key=KEY, timeout=0.3)

    with pytest.raises(ReloadFailed) as failed:
        hook.call(EVENT)

    message = str(failed.value)
    assert "ReadTimeout" in message
    assert f"POST {base}/hook" in message
    assert failed.value.__cause__ is None and failed.value.__context__ is None
    assert state.arrived.wait(5)
    # The hook may be restarting already: a second call could restart it twice.
    assert len(state.seen) == 1
    assert sleeps == []


def test_a_503_is_retried_once_and_then_succeeds(receiver: tuple[Receiver, str]) -> None:
    state, base = receiver
    state.answer_next(Answer(503, CANARY_BODY), Answer(200))
    sleeps: list[float] = []
    hook = make(base + "/hook", sleeps, signing_key=KEY)

    assert hook.call(EVENT) == f"POST {base}/hook -> 200"

    first, second = state.seen
    assert first.headers[IDEMPOTENCY_HEADER] == second.headers[IDEMPOTENCY_HEADER]
    assert verified(first) and verified(second)
    assert len(sleeps) == 1


def test_a_503_twice_fails_after_two_attempts(receiver: tuple[Receiver, str]) -> None:
    state, base = receiver
    state.answer_next(Answer(503, CANARY_BODY), Answer(503, CANARY_BODY), Answer(200))
    hook = make(base + "/hook", signing_key=KEY)

    with pytest.raises(ReloadFailed) as failed:
        hook.call(EVENT)

    assert "HTTP 503" in str(failed.value)
    assert "2 attempts" in str(failed.value)
    assert_clean(str(failed.value))
    assert len(state.seen) == 2


def test_connection_refused_fails_after_one_retry() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    sleeps: list[float] = []
    hook = make(url, sleeps, signing_key=KEY)

    with pytest.raises(ReloadFailed) as failed:
        hook.call(EVENT)

    message = str(failed.value)
    assert "ConnectError" in message
    assert url in message and "2 attempts" in message
    assert len(sleeps) == 1
    assert_clean(message)


# --- from the catalog -------------------------------------------------------------------


def test_from_spec_reads_the_signing_key_from_the_environment(
    receiver: tuple[Receiver, str],
) -> None:
    state, base = receiver
    spec = ReloadHookSpec.model_validate(
        {"url": base + "/hook", "method": "PUT", "signing_key_env": "HOOK_KEY", "timeout": "5s"}
    )
    hook = HttpReloadHook.from_spec(spec, {"HOOK_KEY": KEY.decode()})
    assert hook.where == f"PUT {base}/hook"

    assert hook.call(EVENT) == f"PUT {base}/hook -> 204"
    assert verified(state.seen[0])


def test_from_spec_without_the_signing_key_variable_fails_naming_it() -> None:
    spec = ReloadHookSpec.model_validate(
        {"url": "https://deploy.example/hooks/restart", "signing_key_env": "HOOK_KEY"}
    )
    for env in ({}, {"HOOK_KEY": ""}):
        with pytest.raises(ReloadFailed, match="HOOK_KEY") as failed:
            HttpReloadHook.from_spec(spec, env)
        assert "https://deploy.example/hooks/restart" in str(failed.value)


def test_from_spec_without_signing_is_unsigned() -> None:
    spec = ReloadHookSpec.model_validate({"url": "https://deploy.example/hooks/restart"})
    hook = HttpReloadHook.from_spec(spec, {})
    assert hook.signed is False
    assert hook.where == "POST https://deploy.example/hooks/restart"


def test_the_constructor_refuses_what_it_cannot_send() -> None:
    with pytest.raises(ValueError, match="POST or PUT"):
        HttpReloadHook("https://deploy.example/hook", method="GET")
    with pytest.raises(ValueError, match="http"):
        HttpReloadHook("ftp://deploy.example/hook")
    with pytest.raises(ValueError, match="empty signing key"):
        HttpReloadHook("https://deploy.example/hook", signing_key=b"")
