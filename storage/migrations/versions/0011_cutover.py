"""Hard-cutover rotations: the cutover window of a rotation (and when it ends), and readiness
reviews that start their rotation the moment every owner confirmed.

Rotations in flight when this runs get NULL (they overlap, as before); schedules get false
(they start at their time, as before).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE on both back ends, as 0007 (a batch copy trips SQLite's foreign keys).
    op.add_column("rotations", sa.Column("cutover_seconds", sa.Float(), nullable=True))
    op.add_column(
        "rotations", sa.Column("cutover_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "scheduled_rotations",
        sa.Column("start_when_ready", sa.Boolean(), nullable=False,
                  server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("scheduled_rotations", "start_when_ready")
    op.drop_column("rotations", "cutover_until")
    op.drop_column("rotations", "cutover_seconds")
