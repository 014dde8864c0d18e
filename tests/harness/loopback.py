"""Small HTTP peers on loopback (a consumer's health endpoint, a key provider) run in a thread."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that keeps pytest's output clean and answers in one call."""

    def log_message(self, format: str, *args: Any) -> None:
        return

    def reply(
        self,
        status: int,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Answer `status` with `body`: nothing for None, bytes and text as they are, anything
        else as JSON. A HEAD request gets the headers only."""
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        else:
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


class Loopback:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> serving `handler` in a daemon thread,
    from construction until stop() (or the end of a ``with`` block). `before_stop` runs first
    on stop: to release handlers a test left hanging."""

    def __init__(self, handler: type[BaseHTTPRequestHandler],
                 before_stop: Callable[[], object] | None = None) -> None:
        self.before_stop = before_stop
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.before_stop is not None:
            self.before_stop()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Loopback:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
