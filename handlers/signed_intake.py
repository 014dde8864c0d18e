"""What ``POST /alerts`` and ``POST /evidence`` share: HMAC-signed JSON from senders outside Slack.

Order of checks, cheapest first, so nothing unauthenticated costs a database call: size (413,
before the body is read whole) → ``ROTABOT_ALERT_SECRET`` set (503) → signature and timestamp
(401) → ``X-Rotabot-Delivery`` (422 when malformed; 200 duplicate when taken before; 503 while
another request holds it) → the route's own handling. The delivery id is reserved in the
database every replica shares (storage/deliveries.py), kept once the route answered 2xx and
freed otherwise, so the sender's retry is processed. The signature scheme is
bot/domain/alert_intake.py's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from bot.domain.alert_intake import (
    Deliveries,
    DeliveryInFlight,
    SchemaError,
    SignatureError,
    check_delivery_id,
    rate_limit_key,
    retry_after_header,
    verify_signature,
)
from bot.domain.errors import StoreUnavailable
from bot.services.alerts import AmbiguousConsumer, NotInCatalog
from handlers.deps import Deps
from handlers.request_body import BodyTooLarge, read_limited

# Seconds a sender is asked to wait after a 503 (database unreachable, delivery in flight).
RETRY_AFTER = "5"
SIGNATURE_HEADERS = ("x-rotabot-signature", "x-rotabot-timestamp")

# (body, flood-limit bucket: the client address and the signing key) -> the answer.
Handle = Callable[[bytes, str], Awaitable[Response]]


def error(
    status: int, message: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"ok": False, "error": message, **extra}, status_code=status,
                        headers=headers)


def rate_limited(wait: float, what: str, *, status: int = 429) -> JSONResponse:
    """The flood limit's answer: ``what`` (plural, "alerts") waits ``wait`` seconds."""
    return JSONResponse(
        {"ok": False, "error": f"too many {what} from this sender; retry later",
         "retry_after": int(retry_after_header(wait))},
        status_code=status, headers={"Retry-After": retry_after_header(wait)})


def catalog_refusal(
    exc: NotInCatalog | AmbiguousConsumer, log: logging.Logger, what: str
) -> JSONResponse:
    """404 with the closest names for a consumer or secret the catalog does not know; 422 for
    a consumer several secrets share and the sender did not say which."""
    if isinstance(exc, NotInCatalog):
        log.info("%s for unknown %s %s", what, exc.field, exc.name[:100])
        return error(404, str(exc), field=exc.field, suggestions=exc.suggestions)
    return error(422, str(exc), field="secret", secrets=exc.secrets)


def storage_failed(exc: Exception, doing: str, log: logging.Logger, what: str) -> JSONResponse:
    """503 when the database cannot be reached, 500 otherwise; both tell the sender to retry
    and give a ref that finds the log line (which names the error type, never a value)."""
    ref = uuid.uuid4().hex[:8]
    if isinstance(exc, StoreUnavailable):
        # Its text is written for the operator: host and port, never the password.
        log.error("%s intake: %s failed (ref %s): %s", what, doing, ref, exc)
        return JSONResponse(
            {"ok": False, "error": f"rotabot's database is unavailable, nothing was stored "
                                   f"(ref {ref}); retry later"},
            status_code=503,
            headers={"Retry-After": RETRY_AFTER},
        )
    log.error("%s intake: %s failed (ref %s): %s", what, doing, ref, type(exc).__name__)
    return error(500, f"rotabot could not store the {what} (ref {ref}); retry")


@dataclass(frozen=True)
class SignedIntake:
    """One signed route's shared checks. ``what`` names its payload in answers and logs
    ("alert", "evidence report"); ``one_per_request`` is the 413's advice."""

    deps: Deps
    seen: Deliveries
    log: logging.Logger
    what: str
    max_body: int
    one_per_request: str

    async def read(self, request: Request) -> bytes | Response:
        """The body, or the 413 that refuses it before it is read whole."""
        try:
            return await read_limited(request, self.max_body)
        except BodyTooLarge:
            self.log.warning("%s refused: body over %s KiB", self.what, self.max_body // 1024)
            # Connection: close, so the server stops taking the rest of the body.
            return error(413, f"body over {self.max_body // 1024} KiB; {self.one_per_request}",
                         headers={"Connection": "close"})

    async def verified(self, request: Request, body: bytes, handle: Handle) -> Response:
        """Signature, then the delivery id, then ``handle``; the id is settled after it."""
        checked = self.signed(request, body)
        if isinstance(checked, Response):
            return checked
        bucket, delivery = checked
        if delivery is None:
            return await handle(body, bucket)
        try:
            fresh = await run_in_threadpool(self.seen.reserve, delivery)
        except DeliveryInFlight:
            # Answering "duplicate" now would lose the report if that request fails.
            self.log.info("%s delivery still being processed elsewhere; the sender should "
                          "retry", self.what)
            return JSONResponse(
                {"ok": False, "error": "this X-Rotabot-Delivery is still being processed; "
                                       "retry later"},
                status_code=503,
                headers={"Retry-After": RETRY_AFTER},
            )
        except Exception as exc:
            return storage_failed(exc, "reserving the delivery id", self.log, self.what)
        if not fresh:
            return JSONResponse({"ok": True, "duplicate": True})
        ok = False
        try:
            response = await handle(body, bucket)
            ok = response.status_code < 300
            return response
        finally:
            await self._settle(delivery, ok)

    def signed(self, request: Request, body: bytes) -> tuple[str, str | None] | Response:
        """The signature and the delivery id's form checked: (flood-limit bucket, delivery id
        or None), or the answer that refuses the request. For a route that takes the id in
        its own transaction (the alert group commit) instead of reserving it here."""
        secret = self.deps.alert_secret
        if not secret:
            return error(503, f"{self.what} intake is off: set ROTABOT_ALERT_SECRET on the bot")
        try:
            signing_key = verify_signature(
                secret,
                timestamp=request.headers.get("x-rotabot-timestamp"),
                signature=request.headers.get("x-rotabot-signature"),
                body=body,
                now=self.deps.clock.now().timestamp(),
            )
        except SignatureError as exc:
            self.log.warning("%s refused: %s", self.what, exc)
            return error(401, str(exc))
        try:
            delivery = check_delivery_id(request.headers.get("x-rotabot-delivery"))
        except SchemaError as exc:
            return error(422, exc.problem, field=exc.field)
        # The flood limit's bucket: who sent it (the address) and which key signed it, never
        # anything the sender writes in the body.
        host = request.client.host if request.client else "unknown"
        return rate_limit_key(host, signing_key), delivery

    async def _settle(self, delivery: str, ok: bool) -> None:
        """Keep the id for the whole ttl once the request was taken; free it when it failed,
        so the sender's retry is processed. When that write fails the reservation lapses with
        its lease (storage/deliveries.py); the response is unchanged."""
        try:
            # Shielded: a cancelled request must still release its id, or its retry is lost.
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(self.seen.done if ok else self.seen.release, delivery)
        except Exception as exc:
            self.log.warning(
                "%s intake: could not %s a delivery id (%s); it lapses after its lease",
                self.what, "keep" if ok else "release", type(exc).__name__,
            )
