"""`POST /alerts`: failure reports from connectors and Alertmanager, into AlertService.

Two senders, two ways to authenticate, kept apart. Connectors sign (``X-Rotabot-Signature``,
HMAC with ``ROTABOT_ALERT_SECRET``); Prometheus Alertmanager, which cannot compute that HMAC,
sends ``Authorization: Bearer <token>`` (or Basic, the token as the password), one of
``ROTABOT_ALERTMANAGER_TOKEN``'s. A request is Alertmanager's only when it has an Authorization
header and no rotabot signature headers, and then its body must be an Alertmanager webhook
payload (version 4, else 422).

Order of checks, cheapest first, so nothing unauthenticated costs a database call:
size (413, before the body is read whole) → signature and timestamp, or token (401) → delivery
id's form (422) → schema (422) → flood limit per sender (429 + Retry-After; keyed on the
client address and the signing key, never on the body's ``source``, which a sender can rename)
→ catalog (404 with the closest names, 422 for an ambiguous consumer) → group commit
(bot/services/alert_batches.py): the delivery id is taken in the same transaction as the
counts, so a replayed id is answered ``duplicate`` and counted once, and a request is answered
200 (with the alert refs) only after its batch committed. Slack posts and updates follow after
the commit, off the request.

Alertmanager's requests: size → token (401) → schema (422) → flood limit on the firing alerts
(503 + Retry-After: Alertmanager drops what a 4xx refuses and retries a 5xx) → catalog → the
firing alerts group-committed together, one key per alert (groupKey, fingerprint, status,
startsAt; an alert already taken is skipped as a duplicate, each other one counted), then each
resolved one resolving the rotabot alert its firing opened (its key kept once it did). A
failure stores none of the firing alerts, so Alertmanager's retry takes them all.
Keys live in the database (storage/deliveries.py), so a retry counts once whichever replica it
reaches. A database that cannot be reached is a 503 the sender retries, never a silent loss.
Log lines name consumers and secrets only: no other value from a body reaches a log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.domain.alert import Alert
from bot.domain.alert_intake import (
    DEFAULT_AM_LABELS,
    MAX_BODY_BYTES,
    AmAlert,
    Deliveries,
    DeliveryInFlight,
    KeyState,
    RateLimiter,
    SchemaError,
    SignatureError,
    parse_alertmanager_notification,
    parse_body,
    rate_limit_key,
    verify_authorization,
)
from bot.services.alert_batches import GroupCommit
from bot.services.alerts import (
    AlertService,
    AmbiguousConsumer,
    IngestResult,
    Intake,
    IntakeUnit,
    NotInCatalog,
    UnitOutcome,
)
from handlers.deps import Deps
from handlers.signed_intake import (
    RETRY_AFTER,
    SIGNATURE_HEADERS,
    SignedIntake,
    catalog_refusal,
    rate_limited,
    storage_failed,
)
from handlers.signed_intake import error as _error

log = logging.getLogger("rotabot.alerts")

# Who resolved an alert whose Alertmanager alert resolved (shown as text in its messages).
ALERTMANAGER_ACTOR = "Alertmanager"
_RETRY_AFTER = RETRY_AFTER


def _storage_failed(exc: Exception, doing: str) -> JSONResponse:
    return storage_failed(exc, doing, log, "alert")


def _summary(r: IngestResult) -> dict[str, Any]:
    a = r.alert
    return {
        "ref": a.ref,
        "new": r.new,
        "count": a.count,
        "consumer": a.consumer,
        "secret": a.secret,
        "lane": a.lane,
        "class": a.failure_class,
        "rotation": r.context.rotation_ref if a.rotation_id is not None else None,
        "began_during_rotation": a.began_during_rotation,
        "status": a.status.value,
    }


def alerts_route(
    deps: Deps,
    *,
    service: AlertService | None = None,
    limiter: RateLimiter | None = None,
    deliveries: Deliveries | None = None,
    max_body: int = MAX_BODY_BYTES,
) -> Route:
    svc = service or deps.alerts
    batches = deps.intake if service is None and deps.intake is not None else GroupCommit(svc)
    limiter = limiter or deps.alert_limiter or RateLimiter()
    # In the database every replica shares, so a retry landing on another one counts once.
    # The group commit takes signed deliveries and firing alerts in its own transaction;
    # this one holds the keys of Alertmanager's resolved alerts.
    seen: Deliveries = deliveries or deps.deliveries

    intake = SignedIntake(deps, seen, log, "alert", max_body,
                          "send one failure per request")

    async def _commit(units: Sequence[IntakeUnit]) -> list[UnitOutcome]:
        # Awaited, not run in the thread pool: no worker thread waits for the batch.
        return await batches.submit_async(units)

    async def receive(request: Request) -> Response:
        body = await intake.read(request)
        if isinstance(body, Response):
            return body
        signed = any(h in request.headers for h in SIGNATURE_HEADERS)
        authorization = request.headers.get("authorization")
        if authorization is not None and not signed:
            return await _from_alertmanager(request, body, authorization)
        if not deps.alert_secret and deps.alertmanager_tokens and not signed:
            return _error(401, "missing Authorization header (Alertmanager's token)")
        checked = intake.signed(request, body)
        if isinstance(checked, Response):
            return checked
        bucket, delivery = checked
        return await _handle(body, bucket, delivery)

    async def _handle(body: bytes, bucket: str, delivery: str | None) -> Response:
        try:
            parsed = parse_body(body)
        except SchemaError as exc:
            log.info("alert refused: schema error in %s", exc.field[:100])
            return _error(422, f"{exc.field} {exc.problem}", field=exc.field)
        if not parsed.reports:
            # Alertmanager "resolved" notifications resolve nothing by themselves: a person
            # marks an alert handled, so a flapping check cannot reopen the revocation gate.
            return JSONResponse(
                {"ok": True, "alerts": [], "resolved_ignored": parsed.resolved_ignored}
            )
        wait = limiter.take(bucket, cost=len(parsed.reports))
        if wait is not None:
            log.warning("alerts from one sender rate-limited", extra={"source_limited": True})
            return rate_limited(wait, "alerts")
        try:
            unit = IntakeUnit(tuple(Intake(r, svc.resolve(r)) for r in parsed.reports),
                              key=delivery)
        except (NotInCatalog, AmbiguousConsumer) as exc:
            return catalog_refusal(exc, log, "alert")
        try:
            (outcome,) = await _commit([unit])
        except Exception as exc:
            return _storage_failed(exc, "storing the alert")
        if outcome.state is KeyState.DUPLICATE:
            return JSONResponse({"ok": True, "duplicate": True})
        if outcome.state is KeyState.IN_FLIGHT:
            # Answering "duplicate" now would lose the alert if that request fails.
            log.info("alert delivery still being processed elsewhere; the sender should retry")
            return JSONResponse(
                {"ok": False, "error": "this X-Rotabot-Delivery is still being processed; "
                                       "retry later"},
                status_code=503,
                headers={"Retry-After": _RETRY_AFTER},
            )
        results = outcome.results
        out: dict[str, Any] = {"ok": True, "alerts": [_summary(r) for r in results]}
        if len(results) == 1:
            out["ref"] = results[0].alert.ref
            out["context"] = results[0].context.text
        if parsed.alertmanager:
            out["resolved_ignored"] = parsed.resolved_ignored
        return JSONResponse(out)

    # --- Alertmanager ----------------------------------------------------------------------

    def _labels() -> dict[str, str]:
        override = deps.catalog.defaults.alertmanager.labels
        return {**DEFAULT_AM_LABELS, **{str(k): v for k, v in override.items()}}

    async def _from_alertmanager(request: Request, body: bytes, authorization: str) -> Response:
        tokens = deps.alertmanager_tokens
        if not tokens:
            return _error(503, "Alertmanager intake is off: set ROTABOT_ALERTMANAGER_TOKEN on "
                               "the bot")
        try:
            token = verify_authorization(tokens, authorization)
        except SignatureError as exc:
            log.warning("alert refused: %s", exc)  # names the header, never what it held
            return _error(401, str(exc))
        try:
            note = parse_alertmanager_notification(body, _labels())
        except SchemaError as exc:
            log.info("Alertmanager alert refused: schema error in %s", exc.field[:100])
            return _error(422, f"{exc.field} {exc.problem}", field=exc.field)
        host = request.client.host if request.client else "unknown"
        firing = [a for a in note.alerts if a.firing]
        wait = limiter.take(rate_limit_key(host, token), cost=len(firing)) if firing else None
        if wait is not None:
            log.warning("alerts from one sender rate-limited", extra={"source_limited": True})
            # 503, not 429: Alertmanager drops a notification a 4xx refuses, and retries a 5xx.
            return rate_limited(wait, "alerts", status=503)
        try:
            # Each alert its own unit: its key is taken with its count, an alert taken before
            # is a duplicate and the others are counted.
            units = [IntakeUnit((Intake(a.report, svc.resolve(a.report)),), key=a.key)
                     for a in firing]
        except (NotInCatalog, AmbiguousConsumer) as exc:
            return catalog_refusal(exc, log, "alert")
        outcomes: list[UnitOutcome] = []
        if units:
            try:
                outcomes = await _commit(units)
            except Exception as exc:
                return _storage_failed(exc, "storing the alert")
        try:
            if any(o.state is KeyState.IN_FLIGHT for o in outcomes):
                raise DeliveryInFlight("alertmanager")
            resolved, resolved_duplicates = await run_in_threadpool(
                _resolve_all, [a for a in note.alerts if not a.firing])
        except DeliveryInFlight:
            # What was taken stays taken; the retry counts it as a duplicate.
            log.info("Alertmanager alert still being processed elsewhere; it retries")
            return JSONResponse(
                {"ok": False, "error": "an alert of this notification is still being "
                                       "processed; retry later"},
                status_code=503, headers={"Retry-After": _RETRY_AFTER})
        except Exception as exc:
            return _storage_failed(exc, "resolving the alerts")
        taken_resolved = len(note.alerts) - len(firing) - resolved_duplicates
        return JSONResponse({
            "ok": True,
            "alerts": [_summary(r) for o in outcomes for r in o.results],
            "resolved": [{"ref": a.ref, "consumer": a.consumer, "secret": a.secret}
                         for a in resolved],
            "resolved_unmatched": taken_resolved - len(resolved),
            "duplicates": resolved_duplicates
            + sum(1 for o in outcomes if o.state is KeyState.DUPLICATE),
        })

    def _resolve_all(alerts: list[AmAlert]) -> tuple[list[Alert], int]:
        """Resolve with each resolved alert not taken before; each key is kept once what it
        stands for is committed, and freed when that failed. Returns what was resolved and
        how many were duplicates."""
        resolved: list[Alert] = []
        duplicates = 0
        for a in alerts:
            if not seen.reserve(a.key):
                duplicates += 1
                continue
            try:
                resolved.extend(svc.resolve_from_source(a.report, actor=ALERTMANAGER_ACTOR))
            except BaseException:
                _quietly(seen.release, a.key)
                raise
            _quietly(seen.done, a.key)
        return resolved, duplicates

    def _quietly(step: Callable[[str], None], key: str) -> None:
        try:
            step(key)
        except Exception as exc:  # the key lapses after its lease (storage/deliveries.py)
            log.warning("alert intake: could not settle an alert's key (%s); it lapses after "
                        "its lease", type(exc).__name__)

    return Route("/alerts", receive, methods=["POST"])
