"""The workspace-wide Slack call budget: one token bucket per Web API method (per channel for
chat.postMessage), shared by every replica.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_call_budget",
        # "chat.update", or "chat.postMessage:C0…" where Slack counts per channel.
        sa.Column("bucket", sa.String(200), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        # Epoch seconds the tokens were counted at: the bucket refills from there.
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("bucket"),
    )


def downgrade() -> None:
    op.drop_table("slack_call_budget")
