"""Lanes with distribution targets: which lanes of a rotation wait for rotabot to write the new
credential to their targets, and which targets it wrote.

Rotations in flight when this runs get "[]" and "{}": their lanes open as they did before (no
targets were part of their plan), and a vault-kv2 pending version they wrote in place on the
secret's path is still promoted in place by the store.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both back ends (SQLite >= 3.35 drops columns too): a batch
    # "copy and move" of rotations would trip the foreign keys of consumer_steps on SQLite.
    op.add_column(
        "rotations", sa.Column("gated_lanes", sa.Text(), nullable=False, server_default="[]")
    )
    op.add_column(
        "rotations", sa.Column("lane_writes", sa.Text(), nullable=False, server_default="{}")
    )


def downgrade() -> None:
    op.drop_column("rotations", "lane_writes")
    op.drop_column("rotations", "gated_lanes")
