"""Slack request signatures and user actions taken by any replica: replays are ignored.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_requests",
        # "sig:" or "act:" and the SHA-256 (hex) of the request's signature or the action's id.
        sa.Column("request_key", sa.String(100), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        # False while the action that holds it runs (a short lease), True once it is taken.
        sa.Column("done", sa.Boolean(), nullable=False),
        # What the action created (a rotation's or an alert's id), answered to its repeats.
        sa.Column("result", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("request_key"),
    )
    # Expired keys are purged by range.
    op.create_index("ix_slack_requests_expires_at", "slack_requests", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_slack_requests_expires_at", table_name="slack_requests")
    op.drop_table("slack_requests")
