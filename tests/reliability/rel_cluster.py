"""The reliability harness: `rotabot serve` replicas on one PostgreSQL, one Slack stand-in,
real Redis and OpenBao, and fault proxies that can stand between the bot and any of them."""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from faultproxy import FaultProxy
from harness.backends import catalog_backends, redis_auth_ok
from harness.messages import asks, button_labels, is_rotation_message
from harness.serve import ServeProcess, catalog_head, process_env, serve_env, workspace
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bot.sandbox.slack_standin.server import StandinServer
from bot.sandbox.slack_standin.slack_side import BotReply, SlackSide
from bot.sandbox.slack_standin.state import Ephemeral, Message, StandinState
from handlers.ids import Action

ROOT = Path(__file__).resolve().parents[2]
CHANNEL = "C0ROTATE"
APP_USER = "app"  # the Redis ACL user the redis-acl issuer rotates
SECRET = "model-api-key"

# How many rounds the race, crash and fault loops run: a few by default; `make soak` sets
# ROTABOT_SOAK_ROUNDS for the long runs.
ROUNDS = int(os.environ.get("ROTABOT_SOAK_ROUNDS", "0") or 0)


def rounds(default: int) -> int:
    return ROUNDS if ROUNDS > 0 else default


# After catalog_head(observe=...).
CATALOG_BODY = catalog_backends("{vault_url}") + """\
secrets:
  model-api-key:
    description: Model provider key
    issuer: {issuer}
    store: {{name: bao, path: {path}}}
    consumers:
      retriever: {{owner: U0BOB, lane: dev, reload: hot, rollback: Pin the previous version}}
      nightly-ingest:
        owner: S0DATA
        lane: staging
        reload: restart
        rollback: Restart with the previous version pinned
      inference-api: {{owner: U0ALICE, lane: prod, reload: hot, rollback: Pin the previous}}
"""

# Owner of each consumer, in lane order, as the catalog above says.
OWNERS = [("retriever", "U0BOB"), ("nightly-ingest", "U0CAROL"), ("inference-api", "U0ALICE")]


def with_port(url: str, port: int) -> str:
    """The same URL (any scheme) pointing at 127.0.0.1:<port>, e.g. through a fault proxy."""
    if url.startswith("postgresql"):
        return make_url(url).set(host="127.0.0.1", port=port).render_as_string(
            hide_password=False
        )
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    auth = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{port}"))


def url_port(url: str) -> int:
    if url.startswith("postgresql"):
        port = make_url(url).port
    else:
        from urllib.parse import urlsplit

        port = urlsplit(url).port
    assert port is not None
    return int(port)


class Replica(ServeProcess):
    """One of the cluster's `rotabot serve` processes; each start is marked in its log."""

    def start(self, timeout: float = 30, probe_timeout: float = 2) -> Replica:
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {self.starts + 1} ---\n".encode())
        super().start(timeout, probe_timeout)
        return self


