"""Shared machinery: catalogs, the Slack stand-in, `rotabot serve` and the bare Bolt app as
real processes, PostgreSQL, pre-signed requests and the load generator subprocess. Processes
and servers start as the test suite starts them (tests/harness, tests/servers.py)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from adapters.slack_budget import bucket_of
from bot.domain.token_bucket import Bucket, take
from bot.sandbox.slack_standin.model import Call
from bot.sandbox.slack_standin.server import StandinServer
from bot.sandbox.slack_standin.slack_side import BotReply, SlackSide, slack_signature
from bot.sandbox.slack_standin.state import Message, StandinState
from handlers.ids import Action, StepButton, parse_value

ROOT = Path(__file__).resolve().parents[1]
# pytest puts tests/ on sys.path (pyproject's pythonpath); `python -m benchmarks` does not.
if str(ROOT / "tests") not in sys.path:
    sys.path.append(str(ROOT / "tests"))

from harness.messages import is_rotation_message  # noqa: E402
from harness.metric_text import metric_sum  # noqa: E402
from harness.serve import (  # noqa: E402  (needs tests/ on sys.path, just above)
    catalog_head,
    eventually,
    free_port,
    process_env,
    serve_command,
    serve_env,
    spawn,
    stop_process,
    wait_healthy,
)
from servers import PostgresServer  # noqa: E402

ADMIN = "U0ADMIN"
CHANNEL = "C0ROTATE"
INCIDENTS = "C0INCIDENT"
LANES = ("dev", "staging", "prod")


def owner_id(i: int) -> str:
    return f"U0OWN{i:04d}"


def consumer_name(i: int) -> str:
    return f"svc-{i:04d}"


# --- catalog and workspace ----------------------------------------------------------------


@dataclass(frozen=True)
class SecretSpec:
    name: str
    consumers: int
    lanes: Sequence[str] = LANES  # consumers are spread round-robin over these lanes
    # When set, only the first ``first_lane`` consumers are in the first lane (the rest
    # round-robin over the others): each first-lane prompt is one chat.postMessage into the
    # rotation channel, about one a second at Slack's rate, so a scenario that does not
    # measure prompt posting keeps that lane small.
    first_lane: int | None = None

    def lane(self, i: int) -> str:
        if self.first_lane is None or len(self.lanes) == 1:
            return self.lanes[i % len(self.lanes)]
        if i < self.first_lane:
            return self.lanes[0]
        return self.lanes[1 + (i - self.first_lane) % (len(self.lanes) - 1)]

    def in_first_lane(self) -> int:
        return sum(1 for i in range(self.consumers) if self.lane(i) == self.lanes[0])


def catalog_yaml(store_dir: Path, specs: Sequence[SecretSpec]) -> str:
    lines = [
        *catalog_head(observe="2h", overlap="24h", admins=(ADMIN,), lanes=LANES).splitlines(),
        "stores:",
        "  local:",
        "    kind: file",
        f"    path: {store_dir}",
        "secrets:",
    ]
    for spec in specs:
        lines += [
            f"  {spec.name}:",
            f"    description: benchmark secret with {spec.consumers} consumers",
            "    issuer: {kind: local}",
            f"    store: {{name: local, path: bench/{spec.name}}}",
            "    consumers:",
        ]
        for i in range(spec.consumers):
            lane = spec.lane(i)
            lines += [
                f"      {consumer_name(i)}:",
                f"        owner: {owner_id(i)}",
                f"        lane: {lane}",
                "        reload: hot",
                "        rollback: Pin the previous version",
            ]
    return "\n".join(lines) + "\n"


def make_workspace(owners: int) -> StandinState:
    state = StandinState(team_id="T0ROTABOT", team_name="rotabot-bench")
    state.add_user(ADMIN, "ada", real_name="Ada", is_admin=True)
    members = [ADMIN]
    for i in range(owners):
        state.add_user(owner_id(i), f"owner{i}", real_name=f"Owner {i}")
        members.append(owner_id(i))
    state.add_channel(CHANNEL, "rotations", members=members)
    state.add_channel(INCIDENTS, "incidents", members=members)
    return state


# --- captured (not sent) Slack requests ------------------------------------------------


@dataclass
class Prepared:
    """A request body and headers, ready to post (signed when built)."""

    body: str
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)

    def resign(self, signing_secret: str) -> Prepared:
        """The same request signed now (Slack refuses signatures older than 5 minutes)."""
        ts = str(int(time.time()))
        return Prepared(self.body, self.content_type, {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": slack_signature(signing_secret, ts, self.body),
        })

    def to_json(self) -> dict[str, Any]:
        return {"body": self.body, "headers": {"Content-Type": self.content_type, **self.headers}}


class RequestBuilder(SlackSide):
    """SlackSide that builds and signs requests without posting them, so a load generator in
    another process can send them. Signatures are valid for Slack's 5 minutes."""

    def __init__(self, state: StandinState, signing_secret: str) -> None:
        super().__init__(state, "http://unused.invalid/", signing_secret)
        self.captured: list[Prepared] = []

    def post(
        self,
        kind: str,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> BotReply:
        self.captured.append(Prepared(body, content_type, self.sign(body, timestamp)))
        return BotReply(kind, 0, "", body)

    def take(self) -> Prepared:
        return self.captured.pop()


# --- processes ---------------------------------------------------------------------------


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM (peak resident set) of a running process, in MiB (Linux)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a running process has used so far, in seconds (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A server process on loopback: `rotabot serve` or the bare Bolt app."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    front: Server | None = None  # `rotabot front`, which Slack's requests then go to

    @property
    def events_url(self) -> str:
        return (self.front or self).url + "/slack/events"

    def peak_rss_mib(self) -> float | None:
        return peak_rss_mib(self.process.pid)

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.process.pid)

    def settle(self, timeout: float = 120.0) -> None:
        """With a front: wait until it has handed the server everything it acked (nothing
        queued, each acked request answered or given up on), so work acked in one
        measurement does not run during the next."""
        front = self.front
        if front is None:
            return

        def handed_over() -> bool:
            page = httpx.get(front.url + "/metrics", timeout=10).text
            done = (metric_sum(page, "rotabot_front_forwarded_total")
                    + metric_sum(page, "rotabot_front_dropped_total"))
            return (metric_sum(page, "rotabot_front_waiting") == 0
                    and done >= metric_sum(page, "rotabot_front_acked_total"))

        wait_for(handed_over, timeout, f"{front.name} handing its queue to {self.name}",
                 poll=0.1)

    def stop(self) -> None:
        if self.front is not None:
            self.front.stop()
        stop_process(self.process, timeout=10)


def start_process(
    name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int
) -> Server:
    log_path = workdir / f"{name}.log"
    proc = spawn(argv, env=env, cwd=workdir, log_path=log_path)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(proc, url, log_path, timeout=60, what=f"{name} at {url}", probe_timeout=2)
    return Server(name, url, proc, log_path)


# A server with a front runs at lower CPU priority, as the README says to run it: the
# front's acks come first, the work they acknowledged after.
NICE_LEVEL = 19
NICE = ["nice", "-n", str(NICE_LEVEL)]


def nice_standin(standin: StandinServer) -> None:
    """Slack's servers do not share our CPUs; the stand-in playing them does. Behind a front
    it runs at the servers' priority (Linux's nice is per thread, and the threads it starts
    inherit it), so its work reaches the front's acks no more than the servers' own does."""
    if standin.thread_id is not None:
        os.setpriority(os.PRIO_PROCESS, standin.thread_id, NICE_LEVEL)


def start_front(name: str, workdir: Path, signing_secret: str, upstream: Server) -> Server:
    """`rotabot front` on a free port, handing Slack's requests to ``upstream``."""
    port = free_port()
    env = process_env({"SLACK_SIGNING_SECRET": signing_secret, "ROTABOT_LOG_LEVEL": "WARNING"})
    return start_process(
        name, [sys.executable, "-m", "bot.cli", "front", "--host", "127.0.0.1", "--port",
               str(port), "--upstream", upstream.url], env, workdir, port)


@dataclass
class BotEnv:
    """Everything one `rotabot serve` run needs and leaves behind."""

    workdir: Path
    standin: StandinServer
    signing_secret: str
    alert_secret: str
    database_url: str
    catalog_path: Path
    bot: Server | None = None

    @property
    def state(self) -> StandinState:
        return self.standin.state


@contextmanager
def bot_env(
    specs: Sequence[SecretSpec],
    database_url: str | None = None,
    *,
    owners: int | None = None,
    settings: dict[str, str] | None = None,
    front: bool = False,
) -> Iterator[BotEnv]:
    """A stand-in workspace, a catalog and `rotabot serve` (started as tests/e2e does), with
    ``settings`` added to its environment; with ``front``, serve runs under ``nice`` behind
    `rotabot front`, which Slack's requests go to."""
    workdir = Path(tempfile.mkdtemp(prefix="rotabot-bench-"))
    store_dir = workdir / "secrets"
    store_dir.mkdir()
    catalog = workdir / "catalog.yml"
    catalog.write_text(catalog_yaml(store_dir, specs))
    n_owners = owners if owners is not None else max(s.consumers for s in specs)
    standin = StandinServer(make_workspace(n_owners)).start()
    if front:
        nice_standin(standin)
    env = BotEnv(
        workdir=workdir,
        standin=standin,
        signing_secret=secrets.token_hex(16),
        alert_secret=secrets.token_hex(16),
        database_url=database_url or f"sqlite:///{workdir / 'rotabot.db'}",
        catalog_path=catalog,
    )
    try:
        proc_env = process_env(serve_env(
            token_tag="bench", standin_url=standin.base_url, database_url=env.database_url,
            catalog=catalog, signing_secret=env.signing_secret, alert_secret=env.alert_secret,
            extra={"ROTABOT_LOG_LEVEL": "WARNING", **(settings or {})}))
        if not env.database_url.startswith("sqlite"):
            subprocess.run(
                [sys.executable, "-m", "bot.cli", "db", "upgrade"],
                cwd=workdir, env=proc_env, check=True, capture_output=True,
            )
        port = free_port()
        env.bot = start_process("rotabot", (NICE if front else []) + serve_command(port),
                                proc_env, workdir, port)
        if front:
            env.bot.front = start_front("rotabot-front", workdir, env.signing_secret, env.bot)
        yield env
    except BaseException:
        print(f"benchmark files kept for inspection in {workdir}", file=sys.stderr)
        raise
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    finally:
        if env.bot is not None:
            env.bot.stop()
        standin.stop()


def start_bare(
    workdir: Path, signing_secret: str, api_url: str, *, front: bool = False
) -> Server:
    """The bare Bolt app (benchmarks/bare_app.py); with ``front``, deployed as rotabot is
    with one: under ``nice``, behind `rotabot front` (the same process count)."""
    port = free_port()
    env = {**os.environ, "SLACK_SIGNING_SECRET": signing_secret, "SLACK_API_URL": api_url,
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                         if p)}
    bare = start_process(
        "bare-bolt-front" if front else "bare-bolt",
        (NICE if front else []) + [sys.executable, "-m", "benchmarks.bare_app", "--port",
                                   str(port)],
        env, workdir, port,
    )
    if front:
        bare.front = start_front("bare-front", workdir, signing_secret, bare)
    return bare


