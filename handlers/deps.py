"""What Slack listeners and the /alerts route are handed: the use cases, never storage, the
container or an adapter. The composition root (bot/runtime/bootstrap.py) builds it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.catalog import Catalog
from bot.domain.alert_intake import Deliveries, RateLimiter
from bot.domain.clock import Clock
from bot.domain.lifecycle import StepState
from bot.domain.rotation import ConsumerProgress, Rotation
from bot.services.alert_batches import GroupCommit
from bot.services.alerts import AlertService
from bot.services.catalog_reload import CatalogKeeper
from bot.services.health import HealthService
from bot.services.rotations import RotationService
from bot.services.schedules import ScheduleService
from handlers.blocks import Rendered


class Poster(Protocol):
    """The Slack notifier as listeners use it (adapters/slack_notifier.py implements it)."""

    @property
    def posts_once(self) -> bool:
        """True when posts are claimed in the database (replicas, restarts), so offering a
        rotation's message and prompts again posts only what is missing."""
        ...

    def rotation_changed(
        self, rotation: Rotation, turns: list[tuple[ConsumerProgress, StepState]]
    ) -> None: ...

    def post(self, channel: str, rendered: Rendered, thread_ts: str | None = None) -> str: ...

    def post_later(
        self, channel: str, rendered: Rendered, thread_ts: str | None = None
    ) -> None: ...

    def update(
        self, channel: str, ts: str, rendered: Rendered, *, refresh: bool = False
    ) -> None: ...

    def replace_later(self, channel: str, ts: str, rendered: Rendered) -> None: ...

    def retire_prompts(self, rotation: Rotation) -> int: ...

    def refresh(self, rotation_id: int) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class Deps:
    rotations: RotationService
    alerts: AlertService
    schedules: ScheduleService
    health: HealthService
    notifier: Poster
    # /alerts: where delivery ids are reserved, the clock signatures are checked against, and
    # the HMAC key (None: intake is off).
    deliveries: Deliveries
    clock: Clock
    alert_secret: str | None
    # /alerts from Prometheus Alertmanager: the tokens its Authorization may carry (none: off).
    alertmanager_tokens: tuple[str, ...] = ()
    # `/rotate reload`, and the check that this replica runs the newest catalog (None: one
    # process built without a database of replicas, as some tests do).
    catalog_keeper: CatalogKeeper | None = None
    # /alerts: the group commit reports are stored through (None: the route makes its own
    # for ``alerts``) and the flood limit per sender (None: RateLimiter's defaults).
    intake: GroupCommit | None = None
    alert_limiter: RateLimiter | None = None

    @property
    def catalog(self) -> Catalog:
        return self.rotations.catalog
