"""The composition root: builds every dependency once and hands it in. No import-time work."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from slack_sdk import WebClient
from sqlalchemy.engine import Engine

from adapters.slack_client import slack_client as counting_slack_client
from adapters.slack_directory import SlackOwnerDirectory
from adapters.slack_notifier import SlackNotifier
from bot.catalog import Catalog, load_catalog
from bot.domain.clock import Clock, SystemClock
from bot.domain.gate import GateResult
from bot.domain.rotation import Rotation
from bot.runtime.backends import CatalogBackends
from bot.runtime.settings import Settings
from bot.services.health import HealthService, RotationEvidence
from bot.services.rotations import RotationService
from storage.claims import SqlPostClaims
from storage.engine import make_engine
from storage.migrate import upgrade
from storage.unit_of_work import sql_unit_of_work_factory

log = logging.getLogger("rotabot")


@dataclass
class Container:
    settings: Settings
    catalog: Catalog
    engine: Engine
    service: RotationService
    slack: WebClient
    notifier: SlackNotifier
    clock: Clock
    extras: dict[str, object] = field(default_factory=dict)
    health: HealthService | None = None


def slack_client(settings: Settings) -> WebClient:
    return counting_slack_client(settings.slack_bot_token, settings.slack_api_url)


def build(
    settings: Settings,
    *,
    clock: Clock | None = None,
    migrate: bool | None = None,
    backends: CatalogBackends | None = None,
) -> Container:
    catalog = load_catalog(settings.catalog_path)
    if migrate is None:
        migrate = settings.database_url.startswith("sqlite")
    if migrate:
        upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    clock = clock or SystemClock()
    client = slack_client(settings)
    service = RotationService(
        catalog=catalog,
        uow_factory=sql_unit_of_work_factory(engine),
        backends=backends or CatalogBackends(catalog),
        clock=clock,
        directory=SlackOwnerDirectory(client),
    )

    def gate_for(rotation: Rotation) -> GateResult:
        return service.gate_of(rotation)

    from adapters.health import HealthChecker

    # Owners pressing Validated trigger the consumer's catalog health check.
    health = HealthService(service=service, probe=HealthChecker()).install()

    def evidence_for(rotation: Rotation) -> RotationEvidence | None:
        try:
            return health.evidence(rotation)
        except Exception as exc:  # the message still renders without its evidence
            log.warning("rotation evidence unavailable: %s", type(exc).__name__)
            return None

    notifier = SlackNotifier(
        client=client, load=service.get, attach=service.attach_message, gate_lines=gate_for,
        evidence=evidence_for,
        # One replica posts each message and prompt, once, even across crashes.
        claims=SqlPostClaims(engine, service.clock.now),
    )
    service.on_change.append(notifier.rotation_changed)
    return Container(
        settings=settings,
        catalog=catalog,
        engine=engine,
        service=service,
        slack=client,
        notifier=notifier,
        clock=clock,
        health=health,
    )
