"""A webhook receiver that accepts every secret of rotabot's `secrets` list (stdlib only).

It verifies ``X-Webhook-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.".encode() + body)>``
with ``X-Webhook-Timestamp: <unix seconds>`` against each secret in the list, in constant time,
and refuses a timestamp more than 5 minutes off. The key is the whole secret string as UTF-8,
prefix included. See docs/webhook-receiver.md.

Where the list comes from (a JSON array of strings, newest first):

* ``--file PATH``: a dotenv file holding ``WEBHOOK_SECRETS='[...]'`` (what an ``env-file``
  target writes; ``--key`` names another variable) or a ``.json`` file (the array, or an object
  with a ``secrets`` field, as in the credential rotabot writes). The file is read again
  whenever it changes, so the receiver follows a rotation without a restart.
* otherwise the environment variable ``WEBHOOK_SECRETS`` (read once: restart to reload).

    python examples/webhook_receiver.py --port 8080 --file /etc/hooks/hooks.env
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_SKEW = 300  # seconds
MAX_BODY = 1 << 20


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Webhook-Signature`` value a sender puts on ``body`` (sign with ``secret``)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(accepted: list[str], body: bytes, timestamp: str, signature: str,
           now: float | None = None) -> bool:
    """True when ``signature`` is ``body``'s signature under any secret of ``accepted``."""
    if not (timestamp.isascii() and timestamp.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > MAX_SKEW:
        return False
    expected = [sign(s, body, int(timestamp)).encode() for s in accepted]
    # Every secret is compared (no early exit), each in constant time.
    matches = [hmac.compare_digest(e, signature.encode()) for e in expected]
    return any(matches)


def parse_secrets(text: str) -> list[str]:
    """A JSON array of strings, or an object whose ``secrets`` field holds one (as a string or
    as the array)."""
    value = json.loads(text)
    if isinstance(value, dict):
        value = value.get("secrets")
        value = json.loads(value) if isinstance(value, str) else value
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise ValueError("expected a non-empty JSON array of strings")
    return value


def dotenv_value(text: str, key: str) -> str | None:
    """The last ``KEY=value`` of ``key`` (plain, '...' or "..." with \\\\ and \\" escapes)."""
    found = None
    for line in text.splitlines():
        m = re.match(rf"\s*(?:export\s+)?{re.escape(key)}\s*=\s*(.*?)\s*$", line)
        if m:
            found = m[1]
    if found and len(found) >= 2 and found[0] == found[-1] and found[0] in "'\"":
        inner = found[1:-1]
        return re.sub(r'\\([\\"])', r"\1", inner) if found[0] == '"' else inner
    return found


class SecretsSource:
    """The accepted secrets, from a file (re-read when it changes) or the environment."""

    def __init__(self, file: Path | None = None, key: str = "WEBHOOK_SECRETS") -> None:
        self.file, self.key = file, key
        self._seen: tuple[int, int, int] | None = None
        self._secrets: list[str] = []
        self._lock = threading.Lock()
        if file is None:
            self._secrets = parse_secrets(os.environ[key])

    def current(self) -> list[str]:
        if self.file is None:
            return self._secrets
        with self._lock:
            st = self.file.stat()
            # os.replace (how rotabot writes) gives a new inode, so a change is seen even
            # within the file system's time resolution.
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
            if seen != self._seen:
                text = self.file.read_text()
                value = text if self.file.suffix == ".json" else dotenv_value(text, self.key)
                if value is None:
                    raise ValueError(f"{self.file} has no {self.key}")
                self._secrets, self._seen = parse_secrets(value), seen
            return self._secrets


def make_server(source: SecretsSource, host: str = "127.0.0.1",
                port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self._reply(413, b"too large\n")
            body = self.rfile.read(length)
            try:
                accepted = source.current()
            except (OSError, ValueError) as exc:
                print(f"cannot load the secrets: {type(exc).__name__}", file=sys.stderr)
                return self._reply(503, b"no secrets loaded\n")
            ok = verify(accepted, body, self.headers.get("X-Webhook-Timestamp", ""),
                        self.headers.get("X-Webhook-Signature", ""))
            if not ok:
                return self._reply(401, b"bad signature\n")
            # A real receiver handles the verified body here.
            return self._reply(200, b"ok\n")

        def _reply(self, status: int, text: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, format: str, *args: object) -> None:
            print(f"{self.address_string()} {format % args}", file=sys.stderr)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A webhook receiver for rotabot's secrets.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--file", type=Path, help="dotenv or .json file with the list")
    parser.add_argument("--key", default="WEBHOOK_SECRETS", help="variable holding the list")
    args = parser.parse_args(argv)
    server = make_server(SecretsSource(args.file, args.key), args.host, args.port)
    print(f"listening on http://{args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
