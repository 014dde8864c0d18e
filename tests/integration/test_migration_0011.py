"""Migration 0011 (hard cutovers) under a rotation and a schedule written at 0007 (main's
migrations after 0007 run in between): after the upgrade the rotation still overlaps (no
cutover window) and the schedule still starts at its time (not the moment owners confirm); a
new cutover rotation round-trips its window and deadline; downgrading drops 0011's columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import Column, MetaData, Table, insert, inspect

from bot.domain.rotation import ConsumerPlan, Rotation
from storage.engine import make_engine
from storage.migrate import alembic_config, upgrade
from storage.schedules import SqlScheduleRepository
from storage.sql_common import ROTATIONS, SCHEDULES
from storage.unit_of_work import sql_unit_of_work_factory

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
NEW = {"rotations": {"cutover_seconds", "cutover_until"},
       "scheduled_rotations": {"start_when_ready"}}


def at_0007(table: Table) -> Table:
    """``table`` as 0007 had it (the head model would add 0011's columns)."""
    return Table(table.name, MetaData(), *(
        Column(c.name, c.type) for c in table.c if c.name not in NEW[table.name]))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_rows_from_0007_keep_their_meaning_and_a_cutover_round_trips(database_url: str) -> None:
    upgrade(database_url, "0007")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        # No explicit ids: PostgreSQL's sequences must hand out the next ones afterwards.
        rotations, schedules = at_0007(ROTATIONS), at_0007(SCHEDULES)
        rid = conn.execute(insert(rotations).returning(rotations.c.id).values(
            secret="model-api-key", phase="validating", lanes='["dev"]',
            overlap_seconds=86400.0, observe_seconds=60.0, created_at=T0, started_by="U0ADMIN",
            store_path="ai/key", prepared_at=T0, old_version="1", new_version="2",
            urgent=False, auto_revoke=False, revision=1, gated_lanes="[]", lane_writes="{}"
        )).scalar_one()
        sid = conn.execute(insert(schedules).returning(schedules.c.id).values(
            secret="model-api-key", at=T0 + timedelta(days=1), created_by="U0ADMIN",
            created_at=T0, status="review-posted", findings="[]")).scalar_one()

    upgrade(database_url)

    uow = sql_unit_of_work_factory(engine)
    with uow() as u:
        legacy = u.rotations.get(rid)
        assert (legacy.cutover, legacy.cutover_window, legacy.cutover_until) == (
            False, None, None)
        fresh = Rotation.begin(
            secret="crm-token", lanes=("dev",), consumers=[ConsumerPlan("c", "dev", "U0B", "hot")],
            overlap=timedelta(0), observe=timedelta(hours=1), store_path="crm/token",
            actor="U0ADMIN", now=T0, cutover_window=timedelta(minutes=15))
        fresh.prepared(old_version="1", new_version="2", old_key_id=None, new_key_id="k-2",
                       actor="rotabot", now=T0)
        fresh.cut_over({}, current="2", actor="rotabot", now=T0)
        u.rotations.add(fresh)
        u.commit()
        assert fresh.id is not None
    with uow() as u:
        back = u.rotations.get(fresh.id)
    assert back.cutover_window == timedelta(minutes=15)
    assert back.cutover_until == T0 + timedelta(minutes=15)
    assert SqlScheduleRepository(engine).get(sid).start_when_ready is False

    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0007")
    for table, columns in NEW.items():
        assert not columns & {c["name"] for c in inspect(engine).get_columns(table)}
    engine.dispose()
