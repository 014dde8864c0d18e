"""Alert delivery ids taken by any replica, so a retried `POST /alerts` counts once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alert_deliveries",
        # The X-Rotabot-Delivery header as sent: printable ASCII, at most 200 characters.
        sa.Column("delivery_id", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        # False while the request that reserved it runs (a short lease), True once it was taken.
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("delivery_id"),
    )
    # Expired ids are purged by range.
    op.create_index("ix_alert_deliveries_expires_at", "alert_deliveries", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_expires_at", table_name="alert_deliveries")
    op.drop_table("alert_deliveries")