# --- PostgreSQL (the test suite's own starter) -------------------------------------------


@contextmanager
def postgres() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server started exactly as the test suite starts it."""
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


# --- driving the bot ---------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    return eventually(predicate, timeout, what, poll=poll, error=TimeoutError)


def wait_quiet(state: StandinState, quiet: float = 1.0, timeout: float = 300) -> float:
    """Wait until the bot has made no Web API call for `quiet` seconds; returns when the last
    call was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    last_n, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = len(state.calls)
        now = time.monotonic()
        if n != last_n:
            last_n, last_change = n, now
        elif now - last_change >= quiet:
            return last_change
        time.sleep(0.05)
    raise TimeoutError("the bot kept calling Slack; never quiet")


def slack_floor_s(calls: Sequence[Call], since: float) -> float:
    """The least time Slack's tiers allow from ``since`` (wall clock, as ``Call.time``) to the
    last of the Web API calls made after it, had every one of them been ready at ``since``:
    each call takes a token of its bucket at the rates the bot's budget keeps
    (adapters/slack_budget.py: Tier 3 chat.update ~45/min a workspace, chat.postMessage
    ~54/min a channel, bursts as Slack allows). Calls before ``since`` have already spent
    tokens of the same buckets. A drain near this floor is Slack's limit, not the bot."""
    # Seconds after ``since``: wall-clock stamps (~1.7e9) leave too few bits for the sums.
    buckets: dict[str, Bucket] = {}
    ready: dict[str, float] = {}
    floor = 0.0
    for c in sorted(calls, key=lambda c: c.time):
        if c.method == "response_url" or c.status == 429:
            continue  # response_url posts are not Web API calls; a 429 spent no token
        key, rate = bucket_of(c.method, c.args)
        after = c.time >= since
        now = max(0.0, ready.get(key, 0.0)) if after else c.time - since
        bucket, wait = take(buckets.get(key), rate, now)
        while wait > 0 and after:
            now += wait + 1e-6  # the refill's float sum may fall a hair short of one token
            bucket, wait = take(bucket, rate, now)
        buckets[key] = bucket
        if after:
            ready[key] = now
            floor = max(floor, now)
    return floor


