"""Where each once-only post went: its message ts, so a prompt whose buttons no longer apply
(the rotation ended) can be updated in place.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable: rows written before this version (and reminders, which are DMs) have none.
    with op.batch_alter_table("reminders_sent") as batch:
        batch.add_column(sa.Column("message_ts", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reminders_sent") as batch:
        batch.drop_column("message_ts")
