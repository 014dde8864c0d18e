"""Debian's `prometheus-alertmanager` on a free loopback port, for tests: one config file, its
own storage directory, clustering off, ready once ``GET /-/ready`` answers 200."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import MissingBinary, _ChildServer, _with_retries

ALERTMANAGER_INSTALL_HINT = (
    "apt-get install --no-install-recommends prometheus-alertmanager (or run `make services`)")


def find_alertmanager() -> str:
    """Debian's binary first, then PATH."""
    for candidate in ("/usr/bin/prometheus-alertmanager",
                      shutil.which("prometheus-alertmanager"), shutil.which("alertmanager")):
        if candidate and Path(candidate).is_file():
            return candidate
    raise MissingBinary(f"prometheus-alertmanager not found: {ALERTMANAGER_INSTALL_HINT}")


@dataclass
class AlertmanagerServer(_ChildServer):
    """A running Alertmanager: ``post_alerts`` is its API (``POST /api/v2/alerts``), what
    Prometheus sends it."""

    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "alertmanager.log"

    @property
    def config_path(self) -> Path:
        return self.base / "alertmanager.yml"

    def _request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return int(resp.status), resp.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()

    def _ready(self) -> bool:
        try:
            return self._request("GET", "/-/ready")[0] == 200
        except OSError:
            return False

    def post_alerts(self, alerts: Sequence[Mapping[str, Any]]) -> None:
        """Fire (or, with ``endsAt`` in the past, resolve) alerts as Prometheus would."""
        status, body = self._request("POST", "/api/v2/alerts", list(alerts))
        if status != 200:
            raise AssertionError(f"Alertmanager answered {status}: {body[:500]!r}")

    def alerts(self) -> list[dict[str, Any]]:
        status, body = self._request("GET", "/api/v2/alerts")
        assert status == 200, body
        data: list[dict[str, Any]] = json.loads(body)
        return data

    @classmethod
    def start(cls, config: str) -> AlertmanagerServer:
        """Start it with ``config`` (alertmanager.yml's text) in a fresh directory."""
        binary = find_alertmanager()
        base = Path(tempfile.mkdtemp(prefix="rotabot-alertmanager-", dir="/tmp"))
        (base / "alertmanager.yml").write_text(config)

        def once(port: int) -> AlertmanagerServer:
            server = cls(base=base, port=port)
            server._launch(
                [binary,
                 f"--config.file={server.config_path}",
                 f"--storage.path={base / 'data'}",
                 f"--web.listen-address={server.host}:{port}",
                 "--cluster.listen-address=",  # empty: no gossip, no peers
                 "--log.level=debug"],
                name="prometheus-alertmanager",
                ready_means="answering GET /-/ready",
            )
            return server

        return _with_retries(once)