def parent_message(state: StandinState, ref: str = "R-1") -> Message | None:
    return next((m for m in state.channel_messages(CHANNEL) if is_rotation_message(m, ref)), None)


def step_buttons(state: StandinState, parent_ts: str) -> dict[tuple[str, str], Message]:
    """(consumer, step) -> the thread prompt holding that step's button."""
    out: dict[tuple[str, str], Message] = {}
    for m in state.thread(CHANNEL, parent_ts):
        for b in m.blocks:
            if b.get("type") != "actions":
                continue
            for e in b.get("elements", []):
                if e.get("action_id") == Action.STEP.value:
                    button = parse_value(StepButton, e.get("value"))
                    out[(button.consumer, button.step.value)] = m
    return out


def send(side: SlackSide, req: Prepared, timeout: float = 30) -> httpx.Response:
    return side.http.post(
        side.events_url, content=req.body.encode(),
        headers={"Content-Type": req.content_type, **req.headers}, timeout=timeout,
    )


def command_now(env: BotEnv, user: str, text: str) -> BotReply:
    assert env.bot is not None
    side = SlackSide(env.state, env.bot.events_url, env.signing_secret)
    return side.command(user, CHANNEL, text)


def click_now(env: BotEnv, user: str, message: Message) -> BotReply:
    assert env.bot is not None
    side = SlackSide(env.state, env.bot.events_url, env.signing_secret)
    return side.click(user, channel=CHANNEL, message_ts=message.ts, action_id=Action.STEP.value)


