"""Timers: a record of each reminder, escalation and gate notice sent, so each goes out once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reminders_sent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rotation_id", sa.Integer(), nullable=False),
        # "" for notices about the whole rotation: NULLs would never collide in the unique key.
        sa.Column("consumer", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["rotation_id"], ["rotations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "rotation_id", "consumer", "kind", name="uq_reminders_sent_rotation_consumer_kind"
        ),
    )


def downgrade() -> None:
    op.drop_table("reminders_sent")
