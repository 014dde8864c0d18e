"""`rotabot sandbox`: the real bot against the local Slack stand-in, with a Slack-like page.

One address serves everything a person needs: the page (``/``), its small JSON API
(``/sandbox/...``) and the bot itself (``/slack/events``, ``/alerts``, ``/healthz``). The
page never talks to the bot directly: it asks the sandbox API, which plays Slack's side
(:class:`bot.sandbox.slack_standin.slack_side.SlackSide`) and sends the bot signed requests
exactly as Slack would. The Slack Web API the bot calls is the stand-in, on its own loopback port.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from apscheduler.schedulers.background import BackgroundScheduler
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bot.catalog import CatalogInvalid, EnvFileTarget, load_catalog
from bot.domain.alert_intake import sign
from bot.domain.credentials import StoreError, StoreState
from bot.domain.secret_material import SecretMaterial
from bot.runtime.bootstrap import Container, build
from bot.runtime.server import DirectRoutes, bolt_app, create_web_app
from bot.runtime.settings import Settings
from bot.sandbox.emoji import page_table
from bot.sandbox.slack_standin import StandinServer, StandinState
from bot.sandbox.slack_standin.slack_side import BotReply, SlackSide, SlackSideError
from bot.services.ports import Store, Target

log = logging.getLogger("rotabot.sandbox")

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
CATALOG_TEMPLATE = HERE / "catalog.yml"
MARKER = ".rotabot-sandbox"
# model-api-key's dotenv targets live here (see catalog.yml); reset with the store.
LANES_DIR = "lanes"
LONG_POLL_SECONDS = 15.0

ADMIN = "U0ADMIN"
ROTATIONS = "C0ROTATE"
INCIDENTS = "C0INCIDENT"


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    real_name: str
    role: str


PEOPLE = (
    Person(ADMIN, "ada", "Ada Admin", "admin"),
    Person("U0ALICE", "alice", "Alice Owner", "owner"),
    Person("U0BOB", "bob", "Bob Owner", "owner"),
    Person("U0CAROL", "carol", "Carol (S0DATA)", "owner via @data-eng"),
    Person("U0MALLORY", "mallory", "Mallory Outsider", "outsider"),
)
USER_GROUPS = {"S0DATA": ("data-eng", ("U0CAROL",))}
CHANNELS = {ROTATIONS: "rotations", INCIDENTS: "incidents"}


class SandboxError(Exception):
    """The sandbox cannot start; the message says why and what to do."""


def build_workspace() -> StandinState:
    """The sandbox workspace: people, the data-eng user group and two channels with the bot."""
    state = StandinState(team_name="rotabot-sandbox")
    for p in PEOPLE:
        state.add_user(p.id, p.name, real_name=p.real_name, is_admin=p.role == "admin")
    for gid, (handle, members) in USER_GROUPS.items():
        state.add_usergroup(gid, handle, members)
    everyone = [p.id for p in PEOPLE]
    for cid, name in CHANNELS.items():
        state.add_channel(cid, name, members=everyone, bot_is_member=True)
    return state


def prepare_data_dir(data_dir: str) -> tuple[Path, list[str]]:
    """Create (or reset) the data folder and write the sandbox catalog into it.

    Each run starts fresh: the stand-in's workspace lives in memory, so rotations from an
    earlier run would point at messages that no longer exist. Only a folder this function
    created (it holds a marker file) or an empty one is reset.
    """
    root = Path(data_dir).expanduser().resolve()
    notes: list[str] = []
    if root.exists():
        if not root.is_dir():
            raise SandboxError(f"{root} is not a folder; pick another --data-dir")
        if any(root.iterdir()) and not (root / MARKER).exists():
            raise SandboxError(
                f"{root} is not empty and was not made by `rotabot sandbox`; pick another "
                "--data-dir (the sandbox resets its folder on every start)"
            )
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    (root / MARKER).write_text("made by `rotabot sandbox`; reset on every start\n")
    for name in ("rotabot.db", "rotabot.db-journal", "rotabot.db-wal", "rotabot.db-shm"):
        (root / name).unlink(missing_ok=True)
    shutil.rmtree(root / "secrets", ignore_errors=True)
    shutil.rmtree(root / LANES_DIR, ignore_errors=True)
    catalog_text = CATALOG_TEMPLATE.read_text()
    target = root / "catalog.yml"
    target.write_text(catalog_text)
    try:
        load_catalog(str(target))
    except CatalogInvalid as exc:
        # Until the catalog accepts `kind: local`, fall back to `manual`: the page then offers
        # "Write a new version", which does what a person would do at the provider.
        local_refused = [
            e for e in exc.errors if e.field.endswith("issuer.kind") and "'local'" in e.message
        ]
        if not local_refused or len(local_refused) != len(exc.errors):
            raise
        target.write_text(catalog_text.replace("{kind: local}", "{kind: manual}"))
        load_catalog(str(target))
        notes.append(
            "this rotabot's catalog does not accept the `local` issuer yet: the sandbox uses "
            '`manual` instead; press "Write a new version" on the page after /rotate start'
        )
    return root, notes


@dataclass
class Sandbox:
    """Everything `rotabot sandbox` runs, built in one place so tests can reuse it."""

    data_dir: Path
    standin: StandinServer
    settings: Settings
    container: Container
    notes: list[str] = field(default_factory=list)
    app: DirectRoutes | None = None  # set once the page's routes exist (they need the sandbox)
    slack: SlackSide | None = None
    base_url: str = ""
    timers: BackgroundScheduler | None = None

    @property
    def state(self) -> StandinState:
        return self.standin.state

    # ------------------------------------------------------------------ building

    @classmethod
    def create(cls, data_dir: str, alert_secret: str | None = None) -> Sandbox:

        root, notes = prepare_data_dir(data_dir)
        standin = StandinServer(build_workspace()).start()
        try:
            settings = Settings(
                catalog_path=str(root / "catalog.yml"),
                database_url=f"sqlite:///{root / 'rotabot.db'}",
                slack_api_url=standin.base_url,
                slack_bot_token="xoxb-sandbox-" + secrets.token_hex(12),
                slack_signing_secret=secrets.token_hex(16),
                # Honour the caller's alert secret so the README's curl line works here too.
                alert_secret=alert_secret or secrets.token_hex(24),
                log_level="INFO",
            )
            container = build(settings)
            sandbox = cls(root, standin, settings, container, notes)
            container.extra_routes.extend(sandbox.routes())
            sandbox.app = create_web_app(container, bolt_app(container))
            sandbox.seed_stores()
            sandbox.seed_targets()
        except Exception:
            standin.stop()
            raise
        return sandbox

    def seed_stores(self) -> None:
        """Give every secret a current version, so a rotation has an old credential to keep
        valid beside the new one (values are random and never shown)."""
        service = self.container.service
        for name, spec in self.container.catalog.secrets.items():
            store = service.backends.store_for(name)
            if store.describe(spec.store.path).current is None:
                material = SecretMaterial({"value": secrets.token_urlsafe(32)})
                if self.container.catalog.resolved_issuer(name).kind == "webhook-hmac":
                    # Its issuer reads the shape it writes (secret, secrets, key_id).
                    minted = service.backends.issuer_for(name).mint(None).material
                    material = minted if minted is not None else material
                version = store.write_pending(spec.store.path, material, expected_current=None)
                store.promote(spec.store.path, version)

    def seed_targets(self) -> None:
        """Write every secret's current credential to all its lane targets, so before any
        rotation each lane holds the current value. A dotenv file's folder inside the data
        folder is created first (the env-file target creates files, never folders)."""
        service = self.container.service
        for name, spec in self.container.catalog.secrets.items():
            by_lane = spec.lane_targets()
            if not by_lane:
                continue
            for targets in by_lane.values():
                for t in targets:
                    if isinstance(t, EnvFileTarget) and not Path(t.file).is_absolute():
                        (self.data_dir / t.file).parent.mkdir(
                            parents=True, exist_ok=True, mode=0o700
                        )
            current = service.backends.store_for(name).read(spec.store.path)
            for lane_targets in service.backends.targets_for(name).values():
                for lt in lane_targets:
                    lt.target.write(current)

    def attach(self, base_url: str) -> None:
        """Called once the sandbox listens: Slack's side posts to the bot at this address."""
        self.base_url = base_url.rstrip("/") + "/"
        self.slack = SlackSide(
            self.state, self.base_url + "slack/events", self.settings.slack_signing_secret or ""
        )

    def start_timers(self) -> None:
        from bot.runtime.server import start_timers

        self.timers = start_timers(self.container)

    def stop(self) -> None:
        if self.timers is not None:
            self.timers.shutdown(wait=False)
            self.timers = None
        self.standin.stop()

    # ------------------------------------------------------------------ page API

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page, methods=["GET"]),
            Route("/favicon.ico", self.favicon, methods=["GET"]),
            Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
            Route("/sandbox/config", self.config, methods=["GET"]),
            Route("/sandbox/state", self.snapshot, methods=["GET"]),
            Route("/sandbox/command", self.command, methods=["POST"]),
            Route("/sandbox/action", self.action, methods=["POST"]),
            Route("/sandbox/view_submit", self.view_submit, methods=["POST"]),
            Route("/sandbox/view_close", self.view_close, methods=["POST"]),
            Route("/sandbox/home", self.home, methods=["POST"]),
            Route("/sandbox/alert", self.alert, methods=["POST"]),
            Route("/sandbox/evidence", self.evidence, methods=["POST"]),
            Route("/sandbox/store/write", self.store_write, methods=["POST"]),
        ]

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204)

    async def config(self, request: Request) -> Response:
        catalog = self.container.catalog
        secrets_info = []
        for name, spec in catalog.secrets.items():
            consumers = [
                {"name": cname, "owner": c.owner, "lane": c.lane, "reload": c.reload}
                for cname, c in spec.consumers.items()
            ]
            secrets_info.append(
                {
                    "name": name,
                    "description": spec.description,
                    "issuer": catalog.resolved_issuer(name).kind,
                    "store_path": spec.store.path,
                    "observe": str(catalog.settings_for(name).observe),
                    "consumers": consumers,
                }
            )
        return JSONResponse(
            {
                "team": self.state.team_name,
                "bot": {"user_id": self.state.bot_user_id, "name": self.state.bot_name},
                "people": [p.__dict__ for p in PEOPLE],
                "usergroups": {
                    g: {"handle": h, "users": list(u)} for g, (h, u) in USER_GROUPS.items()
                },
                "channels": [{"id": c, "name": n} for c, n in CHANNELS.items()],
                "secrets": secrets_info,
                "emoji": page_table(),
                "notes": self.notes,
            }
        )

    def _stores(self) -> dict[str, Any]:
        """Each secret's store versions and labels, and what each lane's targets hold
        compared with the store (never a value, nor anything derived from one)."""
        service = self.container.service
        out: dict[str, Any] = {}
        for name, spec in self.container.catalog.secrets.items():
            try:
                store = service.backends.store_for(name)
                described = store.describe(spec.store.path)
            except Exception as exc:  # a page panel must not break the page
                out[name] = {"error": type(exc).__name__}
                continue
            out[name] = {
                "path": spec.store.path,
                "versions": [
                    {
                        "version": v.version,
                        "labels": sorted(label.value for label in v.labels),
                        "destroyed": v.destroyed,
                    }
                    for v in described.versions
                ],
                "lanes": self._lanes(name, store, spec.store.path, described),
            }
        return out

    def _lanes(
        self, name: str, store: Store, path: str, described: StoreState
    ) -> list[dict[str, Any]]:
        """Lane by lane (catalog lane order), which credential each target holds: the
        store's current, pending (new) or previous version, another value, or nothing.
        Values are compared in memory here and never leave this method."""
        try:
            by_lane = self.container.service.backends.targets_for(name)
        except Exception as exc:  # shown as the error class only
            return [{"lane": "*", "error": type(exc).__name__, "targets": []}]
        if not by_lane:
            return []
        # The store's versions worth comparing with, in the order a match is named.
        versions: list[tuple[str, str, SecretMaterial]] = []
        for holds, version in (
            ("new (pending)", described.pending),
            ("current", described.current),
            ("previous", described.previous),
        ):
            if version is None:
                continue
            try:
                versions.append((holds, version, store.read(path, version)))
            except StoreError:  # a destroyed version: no target can match it
                continue
        order = list(self.container.catalog.settings_for(name).lanes)
        lanes = [lane for lane in order if lane in by_lane]
        lanes += [lane for lane in by_lane if lane not in order]
        return [
            {
                "lane": lane,
                "targets": [_holds(t.label, t.target, versions) for t in by_lane[lane]],
            }
            for lane in lanes
        ]

    async def snapshot(self, request: Request) -> Response:
        """The workspace as one user sees it; `since=N` waits (long-poll) for a change."""
        user = request.query_params.get("user") or None
        try:
            since = int(request.query_params.get("since", "-1"))
        except ValueError:
            return JSONResponse({"error": "since must be a number"}, status_code=400)
        deadline = time.monotonic() + LONG_POLL_SECONDS
        while since >= 0 and self.state.seq <= since and time.monotonic() < deadline:
            if await request.is_disconnected():
                return Response(status_code=204)
            await asyncio.sleep(0.1)
        data = self.state.snapshot(user)
        data["stores"] = await run_in_threadpool(self._stores)
        data["rotations"] = await run_in_threadpool(self._rotations)
        return JSONResponse(data)

    def _rotations(self) -> list[dict[str, Any]]:
        return [
            {"ref": r.ref, "id": r.id, "secret": r.secret, "phase": r.phase.value}
            for r in self.container.service.active()
        ]

    async def _slack(self, request: Request, kind: str) -> Response:
        if self.slack is None:
            return JSONResponse({"error": "the sandbox is not listening yet"}, status_code=503)
        body = await _json_object(request)
        if body is None:
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        try:
            reply = await run_in_threadpool(self._dispatch, kind, body)
        except (SlackSideError, KeyError, TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        if reply is None:
            return JSONResponse({"ok": True, "sent": False})
        if not reply.ok:
            log.warning("the bot answered %s to a %s request", reply.status, reply.kind)
        return JSONResponse({"sent": True, **reply.to_dict()})

    def _dispatch(self, kind: str, body: dict[str, Any]) -> BotReply | None:
        slack = self.slack
        assert slack is not None
        user = str(body["user"])
        if kind == "command":
            text = str(body.get("text", "")).strip()
            channel = str(body.get("channel") or ROTATIONS)
            if text.startswith("/"):
                command, _, rest = text.partition(" ")
                return slack.command(user, channel, rest.strip(), command=command)
            thread_ts = body.get("thread_ts") or None
            self.state.post_user_message(channel, user, text, thread_ts=thread_ts)
            return None
        if kind == "action":
            return slack.click(
                user,
                channel=body.get("channel"),
                message_ts=body.get("message_ts"),
                ephemeral_seq=body.get("ephemeral_seq"),
                view_id=body.get("view_id"),
                action_id=body.get("action_id"),
                value=body.get("value"),
                block_id=body.get("block_id"),
                index=int(body.get("index", 0)),
            )
        if kind == "view_submit":
            return slack.submit_view(user, str(body["view_id"]), body.get("values") or {})
        if kind == "view_close":
            return slack.close_view(user, str(body["view_id"]))
        if kind == "home":
            return slack.open_home(user)
        raise ValueError(f"unknown request kind {kind}")

    async def command(self, request: Request) -> Response:
        return await self._slack(request, "command")

    async def action(self, request: Request) -> Response:
        return await self._slack(request, "action")

    async def view_submit(self, request: Request) -> Response:
        return await self._slack(request, "view_submit")

    async def view_close(self, request: Request) -> Response:
        return await self._slack(request, "view_close")

    async def home(self, request: Request) -> Response:
        return await self._slack(request, "home")

    async def alert(self, request: Request) -> Response:
        """Send a failure alert to the bot's `POST /alerts` as a connector would: signed."""
        fields = await _json_object(request)
        if fields is None:
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        status = fields.get("status_code")
        alert = {
            "secret": str(fields.get("secret", "")),
            "consumer": str(fields.get("consumer", "")),
            "lane": str(fields.get("lane", "")) or None,
            "status_code": int(status) if status not in (None, "") else None,
            "error": str(fields.get("error", "")) or None,
            "message": str(fields.get("message", "")) or None,
            "source": "sandbox connector panel",
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return JSONResponse(await self._signed_post("alerts", alert))

    async def evidence(self, request: Request) -> Response:
        """Send a consumer's report to the bot's `POST /evidence` as its sidecar would: the
        version it runs and whether its check passed, signed."""
        fields = await _json_object(request)
        if fields is None:
            return JSONResponse({"error": "send a JSON object"}, status_code=400)
        report = {
            "secret": str(fields.get("secret", "")),
            "consumer": str(fields.get("consumer", "")),
            "version": str(fields.get("version", "")) or None,
            "workflow": str(fields.get("workflow", "")) or None,
            "ok": bool(fields.get("ok", True)),
        }
        return JSONResponse(await self._signed_post("evidence", report))

    async def _signed_post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to the bot's ``path`` signed with ROTABOT_ALERT_SECRET, as a
        connector outside Slack does; returns what the page shows of the answer."""
        body = json.dumps(payload, separators=(",", ":"))
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Rotabot-Timestamp": timestamp,
            "X-Rotabot-Signature": sign(self.settings.alert_secret or "", timestamp, body.encode()),
        }

        def send() -> httpx.Response:
            return httpx.post(self.base_url + path, content=body, headers=headers, timeout=30)

        response = await run_in_threadpool(send)
        return {
            "sent": True,
            "status": response.status_code,
            "ok": response.is_success,
            "body": response.text[:2000],
            "request": payload,
        }

    async def store_write(self, request: Request) -> Response:
        """What a person does for the `manual` issuer: put a new value into the store (the
        bot notices the new version; the value never passes through the page)."""
        try:
            body = await request.json()
            name = str(body["secret"])
            spec = self.container.catalog.secret(name)
        except Exception as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

        def put() -> str:
            store = self.container.service.backends.store_for(name)
            material = SecretMaterial({"value": secrets.token_urlsafe(32)})
            put_version = getattr(store, "put", None)
            if put_version is None:
                raise SandboxError(f"the store of {name} cannot take a manual write")
            return str(put_version(spec.store.path, material))

        try:
            version = await run_in_threadpool(put)
        except Exception as exc:
            return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)
        return JSONResponse({"ok": True, "secret": name, "version": version})


async def _json_object(request: Request) -> dict[str, Any] | None:
    """The request's JSON object, or None when it is not one."""
    try:
        fields = await request.json()
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def _holds(
    label: str, target: Target, versions: list[tuple[str, str, SecretMaterial]]
) -> dict[str, str]:
    """What ``target`` holds, named by the store version it equals (never the value)."""
    try:
        held = target.read()
    except Exception as exc:  # shown as the error class only
        return {"label": label, "holds": "unreadable", "error": type(exc).__name__}
    if held is None:
        return {"label": label, "holds": "empty"}
    field_name = getattr(target, "field", None)
    for holds, version, material in versions:
        if _same(held, material, field_name):
            return {"label": label, "holds": holds, "version": version}
    return {"label": label, "holds": "other"}


def _same(held: SecretMaterial, material: SecretMaterial, field_name: str | None) -> bool:
    """Whether a target holding ``held`` holds ``material`` as a write of it would leave it:
    the target's ``field`` (or all of it), or its one value under the target's own name (a
    dotenv key)."""
    wanted = material.reveal()
    if field_name is not None:
        if field_name not in wanted:
            return False
        wanted = {field_name: wanted[field_name]}
    got = held.reveal()
    if got == wanted:
        return True
    return len(got) == 1 and len(wanted) == 1 and list(got.values()) == list(wanted.values())


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def run_sandbox(host: str, port: int, data_dir: str, alert_secret: str | None = None) -> int:
    """Start the sandbox and serve until interrupted; prints the address to open.

    ``alert_secret`` (ROTABOT_ALERT_SECRET) signs `POST /alerts`, so the README's curl line
    reaches the sandbox; without it the sandbox makes one up for its own page."""
    import uvicorn

    from bot.runtime.logs import configure_logging

    try:
        sock = _bind(host, port)
    except OSError as exc:
        print(
            f"rotabot sandbox: cannot listen on {host}:{port} ({exc.strerror}); "
            "try --port 0 for a free port",
            file=sys.stderr,
        )
        return 2
    try:
        sandbox = Sandbox.create(data_dir, alert_secret=alert_secret)
    except (SandboxError, CatalogInvalid) as exc:
        sock.close()
        print(f"rotabot sandbox: {exc}", file=sys.stderr)
        return 2
    configure_logging(sandbox.settings.log_level)
    # The timer job runs every two seconds; its INFO lines would drown the bot's own.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    real_port = sock.getsockname()[1]
    # The bot's own requests to itself go over loopback whatever address the page uses.
    if host in ("0.0.0.0", "localhost"):  # noqa: S104
        local = "127.0.0.1"
    elif host == "::":
        local = "[::1]"
    else:
        local = f"[{host}]" if ":" in host else host
    sandbox.attach(f"http://{local}:{real_port}/")
    sandbox.start_timers()
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    for note in sandbox.notes:
        print(f"rotabot sandbox: note: {note}", file=sys.stderr)
    print(f"rotabot sandbox: data in {sandbox.data_dir}", flush=True)
    print(f"rotabot sandbox: Slack stand-in at {sandbox.standin.root_url}", flush=True)
    print(f"rotabot sandbox: open http://{shown}:{real_port}/ in a browser", flush=True)
    if alert_secret:
        print(f"rotabot sandbox: alerts at http://{shown}:{real_port}/alerts, signed with "
              "ROTABOT_ALERT_SECRET", flush=True)
    assert sandbox.app is not None  # Sandbox.create built it
    config = uvicorn.Config(
        sandbox.app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sandbox.stop()
        sock.close()
    return 0