# --- load generation ---------------------------------------------------------------------


@dataclass
class LoadResult:
    latencies_ms: list[float]
    statuses: dict[str, int]
    wall_s: float
    errors: list[str]

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if s.startswith("2"))


def run_load(
    url: str, requests: Sequence[Prepared], concurrency: int, workdir: Path, warmup: int = 0
) -> LoadResult:
    """Post every request from `concurrency` clients in a separate process (benchmarks.loadgen),
    so the stand-in in this process does not share a GIL with the clock that times them."""
    job = workdir / f"load-{secrets.token_hex(4)}.json"
    out = job.with_suffix(".out.json")
    job.write_text(
        json.dumps(
            {
                "url": url,
                "concurrency": concurrency,
                "warmup": warmup,
                "requests": [r.to_json() for r in requests],
            }
        )
    )
    subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", str(job), str(out)], check=True, cwd=ROOT
    )
    data = json.loads(out.read_text())
    job.unlink()
    out.unlink()
    return LoadResult(data["latencies_ms"], data["statuses"], data["wall_s"], data["errors"])


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(latencies: Sequence[float]) -> dict[str, float]:
    return {
        "n": float(len(latencies)),
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "mean": statistics.fmean(latencies) if latencies else float("nan"),
        "max": max(latencies) if latencies else float("nan"),
    }
