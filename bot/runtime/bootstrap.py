"""The composition root: builds every adapter and service once, into typed fields.

Nothing else in the code base constructs an adapter, a repository or a service for the
running process: listeners get :class:`handlers.deps.Deps` (services only), the server and the
timers get this container. No import-time work.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from starlette.routing import BaseRoute

from adapters.health import HealthChecker
from adapters.slack_budget import SlackCallBudget
from adapters.slack_client import CountingWebClient
from adapters.slack_client import slack_client as counting_slack_client
from adapters.slack_directory import SlackOwnerDirectory
from adapters.slack_notifier import SlackNotifier
from bot.catalog import Catalog, load_catalog_hashed
from bot.domain.alert_intake import RateLimiter
from bot.domain.clock import Clock, SystemClock
from bot.domain.gate import GateResult
from bot.domain.rotation import Rotation
from bot.runtime.backends import CatalogBackends
from bot.runtime.metrics import (
    SlackBudgetCollector,
    SqlStoreReads,
    StateCollector,
    TimerHeartbeat,
)
from bot.runtime.settings import Settings
from bot.services.alert_batches import GroupCommit
from bot.services.alerts import AlertService
from bot.services.catalog_reload import CatalogKeeper
from bot.services.evidence import EvidenceService
from bot.services.health import HealthService, RotationEvidence
from bot.services.health_schedule import HealthSchedule
from bot.services.ports import BackendRegistry
from bot.services.rotations import RotationService
from bot.services.schedules import ScheduleService
from bot.services.timers import TimerWork
from handlers import blocks
from handlers.deps import Deps
from handlers.notices import SlackAlertMessenger, SlackScheduleNotices, ThreadReceipts
from storage.claims import SqlPostClaims
from storage.deliveries import SqlAlertPostClaims, SqlDeliveryLog
from storage.engine import make_engine
from storage.evidence import SqlEvidenceLog
from storage.leader import Leader, leader_for
from storage.migrate import upgrade
from storage.reminders import SqlReminderLog
from storage.replicas import SqlReplicaCatalogs
from storage.schedules import SqlScheduleRepository
from storage.slack_budget import SqlTokenBuckets
from storage.slack_requests import SqlSlackRequests
from storage.unit_of_work import sql_unit_of_work_factory
from storage.work_locks import SqlWorkLocks

log = logging.getLogger("rotabot")

# Minting and writing the pending version take seconds; a claim older than this belongs to a
# process that died mid-way, and the timer may take the preparation over.
PREPARE_LEASE = timedelta(seconds=15)


@dataclass
class Container:
    """Everything one rotabot process runs on, built by :func:`build`."""

    settings: Settings
    catalog: Catalog
    engine: Engine
    clock: Clock
    slack: CountingWebClient
    # Slack's rate limits for every Web API call of the process (shared through the database).
    slack_budget: SlackCallBudget
    notifier: SlackNotifier
    service: RotationService
    health: HealthService
    alerts: AlertService
    evidence: EvidenceService
    schedules: ScheduleService
    deliveries: SqlDeliveryLog
    # POST /alerts: reports arriving together are stored in one transaction.
    intake: GroupCommit
    alert_limiter: RateLimiter
    # Slack requests taken by any replica: replays ignored (the Bolt middleware in
    # bot/runtime/slack_replay.py), repeated actions answered (RotationService.actions).
    slack_requests: SqlSlackRequests
    leader: Leader
    timers: TimerWork
    health_schedule: HealthSchedule
    # What /metrics serves: Slack call counters and the rotation/alert gauges.
    metrics: CollectorRegistry
    # The catalog this replica runs: reload, and the check against the other replicas'.
    catalog_keeper: CatalogKeeper
    # Routes served beside Slack's, /alerts, /healthz and /metrics (the sandbox's page).
    extra_routes: list[BaseRoute] = field(default_factory=list)

    @property
    def deps(self) -> Deps:
        """What listeners and the /alerts route are handed: services, never storage."""
        return Deps(
            rotations=self.service,
            alerts=self.alerts,
            schedules=self.schedules,
            health=self.health,
            notifier=self.notifier,
            deliveries=self.deliveries,
            clock=self.clock,
            alert_secret=self.settings.alert_secret,
            alertmanager_tokens=self.settings.alertmanager_tokens,
            catalog_keeper=self.catalog_keeper,
            intake=self.intake,
            alert_limiter=self.alert_limiter,
        )


def replica_name() -> str:
    """This process among the replicas: host, pid and a random part (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    migrate: bool | None = None,
    backends: BackendRegistry | None = None,
    slack_clock: Callable[[], float] | None = None,
) -> Container:
    """``slack_clock`` (epoch seconds) drives the Slack call budget: a test steps it with the
    stand-in's clock instead of waiting out Slack's rate limits."""
    catalog, catalog_sha256 = load_catalog_hashed(settings.catalog_path)
    if migrate is None:
        migrate = settings.database_url.startswith("sqlite")
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    clock = clock or SystemClock()
    metrics = CollectorRegistry()  # per container: several in one test process never collide
    # Every Web API call waits for its method's token, in buckets every replica shares.
    budget = SlackCallBudget(SqlTokenBuckets(engine), clock=slack_clock or time.time)
    client = counting_slack_client(settings.slack_bot_token, settings.slack_api_url, metrics,
                                   budget=budget)
    # In the database every replica shares, so a replay or repeat landing on another (or
    # after a restart) is taken once.
    slack_requests = SqlSlackRequests(engine, clock)
    def backends_for(catalog: Catalog) -> BackendRegistry:
        # A registry handed in (tests, the sandbox) serves every catalog it is given.
        return backends or CatalogBackends(catalog, settings.credentials_env)

    service = RotationService(
        catalog=catalog,
        uow_factory=sql_unit_of_work_factory(engine),
        backends=backends_for(catalog),
        clock=clock,
        directory=SlackOwnerDirectory(client),
        actions=slack_requests,
        # A preparation whose process died is retried by the timer once the claim lapses.
        claims=SqlPostClaims(engine, clock.now, lease=PREPARE_LEASE),
        work_locks=SqlWorkLocks(engine),
    )
    probe = HealthChecker(env=settings.credentials_env)
    # Owners pressing Validated trigger the consumer's catalog health check.
    health = HealthService(service=service, probe=probe).install()

    def evidence_for(rotation: Rotation) -> RotationEvidence | None:
        try:
            return health.evidence(rotation)
        except Exception as exc:  # the message still renders without its evidence
            log.warning("rotation evidence unavailable: %s", type(exc).__name__)
            return None

    def gate_for(rotation: Rotation) -> GateResult:
        return service.gate_of(rotation)

    notifier = SlackNotifier(
        client=client,
        render=blocks,  # the Block Kit of handlers/blocks/
        load=service.get,
        attach=service.attach_message,
        gate_lines=gate_for,
        evidence=evidence_for,
        context=service.message_context,
        # One replica posts each message and prompt, once, even across crashes.
        claims=SqlPostClaims(engine, service.clock.now),
        budget=budget,
    )
    service.on_change.append(notifier.rotation_changed)
    # Gauges from a snapshot refreshed at most every few seconds, not a query per scrape.
    state_metrics = StateCollector(service.active, service.recent_alerts,
                                   store=SqlStoreReads(engine), catalog=catalog)
    metrics.register(state_metrics)
    heartbeat = TimerHeartbeat()  # set by the last timer job of each run (the leader only)
    metrics.register(heartbeat)
    metrics.register(SlackBudgetCollector(budget))
    # One AlertService per process: its coalescing state is shared by /alerts and buttons.
    alerts = AlertService(rotations=service, messenger=SlackAlertMessenger(notifier),
                          on_rotation_alert=notifier.refresh,
                          # Each new alert posted once across replicas, even across crashes.
                          post_claims=SqlAlertPostClaims(engine, clock))
    # Every state change is told in the rotation's thread; an ended rotation resolves its
    # alerts (after the receipt, so the thread reads in order).
    service.on_receipts.append(ThreadReceipts(notifier, lambda: service.catalog))
    service.on_receipts.append(alerts.rotation_ended)
    schedules = ScheduleService(
        rotations=service,
        repo=SqlScheduleRepository(engine),
        notices=SlackScheduleNotices(notifier, lambda: service.catalog),
    )
    leader = leader_for(settings.database_url)
    keeper = CatalogKeeper(
        rotations=service, replicas=SqlReplicaCatalogs(engine), replica_id=replica_name(),
        sha256=catalog_sha256, file=str(settings.catalog_path),
        read=lambda: load_catalog_hashed(settings.catalog_path),
        backends_for=backends_for, clock=clock,
        on_applied=[state_metrics.use_catalog],
    )

    paused: list[str | None] = [None]  # the last reason logged: once, not every 2 s

    def leads_with_current_catalog() -> bool:
        # A leader running a stale catalog would act on old owners and lanes: its timers
        # wait (and say why, once) until it is reloaded.
        if not leader.is_leader():
            return False
        reason = keeper.stale()
        if reason is not None and reason != paused[0]:
            log.warning("timers paused: %s", reason)
        paused[0] = reason
        return reason is None
    health_schedule = HealthSchedule(alerts, probe, settings.health_interval)
    reminders = SqlReminderLog(engine)
    # Consumers' reports move steps, back (or refuse) clicks, feed the gate, raise drift;
    # their silence is a timer job below.
    evidence = EvidenceService(
        rotations=service, alerts=alerts, reports=SqlEvidenceLog(engine), reminders=reminders,
    ).install(health)
    evidence.on_step.append(notifier.evidence_step)
    timers = TimerWork(
        service,
        is_leader=leads_with_current_catalog,
        reminders=reminders,
        notices=notifier,
        # Leader-only periodic work: health checks while rotations run, silent consumers,
        # scheduled rotations and max_age reminders.
        extra=[health_schedule.run_due, evidence.run_silence, schedules.run_due,
               heartbeat.beat],
        refresh=notifier.refresh,
    )
    return Container(
        settings=settings,
        catalog=catalog,
        engine=engine,
        clock=clock,
        slack=client,
        slack_budget=budget,
        notifier=notifier,
        service=service,
        health=health,
        alerts=alerts,
        evidence=evidence,
        schedules=schedules,
        # In the database every replica shares, so a retry landing on another counts once.
        deliveries=SqlDeliveryLog(engine, clock),
        intake=GroupCommit(alerts),
        alert_limiter=RateLimiter(rate=settings.alert_flood_limit[0],
                                  burst=settings.alert_flood_limit[1]),
        slack_requests=slack_requests,
        leader=leader,
        timers=timers,
        health_schedule=health_schedule,
        metrics=metrics,
        catalog_keeper=keeper,
    )
