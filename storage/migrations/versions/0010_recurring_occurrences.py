"""Recurring rotations (`every:`): a schedule the timer made for one occurrence carries that
occurrence's key, unique, so the occurrence is created once however many replicas (or ticks
after a restart) derive it; and when the owners still missing were reminded (claimed once).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: `/rotate schedule` schedules have no occurrence (NULLs never collide).
    op.add_column("scheduled_rotations", sa.Column("occurrence", sa.String(), nullable=True))
    op.create_index(
        "uq_scheduled_rotations_occurrence", "scheduled_rotations", ["occurrence"], unique=True
    )
    op.add_column(
        "scheduled_rotations",
        sa.Column("reminded_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("scheduled_rotations", "reminded_at")
    op.drop_index("uq_scheduled_rotations_occurrence", table_name="scheduled_rotations")
    op.drop_column("scheduled_rotations", "occurrence")
