"""`POST /evidence`: a consumer, its sidecar or a CI step reports the credential it runs.

Signed exactly like ``POST /alerts`` (handlers/signed_intake.py: HMAC with
``ROTABOT_ALERT_SECRET``, ``X-Rotabot-Delivery``, the size limit, the same codes), then:
schema and credential shapes (422: a body carrying anything shaped like a credential or an
unsalted hash of one is refused, naming the field, never repeating it) → flood limit per sender
(429) → catalog (404 with the closest names, 422 for an ambiguous consumer) → stored and applied
(200 with what it did: steps moved, a drift alert). docs/evidence.md is the sender's guide.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.domain.alert_intake import (
    MAX_BODY_BYTES,
    Deliveries,
    RateLimiter,
    SchemaError,
)
from bot.services.alerts import AmbiguousConsumer, NotInCatalog
from bot.services.evidence import EvidenceOutcome, EvidenceService, parse_evidence
from handlers.deps import Deps
from handlers.signed_intake import (
    SignedIntake,
    catalog_refusal,
    error,
    rate_limited,
    storage_failed,
)

log = logging.getLogger("rotabot.evidence")

# Reports are small: one consumer, one version.
MAX_EVIDENCE_BYTES = 8 * 1024


def _summary(o: EvidenceOutcome) -> dict[str, Any]:
    r = o.report
    return {
        "ok": True,
        "consumer": r.consumer,
        "secret": r.secret,
        "lane": r.lane,
        "rotation": o.rotation,
        "matched": o.matched,
        "steps": list(o.steps),
        "alert": o.alert,
        "note": o.note,
        "report": {k: v for k, v in asdict(r).items()
                   if k in ("version", "key_id", "ok", "workflow")}
        | {"at": r.at.isoformat()},
    }


def evidence_route(
    deps: Deps,
    service: EvidenceService,
    *,
    limiter: RateLimiter | None = None,
    deliveries: Deliveries | None = None,
    max_body: int = MAX_EVIDENCE_BYTES,
) -> Route:
    limiter = limiter or RateLimiter()
    intake = SignedIntake(deps, deliveries or deps.deliveries, log, "evidence report",
                          min(max_body, MAX_BODY_BYTES), "send one report per request")

    async def receive(request: Request) -> Response:
        body = await intake.read(request)
        if isinstance(body, Response):
            return body
        return await intake.verified(request, body, handle)

    async def handle(body: bytes, bucket: str) -> Response:
        try:
            report = parse_evidence(body, now=deps.clock.now())
        except SchemaError as exc:
            log.info("evidence report refused: %s in %s", type(exc).__name__, exc.field[:100])
            return error(422, f"{exc.field} {exc.problem}", field=exc.field)
        wait = limiter.take(bucket)
        if wait is not None:
            log.warning("evidence reports from one sender rate-limited")
            return rate_limited(wait, "reports")
        try:
            outcome = await run_in_threadpool(service.receive, report)
        except (NotInCatalog, AmbiguousConsumer) as exc:
            return catalog_refusal(exc, log, "evidence report")
        except Exception as exc:
            return storage_failed(exc, "storing the report", log, "evidence report")
        return JSONResponse(_summary(outcome))

    return Route("/evidence", receive, methods=["POST"])
