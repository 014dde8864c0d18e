"""Load generator subprocess: posts pre-signed requests from N client threads, times each.

Usage: python -m benchmarks.loadgen JOB.json OUT.json. The job holds the URL, concurrency,
warm-up count and the requests (body and headers); the output holds one latency per request
(milliseconds, warm-up excluded), status counts, wall time and the first errors.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit


def main(job_path: str, out_path: str) -> int:
    with open(job_path) as f:
        job: dict[str, Any] = json.load(f)
    url: str = job["url"]
    requests: list[dict[str, Any]] = job["requests"]
    concurrency = max(1, int(job["concurrency"]))
    warmup = int(job.get("warmup", 0))
    encoded = [(r["body"].encode(), r["headers"]) for r in requests]

    latencies: list[float | None] = [None] * len(encoded)
    statuses: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    next_index = 0

    # http.client on one kept-alive connection per client: the client's own CPU per request
    # is a fraction of httpx's, and the clients share the machine with the server measured.
    parts = urlsplit(url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"

    def worker() -> None:
        nonlocal next_index
        conn: http.client.HTTPConnection | None = None
        while True:
            with lock:
                i = next_index
                next_index += 1
            if i >= len(encoded):
                break
            body, headers = encoded[i]
            start = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                resp.read()
                elapsed = (time.perf_counter() - start) * 1000
                status = str(resp.status)
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                elapsed, status = (time.perf_counter() - start) * 1000, "error"
                if conn is not None:
                    conn.close()
                    conn = None
                with lock:
                    if len(errors) < 5:
                        errors.append(type(exc).__name__)
            with lock:
                statuses[status] += 1
                if i >= warmup:
                    latencies[i] = elapsed
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    with open(out_path, "w") as f:
        json.dump(
            {
                "latencies_ms": [x for x in latencies if x is not None],
                "statuses": dict(statuses),
                "wall_s": wall,
                "errors": errors,
            },
            f,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