@dataclass
class Cluster:
    """Replicas, the stand-in and the database they share, and helpers to drive a rotation."""

    standin: StandinServer
    replicas: list[Replica]
    database_url: str  # direct (the test's view); replicas may go through a proxy
    signing_secret: str
    workdir: Path
    proxies: dict[str, FaultProxy] = field(default_factory=dict)
    _rr: Iterator[int] = field(default_factory=lambda: itertools.count())
    _rr_lock: threading.Lock = field(default_factory=threading.Lock)
    _engine: Engine | None = None

    @property
    def state(self) -> StandinState:
        return self.standin.state

    # --- Slack's side, spread across replicas ----------------------------------------

    def slack(self, replica: int | None = None) -> SlackSide:
        """Slack's side aimed at one replica (round-robin when not given)."""
        if replica is None:
            with self._rr_lock:
                replica = next(self._rr) % len(self.replicas)
        target = self.replicas[replica]
        return SlackSide(self.state, target.url + "/slack/events", self.signing_secret,
                         http=httpx.Client(timeout=30))

    def command(self, user: str, text: str, *, replica: int | None = None) -> BotReply:
        return self.slack(replica).command(user, CHANNEL, text)

    def click(self, user: str, message_ts: str, action_id: str, *,
              replica: int | None = None) -> BotReply:
        return self.slack(replica).click(user, channel=CHANNEL, message_ts=message_ts,
                                         action_id=action_id)

    # --- what the bot posted -----------------------------------------------------------

    def parents(self, rotation: str = "R-1") -> list[Message]:
        return [m for m in self.state.channel_messages(CHANNEL)
                if is_rotation_message(m, rotation)]

    def parent(self, rotation: str = "R-1", timeout: float = 15) -> Message:
        return self.state.wait_for(lambda s: next(iter(self.parents(rotation)), None), timeout)

    def prompts(self, consumer: str, label: str) -> list[Message]:
        """Every thread message that asked `consumer`'s owner for the step named `label`
        (whether or not it has been answered since)."""
        found = []
        for parent in self.parents():
            for m in self.state.thread(CHANNEL, parent.ts):
                if m.ts != parent.ts and m.text.startswith(consumer + " ") and (
                        label.lower() in m.text.lower() or label in button_labels(m)):
                    found.append(m)
        return found

    def open_prompt(self, consumer: str, label: str, timeout: float = 15) -> Message:
        return self.state.wait_for(lambda s: next(
            (m for parent in self.parents() for m in reversed(s.thread(CHANNEL, parent.ts))
             if asks(m, consumer, label)), None), timeout)

    def wait_ephemeral(self, user: str, needle: str, timeout: float = 15,
                       after: int = 0) -> Ephemeral:
        return self.state.wait_for(
            lambda s: next((e for e in reversed(s.ephemerals_for(user)[after:])
                            if needle in e.text), None), timeout)

    def wait_phase(self, words: str, timeout: float = 45, rotation: str = "R-1") -> Message:
        # Generous: the message is a refresh, last in Slack's call budget, behind a slow
        # Slack and every replica's prompt edits on a loaded CI machine.
        try:
            return self.state.wait_for(
                lambda s: next((m for m in self.parents(rotation) if words in m.text), None),
                timeout)
        except TimeoutError:
            raise AssertionError(f"the rotation message never showed {words!r} in {timeout} s"
                                 f"\n{self.diagnosis(rotation)}") from None

    def diagnosis(self, rotation: str = "R-1") -> str:
        """What a stuck wait needs to tell "phase not reached" from "message stale": the
        database's phase, what the message shows, every update of it, each replica's log."""
        rotation_id = int(rotation.removeprefix("R-"))
        try:
            row = self.rotation_row(rotation_id)
            db = f"database: phase={row['phase']} revision={row.get('revision')}"
        except Exception as exc:  # the database itself may be what broke
            db = f"database: unreadable ({type(exc).__name__}: {exc})"
        shown = [m.text.splitlines()[0] if m.text else "" for m in self.parents(rotation)]
        parent_ts = {m.ts for m in self.parents(rotation)}
        updates = [f"  {c.time:.3f} {'ok' if c.ok else c.error or c.status}: "
                   f"{str(c.args.get('text', '')).splitlines()[0][:100]}"
                   for c in self.state.calls_to("chat.update") if c.args.get("ts") in parent_ts]
        logs = [f"--- {r.name} ({'alive' if r.alive else 'dead'}), last lines:\n"
                + "\n".join(r.log_text().splitlines()[-25:]) for r in self.replicas]
        return "\n".join([db, f"message shows: {shown}",
                          f"chat.update of the message ({len(updates)}), last 15:",
                          *updates[-15:], *logs])

    def has_button(self, action: Action) -> bool:
        return any(e.get("action_id") == action.value for m in self.parents()
                   for b in m.blocks for e in b.get("elements", []))

    # --- the shared database -----------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.database_url, pool_pre_ping=True)
        return self._engine

    def sql(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query), params)]

    def rotation_row(self, rotation_id: int = 1) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(text("select * from rotations where id = :id"),
                               {"id": rotation_id}).mappings().one()
            return dict(row)

    def steps(self, rotation_id: int = 1) -> dict[str, str]:
        return {c: s for c, s in self.sql(
            "select name, state from consumer_steps where rotation_id = :id",
            id=rotation_id)}

    # --- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()
        for p in self.proxies.values():
            p.stop()
        self.standin.stop()
        if self._engine is not None:
            self._engine.dispose()


