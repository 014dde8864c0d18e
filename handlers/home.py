"""App Home: the dashboard of active rotations, the viewer's pending steps, recent alerts."""

from __future__ import annotations

from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from handlers import blocks
from handlers.deps import Deps
from handlers.respond import reported


def register(app: App, deps: Deps) -> None:
    @app.event("app_home_opened")
    @reported
    def home(event: dict[str, Any], client: WebClient) -> None:
        if event.get("tab", "home") != "home":
            return
        publish_home(deps, client, str(event["user"]))


def publish_home(deps: Deps, client: WebClient, user: str) -> None:
    service = deps.rotations
    active = service.active()
    mine = [
        (r, consumer, step)
        for r in active
        for consumer, step in r.pending_steps()
        if service.owns(user, consumer.owner)
    ]
    client.views_publish(
        user_id=user,
        view=blocks.home_view(user, active, mine, service.recent_alerts(),
                              service.unmapped_consumers(active), deps.schedules.upcoming()),
    )
