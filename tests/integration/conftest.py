"""Integration fixtures: one empty database per test, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from storage.engine import make_engine
from storage.migrate import upgrade


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty database: a SQLite file, or a fresh database on the session's
    PostgreSQL server (dropped after the test). Tests using it run once per back end."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rotabot.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the migrated database of ``database_url``."""
    upgrade(database_url)
    eng = make_engine(database_url)
    yield eng
    eng.dispose()


@pytest.fixture
def two_replicas(database_url: str) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one migrated database: what two replicas of the bot share."""
    upgrade(database_url)
    a, b = make_engine(database_url), make_engine(database_url)
    yield a, b
    a.dispose()
    b.dispose()
