"""Reading an HTTP request body with a size limit, for `/alerts` and Slack's `/slack/events`."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The body is (or says it is) over the limit; nothing past the limit was read."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The body, refusing as soon as it passes ``limit`` (a lying or absent Content-Length
    cannot make us buffer more)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        length = declared.strip()
        if not (length.isascii() and length.isdigit()):
            raise BodyTooLarge  # unparseable length: refuse rather than trust the stream
        if len(length) > 18 or int(length) > limit:  # no int() of a thousand digits
            raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)
