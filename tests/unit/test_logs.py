"""JSON log lines: rotation context on every line about a rotation, never a secret value."""

from __future__ import annotations

import json
import logging
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
from fakes import FakeBackends, FakeDatabase, FakeDirectory

from adapters.file_store import FileStore
from adapters.local_issuer import LocalIssuer
from bot.catalog import parse_catalog
from bot.domain.alert_intake import AlertReport
from bot.domain.clock import FixedClock
from bot.domain.lifecycle import StepState
from bot.domain.log_context import rotation_context
from bot.domain.rotation import ConsumerPlan, Rotation
from bot.domain.secret_material import SecretMaterial
from bot.runtime.logs import JsonFormatter
from bot.services.alerts import AlertService
from bot.services.rotations import RotationService

CANARY = "canary-" + secrets.token_hex(8)
ADMIN = "U0SECOPS"
CATALOG = """\
version: 1
defaults:
  channel: C0ROTATE
  admins: [U0SECOPS]
  lanes: [dev, prod]
  overlap: 24h
  observe: 2h
stores:
  files: {kind: file, path: /unused}
secrets:
  model-api-key:
    issuer: {kind: manual}
    store: {name: files, path: ai/model-api-key}
    consumers:
      retriever: {owner: U0BOB, lane: dev, reload: restart}
      inference-api: {owner: U0ALICE, lane: prod, reload: hot}
"""


def formatted(record: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter().format(record)
    assert CANARY not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


def record(msg: object, *args: object, exc: BaseException | None = None,
           **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("rotabot.test", logging.WARNING, __file__, 1, msg, args,
                            (type(exc), exc, None) if exc is not None else None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_context_fields_ride_on_the_line() -> None:
    rotation = Rotation.begin(
        secret="model-api-key", lanes=("dev",),
        consumers=[ConsumerPlan(name="retriever", lane="dev", owner="U0BOB", reload="hot")],
        overlap=timedelta(hours=1), observe=timedelta(hours=1), store_path="ai/model-api-key",
        actor=ADMIN, now=FixedClock().now(),
    )
    rotation.id = 42
    line = formatted(record("step done", **rotation_context(rotation, consumer="retriever",
                                                              lane="dev")))
    assert line["rotation_id"] == 42 and line["rotation"] == "R-42"
    assert line["secret"] == "model-api-key"
    assert line["consumer"] == "retriever" and line["lane"] == "dev"
    assert line["message"] == "step done"


def test_secret_material_as_argument_or_context_is_redacted() -> None:
    material = SecretMaterial({"api_key": CANARY})
    line = formatted(record("minted %s", material, secret=material))
    assert "<redacted>" in str(line["message"]) and "<redacted>" in str(line["secret"])


def test_exception_text_never_reaches_the_line() -> None:
    exc = RuntimeError(f"AUTH failed for password {CANARY}")
    line = formatted(record("store call failed: %s", exc))
    assert line["message"] == "store call failed: RuntimeError"
    # Raised and logged with exc_info (log.exception): the type only.
    try:
        raise ValueError(f"body echoed {CANARY}") from exc
    except ValueError as raised:
        line = formatted(record("failed", exc=raised))
    assert line["exception"] == "ValueError"
    # A mapping of arguments and an exception as the message itself.
    assert formatted(record("%(e)s", {"e": exc}))["message"] == "RuntimeError"
    assert formatted(record(exc))["message"] == "RuntimeError"
    assert formatted(record("context", consumer=exc))["consumer"] == "RuntimeError"


def test_configured_root_handler_writes_safe_json(capfd: pytest.CaptureFixture[str]) -> None:
    from bot.runtime.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        logging.getLogger("rotabot.test").error(
            "issuer said %s", ConnectionError(f"redis://app:{CANARY}@cache"),
            extra={"rotation_id": 7, "secret": "cache-password"},
        )
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    err = capfd.readouterr().err
    assert CANARY not in err
    line = json.loads(err.strip().splitlines()[-1])
    assert line["message"] == "issuer said ConnectionError"
    assert line["rotation_id"] == 7 and line["secret"] == "cache-password"


def test_botocore_request_bodies_stay_out_of_a_debug_log(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # botocore logs PutSecretValue bodies (SecretString) at DEBUG on these two loggers.
    from bot.runtime.logs import configure_logging

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("DEBUG")
        for name in ("botocore.endpoint", "botocore.parsers"):
            logging.getLogger(name).debug("Making request: {'SecretString': '%s'}", CANARY)
        logging.getLogger("rotabot.test").debug("still verbose")
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    err = capfd.readouterr().err
    assert "still verbose" in err
    assert CANARY not in err


# --- call sites --------------------------------------------------------------------------


def make_service(tmp_path: Path) -> tuple[RotationService, FileStore]:
    files = FileStore(tmp_path / "store")
    files.put("ai/model-api-key", SecretMaterial({"api_key": CANARY}))
    service = RotationService(
        catalog=parse_catalog(CATALOG),
        uow_factory=FakeDatabase().uow,
        backends=FakeBackends(files, LocalIssuer()),
        clock=FixedClock(),
        directory=FakeDirectory({}),
    )
    return service, files


def lines_of(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [formatted(r) for r in caplog.records if r.name.startswith("rotabot")]


def test_alert_and_rollback_lines_carry_rotation_secret_consumer_and_lane(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, _ = make_service(tmp_path)
    rotation = service.start("model-api-key", actor=ADMIN)
    assert rotation.id is not None
    service.step(rotation.id, "retriever", StepState.DISTRIBUTED, actor="U0BOB")
    caplog.set_level(logging.INFO)

    AlertService(service).ingest(
        AlertReport(consumer="retriever", status_code=401, message=f"bad key {CANARY}")
    )
    service.rollback(rotation.id, actor=ADMIN)

    lines = lines_of(caplog)
    alert = next(line for line in lines if str(line["message"]).startswith("alert A-"))
    assert (alert["rotation_id"], alert["secret"], alert["consumer"], alert["lane"]) == (
        rotation.id, "model-api-key", "retriever", "dev")
    rolled = next(line for line in lines if "rolled back" in str(line["message"]))
    assert (rolled["rotation_id"], rolled["secret"]) == (rotation.id, "model-api-key")


def test_a_failed_step_logs_the_rotation_context(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service, files = make_service(tmp_path)
    rotation = service.start("model-api-key", actor=ADMIN)
    assert rotation.id is not None
    for name, owner in (("retriever", "U0BOB"), ("inference-api", "U0ALICE")):
        service.step(rotation.id, name, StepState.DISTRIBUTED, actor=owner)
        service.step(rotation.id, name, StepState.VALIDATED, actor=owner)
    # Someone destroyed the new version behind the bot's back: the switch fails.
    new_version = service.get(rotation.id).new_version
    assert new_version is not None
    files.retire("ai/model-api-key", new_version)
    caplog.set_level(logging.INFO)
    service.switch(rotation.id, actor=ADMIN)
    failed = next(line for line in lines_of(caplog) if "failed" in str(line["message"]))
    assert failed["rotation_id"] == rotation.id and failed["secret"] == "model-api-key"
    assert failed["rotation"] == f"R-{rotation.id}"
