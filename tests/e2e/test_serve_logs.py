"""What `rotabot serve` logs while idle: no line per timer run (APScheduler's "Running job" /
"executed successfully", every 2 s) and no Bolt warning about the token at start.

The bot runs with ROTABOT_LIBRARY_LOG_LEVEL=INFO, the most a user asks for short of DEBUG
(where the per-run lines are wanted), so any library line at INFO or above would show.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
from conftest import Bot, BotConfig
from harness.serve import eventually

TIMER_INTERVAL = timedelta(seconds=2)  # bot.runtime.server.start_scheduler


@pytest.fixture
def bot_config() -> BotConfig:
    return BotConfig(env={"ROTABOT_LIBRARY_LOG_LEVEL": "INFO"})


def json_lines(text: str) -> list[dict[str, str]]:
    lines = []
    for raw in text.splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue  # a partly written last line
    return lines


def second_timer_run(bot: Bot) -> bool:
    """True once the log shows the timer's query of active rotations after its second run was
    due: SQLAlchemy logs each statement at INFO, and only the timer (every 2 s) and the
    catch-up (at start, then every 15 s) run that query on an idle bot."""
    lines = json_lines(bot.log_text())
    started = [line for line in lines if line["message"] == "Scheduler started"]
    if not started:
        return False
    due = datetime.fromisoformat(started[0]["time"]) + TIMER_INTERVAL * 0.9
    return any(
        line["logger"].startswith("sqlalchemy.engine")
        and line["message"].startswith("SELECT rotations.")
        and datetime.fromisoformat(line["time"]) >= due
        for line in lines
    )


def test_an_idle_bot_logs_no_line_per_timer_run_and_no_token_warning(bot: Bot) -> None:
    eventually(lambda: second_timer_run(bot), timeout=20, what="a second timer run")
    log = bot.log_text()
    assert "Scheduler started" in log  # library INFO lines do reach the log
    assert "Running job" not in log
    assert "executed successfully" not in log
    assert "will be unused" not in log
