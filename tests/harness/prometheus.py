"""Debian's `prometheus` as a real server for tests: a generated config scraping given
targets every second, rule files loaded, TSDB in a temporary directory, on a free port."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import MissingBinary, ServerStartError, free_port, log_tail, stop_process

PROMETHEUS_INSTALL_HINT = "apt-get install --no-install-recommends prometheus (`make services`)"
START_TIMEOUT = 30.0


def find_binary(name: str) -> str:
    """`prometheus` or `promtool`: PATH, then Debian's /usr/bin."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file()
                                   else None)
    if found is None:
        raise MissingBinary(f"`{name}` not found: {PROMETHEUS_INSTALL_HINT}")
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find_binary("promtool"), *args], capture_output=True, text=True,
                          timeout=60, check=False)


def config_yaml(targets: Sequence[str], rule_files: Sequence[Path], interval: str) -> str:
    """JSON is YAML: the config without a YAML library."""
    return json.dumps({
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "scrape_timeout": interval},
        "rule_files": [str(p.resolve()) for p in rule_files],
        "scrape_configs": [{"job_name": "rotabot", "metrics_path": "/metrics",
                            "static_configs": [{"targets": list(targets)}]}],
    }, indent=2)


@dataclass
class PrometheusServer:
    base: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base / "prometheus.log"

    def api(self, path: str, **params: str) -> Any:
        """``data`` of a Prometheus HTTP API answer; raises unless its status is success."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(self.url + path + query, timeout=5) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's series (a vector result; a scalar is one series)."""
        data = self.api("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp:
                return int(resp.status) == 200
        except (OSError, ValueError):
            return False

    @classmethod
    def start(cls, targets: Sequence[str], rule_files: Sequence[Path] = (),
              interval: str = "1s") -> PrometheusServer:
        binary = find_binary("prometheus")
        base = Path(tempfile.mkdtemp(prefix="rotabot-prometheus-", dir="/tmp"))
        (base / "prometheus.yml").write_text(config_yaml(targets, rule_files, interval))
        last: ServerStartError | None = None
        for _ in range(3):  # a free port can be taken before prometheus binds it
            server = cls(base=base, port=free_port())
            with server.log_path.open("ab") as log:
                server.proc = subprocess.Popen(
                    [binary, f"--config.file={base / 'prometheus.yml'}",
                     f"--storage.tsdb.path={base / 'data'}",
                     f"--web.listen-address=127.0.0.1:{server.port}",
                     "--log.level=warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=base)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and server.proc.poll() is None:
                if server._ready():
                    return server
                time.sleep(0.1)
            stop_process(server.proc)
            last = ServerStartError(
                f"prometheus on port {server.port} did not become ready\n"
                f"--- {server.log_path} ---\n{log_tail(server.log_path)}")
        shutil.rmtree(base, ignore_errors=True)
        assert last is not None
        raise last

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        shutil.rmtree(self.base, ignore_errors=True)
