"""Alert intake rules without a server: signatures, payloads, Alertmanager, flood and replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.alert_context import describe
from bot.domain.alert_intake import (
    MAX_ALERTMANAGER_ALERTS,
    MAX_JSON_DEPTH,
    DeliveryLog,
    RateLimiter,
    SchemaError,
    SignatureError,
    check_delivery_id,
    json_depth_exceeds,
    parse_body,
    rate_limit_key,
    retry_after_header,
    sign,
    verify_signature,
)
from bot.domain.lifecycle import Phase
from bot.domain.rotation import ConsumerProgress, Rotation

SECRET = "alert-hmac-key"
NOW = 1_790_000_000
BODY = b'{"consumer":"inference-api","status_code":401}'


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def verify(
    *,
    body: bytes = BODY,
    ts: str | None = str(NOW),
    sig: str | None = None,
    now: float = NOW,
    secrets: str | list[str] = SECRET,
) -> None:
    verify_signature(
        secrets,
        timestamp=ts,
        signature=sign(SECRET, NOW, BODY) if sig is None else sig,
        body=body,
        now=now,
    )


# --- signatures ------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, NOW, BODY) == f"v1={expected}"
    verify()  # accepted


@pytest.mark.parametrize("skew", [-300, 300])
def test_timestamp_within_five_minutes_either_way_is_accepted(skew: int) -> None:
    verify(now=NOW + skew)


@pytest.mark.parametrize("skew", [-301, 301, 86_400])
def test_timestamp_outside_five_minutes_is_refused(skew: int) -> None:
    with pytest.raises(SignatureError, match="5 minutes"):
        verify(now=NOW + skew)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"body": BODY + b" "}, "does not match"),
        ({"secrets": "another-key"}, "does not match"),
        ({"sig": ""}, "missing X-Rotabot-Signature"),
        ({"sig": "sha256=abc"}, "v1=<hex>"),
        ({"ts": None}, "missing X-Rotabot-Timestamp"),
        ({"ts": "2026-11-25T10:00:00Z"}, "unix seconds"),
        ({"ts": "-5"}, "unix seconds"),
        ({"secrets": []}, "no secret configured"),
    ],
)
def test_bad_signatures_are_refused_with_a_reason(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(SignatureError, match=words):
        verify(**kwargs)  # type: ignore[arg-type]


def test_a_signature_made_for_another_timestamp_does_not_verify() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify(ts=str(NOW + 1), now=NOW)


def test_several_signatures_and_several_secrets_allow_moving_to_a_new_key() -> None:
    both = f"{sign('old-key', NOW, BODY)}, {sign(SECRET, NOW, BODY)}"
    verify(sig=both)
    verify(sig=sign("old-key", NOW, BODY), secrets=["old-key", SECRET])


def test_verification_answers_the_key_that_signed() -> None:
    # The flood limit is keyed on it (with the address), so it must be the matching one.
    assert verify_signature(["old-key", SECRET], timestamp=str(NOW),
                            signature=sign(SECRET, NOW, BODY), body=BODY, now=NOW) == SECRET
    assert verify_signature(["old-key", SECRET], timestamp=str(NOW),
                            signature=sign("old-key", NOW, BODY), body=BODY, now=NOW) == "old-key"


def test_signature_error_never_contains_the_secret_or_the_signature() -> None:
    with pytest.raises(SignatureError) as err:
        verify(body=b"{}")
    assert SECRET not in str(err.value)
    assert sign(SECRET, NOW, BODY)[3:] not in str(err.value)


# --- payloads --------------------------------------------------------------------------


def test_a_full_report_parses() -> None:
    body = json.dumps(
        {
            "consumer": "inference-api",
            "secret": "model-api-key",
            "lane": "prod",
            "status_code": 401,
            "error": "invalid_api_key",
            "message": "Incorrect API key provided",
            "occurred_at": "2026-11-25T09:04:00",
            "source": "inference-sidecar",
        }
    ).encode()
    parsed = parse_body(body)
    assert not parsed.alertmanager
    (r,) = parsed.reports
    assert (r.consumer, r.secret, r.lane, r.status_code) == (
        "inference-api", "model-api-key", "prod", 401,
    )
    assert r.occurred_at == datetime(2026, 11, 25, 9, 4, tzinfo=UTC)  # no zone: UTC
    assert parsed.source == "inference-sidecar"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b"{}", "consumer"),
        (b'{"consumer": ""}', "consumer"),
        (b'{"consumer": "has space"}', "consumer"),
        (b'{"consumer": "a", "status_code": "abc"}', "status_code"),
        (b'{"consumer": "a", "status_code": 99}', "status_code"),
        (b'{"consumer": "a", "occurred_at": "yesterday"}', "occurred_at"),
        (b'{"consumer": "a", "stauts_code": 401}', "stauts_code"),
        (b'{"consumer": "a", "message": ' + json.dumps("x" * 8001).encode() + b"}", "message"),
        (b'{"consumer": 5}', "consumer"),
    ],
)
def test_schema_errors_name_the_field(body: bytes, field: str) -> None:
    with pytest.raises(SchemaError) as err:
        parse_body(body)
    assert err.value.field == field


def test_a_deeply_nested_body_is_a_schema_error_naming_the_depth() -> None:
    # 30,000 levels exhausted json.loads' recursion: a RecursionError, a 500 from the route.
    for body in (b"[" * 30_000, b'{"consumer": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
                 b'{"a":' * (MAX_JSON_DEPTH + 1) + b"1" + b"}" * (MAX_JSON_DEPTH + 1)):
        with pytest.raises(SchemaError) as err:
            parse_body(body)
        assert err.value.field == "body"
        assert f"deeper than {MAX_JSON_DEPTH} levels" in err.value.problem


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert not json_depth_exceeds(b'{"a": "' + b"[{" * 100 + b'"}', 2)
    assert not json_depth_exceeds(b'{"a": "\\", "b": [1]}', 2)  # an escaped backslash ends
    assert json_depth_exceeds(b'{"a": "\"[[[", "b": [[1]]}', 2)  # an escaped quote does not
    assert not json_depth_exceeds(b"[" * 3 + b"]" * 3, 3)
    assert json_depth_exceeds(b"[" * 4, 3)
    assert not json_depth_exceeds(b'"' + b'\"' * 10_000, 1)  # an unterminated string
    # The documented payloads fit well inside the limit.
    assert not json_depth_exceeds(alertmanager({"labels": {"consumer": "a"}}), 4)


def test_schema_error_does_not_repeat_the_value() -> None:
    with pytest.raises(SchemaError) as err:
        parse_body(b'{"consumer": "a", "status_code": "sk-live-0123456789"}')
    assert "sk-live" not in str(err.value)


def alertmanager(*alerts: dict[str, object], status: str = "firing") -> bytes:
    return json.dumps(
        {
            "version": "4",
            "groupKey": "{}:{alertname=\"AuthFailures\"}",
            "status": status,
            "receiver": "rotabot",
            "alerts": list(alerts),
        }
    ).encode()


def test_alertmanager_firing_alerts_become_reports_and_resolved_ones_are_counted() -> None:
    body = alertmanager(
        {
            "status": "firing",
            "labels": {
                "alertname": "ModelKeyRejected",
                "consumer": "inference-api",
                "secret": "model-api-key",
                "status_code": "401",
            },
            "annotations": {"summary": "invalid_api_key from the provider"},
            "startsAt": "2026-11-25T09:04:00Z",
        },
        {"status": "resolved", "labels": {"consumer": "nightly-ingest"}},
        {"labels": {"consumer": "retriever", "error": "WRONGPASS"},
         "startsAt": "0001-01-01T00:00:00Z"},
    )
    parsed = parse_body(body)
    assert parsed.alertmanager and parsed.resolved_ignored == 1
    first, second = parsed.reports
    assert (first.consumer, first.secret, first.status_code) == ("inference-api",
                                                                 "model-api-key", 401)
    assert first.message is not None and "invalid_api_key" in first.message
    assert first.occurred_at == datetime(2026, 11, 25, 9, 4, tzinfo=UTC)
    assert first.source == "alertmanager/rotabot"
    assert (second.consumer, second.error, second.occurred_at) == ("retriever", "WRONGPASS", None)


def test_alertmanager_errors_name_the_alert_and_label() -> None:
    with pytest.raises(SchemaError) as err:
        parse_body(alertmanager({"labels": {"consumer": "a"}}, {"labels": {"secret": "b"}}))
    assert err.value.field == "alerts[1].labels.consumer"
    with pytest.raises(SchemaError) as err:
        parse_body(alertmanager({"labels": {"consumer": "a", "status_code": "oops"}}))
    assert err.value.field == "alerts[0].labels.status_code"
    too_many: list[dict[str, object]] = [{"labels": {"consumer": "a"}}] * (
        MAX_ALERTMANAGER_ALERTS + 1
    )
    with pytest.raises(SchemaError) as err:
        parse_body(alertmanager(*too_many))
    assert err.value.field == "alerts"


def test_a_resolved_alertmanager_group_yields_no_report() -> None:
    parsed = parse_body(alertmanager({"labels": {"consumer": "a"}}, status="resolved"))
    assert parsed.reports == () and parsed.resolved_ignored == 1


# --- flood control ---------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_says_how_long_to_wait() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.take("sidecar") for _ in range(3)] == [None, None, None]
    wait = limiter.take("sidecar")
    assert wait is not None and wait == pytest.approx(0.5)
    assert retry_after_header(wait) == "1"
    assert limiter.take("other-source") is None  # buckets are per source
    clock.t += 0.5
    assert limiter.take("sidecar") is None
    assert limiter.take("sidecar") is not None
    clock.t += 60  # refills up to the burst, not beyond
    assert [limiter.take("sidecar") for _ in range(4)].count(None) == 3


def test_a_batch_is_charged_per_report_but_never_more_than_the_burst() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=1.0, burst=10, clock=clock)
    assert limiter.take("am", cost=4) is None
    assert limiter.take("am", cost=7) == pytest.approx(1.0)
    clock.t += 100
    assert limiter.take("am", cost=50) is None  # a group bigger than the bucket still passes


def test_the_rate_limit_key_is_the_address_and_the_key_never_the_body() -> None:
    a = rate_limit_key("10.0.0.5", SECRET)
    assert a == rate_limit_key("10.0.0.5", SECRET)
    assert a != rate_limit_key("10.0.0.6", SECRET)
    assert a != rate_limit_key("10.0.0.5", "old-key")
    assert SECRET not in a  # a digest: the limiter never holds the key


def test_rate_limiter_forgets_the_least_recent_sources_beyond_its_size() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=0.001, burst=1, clock=clock, max_sources=2)
    for source in ("a", "b", "c"):
        assert limiter.take(source) is None
    assert limiter.take("a") is None  # "a" was dropped: a fresh bucket
    assert limiter.take("c") is not None


def test_delivery_log_answers_a_replay_until_the_ttl_and_releases_failures() -> None:
    clock = FakeClock()
    log = DeliveryLog(ttl=600, clock=clock)
    assert log.reserve("d-1") is True
    assert log.reserve("d-1") is False
    clock.t += 599
    assert log.reserve("d-1") is False
    clock.t += 2
    assert log.reserve("d-1") is True  # expired, seen again
    assert log.reserve("d-2") is True
    log.release("d-2")  # its request failed: the retry is processed
    assert log.reserve("d-2") is True


def test_delivery_log_is_bounded() -> None:
    log = DeliveryLog(ttl=600, clock=FakeClock(), max_entries=3)
    for i in range(10):
        assert log.reserve(f"d-{i}")
    assert len(log) == 3


def test_delivery_ids_must_be_short_printable_ascii() -> None:
    assert check_delivery_id(None) is None
    assert check_delivery_id("  ") is None
    assert check_delivery_id(" 4f1c-9 ") == "4f1c-9"
    for bad in ("x" * 201, "tab\there", "ünïcode"):
        with pytest.raises(SchemaError) as err:
            check_delivery_id(bad)
        assert err.value.field == "X-Rotabot-Delivery"


# --- the words of an alert -------------------------------------------------------------

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def rotation(phase: Phase = Phase.OBSERVING) -> Rotation:
    r = Rotation(
        secret="model-api-key",
        lanes=("prod",),
        consumers={"inference-api": ConsumerProgress("inference-api", "prod", "U0ALICE", "hot")},
        overlap=timedelta(hours=24),
        observe=timedelta(hours=2),
        created_at=T0,
        started_by="U0SECOPS",
        id=42,
        phase=phase,
    )
    r.prepared_at = T0 + timedelta(minutes=1)
    if phase in (Phase.OBSERVING, Phase.REVOKED):
        r.switched_at = T0 + timedelta(minutes=30)
    return r


def words(began: datetime, r: Rotation | None, last: Rotation | None = None) -> str:
    return describe(
        consumer="inference-api",
        lane="prod",
        failure_class="authentication",
        secret="model-api-key",
        began=began,
        rotation=r,
        last_finished=last,
        owner="U0ALICE",
        reload="hot",
    ).text


def test_alert_words_after_the_switch() -> None:
    ctx = describe(
        consumer="inference-api", lane="prod", failure_class="authentication",
        secret="model-api-key", began=T0 + timedelta(minutes=34), rotation=rotation(),
        owner="U0ALICE", reload="hot",
    )
    assert ctx.text.startswith(
        "inference-api (prod) is failing authentication, 4 min after R-42 switched "
        "model-api-key to the new credential. Owner <@U0ALICE>, reload hot, R-42 is observing"
    )
    assert (ctx.rotation_ref, ctx.phase, ctx.minutes, ctx.since) == ("R-42", "observing", 4,
                                                                     "switch")
    assert ctx.began_during_rotation


def test_alert_words_before_the_switch_and_before_the_rotation() -> None:
    r = rotation(Phase.DISTRIBUTING)
    assert "12 min after R-42 prepared the new model-api-key credential (not switched yet)" in (
        words(T0 + timedelta(minutes=13), r)
    )
    before = describe(
        consumer="inference-api", lane="prod", failure_class="network", secret="model-api-key",
        began=T0 - timedelta(minutes=5), rotation=r,
    )
    assert "began before R-42 started rotating model-api-key, so not caused by it" in before.text
    assert not before.began_during_rotation


def test_alert_words_after_revocation_point_at_the_forgotten_consumer() -> None:
    done = rotation(Phase.REVOKED)
    done.finished_at = T0 + timedelta(hours=3)
    text = words(T0 + timedelta(hours=5, minutes=10), None, done)
    assert "2 h 10 min after R-42 revoked the old model-api-key credential" in text
    assert words(T0 + timedelta(days=9), None, done).startswith(
        "inference-api (prod) is failing authentication; no rotation of model-api-key is running"
    )
