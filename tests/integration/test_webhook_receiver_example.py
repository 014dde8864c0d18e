"""examples/webhook_receiver.py against what the webhook-hmac issuer mints and an env-file
target writes: during the overlap both secrets verify, after the trimmed list is written only
the new one does, and a bad, stale or missing signature never does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from adapters.env_file import EnvFileTarget
from adapters.webhook_hmac import WebhookHmacIssuer
from bot.domain.secret_material import SecretMaterial
from examples import webhook_receiver as receiver

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "webhook_receiver.py"
BODY = b'{"event": "invoice.paid", "id": "evt_1"}'


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def signed(secret: str, body: bytes = BODY, at: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if at is None else at
    return {"X-Webhook-Timestamp": str(ts), "X-Webhook-Signature": receiver.sign(secret, body, ts),
            "Content-Type": "application/json"}


@dataclass
class Rotated:
    old: str
    new: str
    overlap: SecretMaterial
    target: EnvFileTarget
    url: str


@pytest.fixture
def rotated(tmp_path: Path) -> Iterator[Rotated]:
    issuer = WebhookHmacIssuer()
    before = issuer.mint(None).material
    overlap = issuer.mint(before).material
    assert before is not None and overlap is not None
    env = tmp_path / "hooks.env"
    env.write_text("# the receiver's settings\nPORT=8080\n")
    target = EnvFileTarget(env, "WEBHOOK_SECRETS", field="secrets")
    target.write(overlap)
    server = receiver.make_server(receiver.SecretsSource(env))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Rotated(before.reveal()["secret"], overlap.reveal()["secret"], overlap, target,
                      f"http://127.0.0.1:{server.server_address[1]}/hook")
    finally:
        server.shutdown()
        server.server_close()


def test_the_env_file_holds_the_list_as_written(rotated: Rotated) -> None:
    read = rotated.target.read()
    assert read is not None
    assert json.loads(read.reveal()["secrets"]) == [rotated.new, rotated.old]
    assert "PORT=8080" in rotated.target.path.read_text()


def test_old_accepted_during_the_overlap_and_refused_once_trimmed(rotated: Rotated) -> None:
    assert post(rotated.url, BODY, signed(rotated.old)) == 200
    assert post(rotated.url, BODY, signed(rotated.new)) == 200

    trimmed = WebhookHmacIssuer().after_revoke(rotated.overlap)
    assert trimmed is not None
    rotated.target.write(trimmed)  # what rotabot does to each target after revocation

    assert post(rotated.url, BODY, signed(rotated.old)) == 401
    assert post(rotated.url, BODY, signed(rotated.new)) == 200


@pytest.mark.parametrize("case", ["tampered body", "wrong secret", "garbage", "missing",
                                  "stale", "future", "no timestamp"])
def test_bad_signatures_are_refused(rotated: Rotated, case: str) -> None:
    now = int(time.time())
    headers = {
        "tampered body": signed(rotated.new, BODY + b" "),
        "wrong secret": signed("whsec_" + "A" * 43),
        "garbage": {**signed(rotated.new), "X-Webhook-Signature": "v1=" + "0" * 64},
        "missing": {"X-Webhook-Timestamp": str(now)},
        "stale": signed(rotated.new, at=now - 600),
        "future": signed(rotated.new, at=now + 600),
        "no timestamp": {"X-Webhook-Signature": signed(rotated.new)["X-Webhook-Signature"]},
    }[case]
    assert post(rotated.url, BODY, headers) == 401


def test_verify_and_parse_helpers() -> None:
    ts = 1_700_000_000
    sig = receiver.sign("whsec_a", BODY, ts)
    assert receiver.verify(["whsec_b", "whsec_a"], BODY, str(ts), sig, now=ts + 10)
    assert not receiver.verify(["whsec_b"], BODY, str(ts), sig, now=ts + 10)
    assert not receiver.verify(["whsec_a"], BODY, "\uff11\uff17", sig, now=ts)  # fullwidth digits
    assert receiver.parse_secrets('{"secrets": "[\\"x\\"]"}') == ["x"]
    assert receiver.parse_secrets('{"secrets": ["x", "y"]}') == ["x", "y"]
    with pytest.raises(ValueError):
        receiver.parse_secrets("[]")
    assert receiver.dotenv_value('A=1\nexport K="[\\"a\\"]"\n', "K") == '["a"]'
    assert receiver.dotenv_value("K='[\"a\"]'\nK='[\"b\"]'\n", "K") == '["b"]'


def test_runs_as_a_script_with_the_list_in_the_environment(tmp_path: Path) -> None:
    secrets = ["whsec_new-" + os.urandom(4).hex(), "whsec_old-" + os.urandom(4).hex()]
    env = {**os.environ, "WEBHOOK_SECRETS": json.dumps(secrets)}
    proc = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        url = line.split()[-1] + "/hook"
        assert post(url, BODY, signed(secrets[1])) == 200
        assert post(url, BODY, signed(secrets[0])) == 200
        assert post(url, BODY, signed("whsec_other")) == 401
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    # The access log names requests, never a secret.
    assert not [s for s in secrets if s in err]
