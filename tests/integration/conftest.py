"""Integration fixtures: one empty database per test, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, or a fresh database on the session's
    PostgreSQL server (dropped after the test). Tests using it run once per back end."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rotabot.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