def db_upgrade(database_url: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run([sys.executable, "-m", "bot.cli", "db", "upgrade"], env=env,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"rotabot db upgrade failed:\n{done.stdout}\n{done.stderr}")


def build_cluster(
    workdir: Path,
    *,
    database_url: str,
    vault_url: str,
    vault_token: str,
    replicas: int,
    issuer: str,
    store_path: str,
    observe: str = "3s",
    extra_env: dict[str, str] | None = None,
    proxied: tuple[str, ...] = (),
    proxies: dict[str, FaultProxy] | None = None,
) -> Cluster:
    """Migrate the database, start the stand-in and `replicas` serve processes.

    ``proxied`` names the back ends ("slack", "db", "vault") that every replica reaches
    through a fault proxy (``cluster.proxies[name]``); ``proxies`` adds ones the test made."""
    db_upgrade(database_url)
    standin = StandinServer(workspace("rotabot-reliability")).start()
    signing_secret = secrets.token_hex(16)
    cluster = Cluster(standin=standin, replicas=[], database_url=database_url,
                      signing_secret=signing_secret, workdir=workdir,
                      proxies=dict(proxies or {}))
    try:
        targets = {"slack": standin.port, "db": url_port(database_url),
                   "vault": url_port(vault_url)}
        for name in proxied:
            cluster.proxies[name] = FaultProxy("127.0.0.1", targets[name], name=name).start()

        def through(name: str, url: str) -> str:
            proxy = cluster.proxies.get(name)
            return with_port(url, proxy.port) if proxy is not None else url

        catalog = workdir / "catalog.yml"
        catalog.write_text(catalog_head(observe=observe) + CATALOG_BODY.format(
            vault_url=through("vault", vault_url), issuer=issuer, path=store_path))
        env = process_env(serve_env(
            token_tag="rel", standin_url=through("slack", standin.base_url.rstrip("/")) + "/",
            database_url=through("db", database_url), catalog=catalog,
            signing_secret=signing_secret, alert_secret=secrets.token_hex(16),
            extra={"VAULT_TOKEN": vault_token, **(extra_env or {})}))
        for i in range(replicas):
            cluster.replicas.append(Replica(env, workdir, workdir / f"replica-{i}.log",
                                            name=f"replica {i}").start())
    except BaseException:
        cluster.stop()
        raise
    return cluster


def seed_vault(vault_url: str, token: str, path: str, data: dict[str, str]) -> None:
    """Write the first version of the secret (the bot adopts it as current)."""
    import hvac

    client = hvac.Client(url=vault_url, token=token)
    client.secrets.kv.v2.create_or_update_secret(path=path, secret=data, mount_point="secret")


def vault_versions(vault_url: str, token: str, path: str) -> dict[str, Any]:
    import hvac

    client = hvac.Client(url=vault_url, token=token)
    meta = client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")
    return dict(meta["data"])


def authenticates(redis_port: int, password: str) -> bool:
    """Does the real Redis accept the app user with this password right now?"""
    return redis_auth_ok("127.0.0.1", redis_port, APP_USER, password)


def race(*calls: Callable[[], BotReply]) -> list[BotReply]:
    """Fire the calls at the same moment from separate threads; every one must be acked."""
    barrier = threading.Barrier(len(calls))
    replies: list[BotReply | BaseException] = [RuntimeError("not run")] * len(calls)

    def run(i: int, call: Callable[[], BotReply]) -> None:
        barrier.wait()
        try:
            replies[i] = call()
        except BaseException as exc:  # reported below, with the others
            replies[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    done = [r for r in replies if isinstance(r, BotReply)]
    assert len(done) == len(calls), [r for r in replies if not isinstance(r, BotReply)]
    assert all(r.status == 200 for r in done), [(r.status, r.body[:200]) for r in done]
    return done


def clicks(cluster: Cluster, user: str, ts: str, action: Action,
           replicas: Iterator[int] | range | None = None) -> list[Callable[[], BotReply]]:
    """One click per replica (all of them by default), ready to be raced."""
    def one(i: int) -> Callable[[], BotReply]:
        return lambda: cluster.click(user, ts, action.value, replica=i)
    return [one(i) for i in (replicas if replicas is not None else range(len(cluster.replicas)))]


def on_every_replica(cluster: Cluster, user: str, ts: str, action: Action) -> list[BotReply]:
    """The same click delivered to every replica at once (a retried or double-clicked button
    whose requests the load balancer spread)."""
    return race(*clicks(cluster, user, ts, action))


def thread_posts(cluster: Cluster) -> Counter[str]:
    """How many times each thread prompt was posted (successful chat.postMessage in a thread)."""
    return Counter(str(c.args.get("text")) for c in cluster.state.calls_to("chat.postMessage")
                   if c.ok and c.args.get("channel") == CHANNEL and c.args.get("thread_ts"))


def parent_posts(cluster: Cluster) -> int:
    return sum(1 for c in cluster.state.calls_to("chat.postMessage")
               if c.ok and c.args.get("channel") == CHANNEL and not c.args.get("thread_ts"))
