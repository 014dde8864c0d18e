"""The floor: a Bolt app that only acks, served by bot.runtime.server.web_app under uvicorn
exactly as `rotabot serve` serves Slack (Starlette, Bolt's adapter, sync Bolt dispatched in the
thread pool).

Usage: SLACK_SIGNING_SECRET=... SLACK_API_URL=... python -m benchmarks.bare_app --port P
"""

from __future__ import annotations

import argparse
import os
import re

import uvicorn
from slack_bolt import Ack, App
from slack_sdk import WebClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.runtime.server import web_app


def build_bare_app(signing_secret: str, api_url: str) -> App:
    # The same Bolt settings as handlers/app.py: verification on, ack returned at once; the
    # client points at the stand-in, where Bolt's one auth.test goes, as rotabot's does.
    client = WebClient(token="xoxb-bare-baseline", base_url=api_url, timeout=10)
    app = App(
        client=client,
        signing_secret=signing_secret,
        token_verification_enabled=False,
        process_before_response=False,
        request_verification_enabled=True,
    )

    @app.command(re.compile(".*"))
    def command(ack: Ack) -> None:
        ack()

    @app.action(re.compile(".*"))
    def action(ack: Ack) -> None:
        ack()

    @app.view(re.compile(".*"))
    def view(ack: Ack) -> None:
        ack()

    return app


async def healthz(request: Request) -> Response:
    """What the harness polls to know the server is up (no database here)."""
    return JSONResponse({"status": "ok"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = build_bare_app(os.environ["SLACK_SIGNING_SECRET"], os.environ["SLACK_API_URL"])
    routes = [Route("/healthz", healthz, methods=["GET"])]
    uvicorn.run(web_app(app, routes), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
