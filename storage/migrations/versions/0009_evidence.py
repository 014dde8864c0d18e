"""Consumers' evidence: each report of the version or key id a consumer runs and whether its
check passed (``POST /evidence``, health checks). References only, never a value.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "evidence_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("consumer", sa.String(100), nullable=False),
        sa.Column("lane", sa.String(50), nullable=False),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("key_id", sa.String(200), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("workflow", sa.String(100), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(100), nullable=False),
        sa.Column("rotation_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["rotation_id"], ["rotations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    # The latest reports of one consumer (heartbeat, the gate) are read by this range.
    op.create_index(
        "ix_evidence_reports_secret_consumer_received",
        "evidence_reports",
        ["secret", "consumer", "received_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_evidence_reports_secret_consumer_received",
                  table_name="evidence_reports")
    op.drop_table("evidence_reports")
