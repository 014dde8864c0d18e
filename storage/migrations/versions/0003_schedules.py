"""Scheduled rotations, owners' readiness confirmations, and max_age bookkeeping.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_SCHEDULE_WHERE = "status IN ('readiness-passed', 'review-posted', 'scheduled')"


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduled_rotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("review_channel", sa.String(), nullable=True),
        sa.Column("review_ts", sa.String(), nullable=True),
        sa.Column("reviewed_at", _utc(), nullable=True),
        sa.Column("findings", sa.Text(), nullable=False),
        sa.Column("rotation_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("changed_at", _utc(), nullable=True),
        sa.ForeignKeyConstraint(["rotation_id"], ["rotations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_scheduled_rotations_status_at", "scheduled_rotations", ["status", "at"])
    # At most one open schedule per secret: a second `/rotate schedule` replaces the first.
    op.create_index(
        "uq_scheduled_rotations_one_open_per_secret",
        "scheduled_rotations",
        ["secret"],
        unique=True,
        sqlite_where=sa.text(OPEN_SCHEDULE_WHERE),
        postgresql_where=sa.text(OPEN_SCHEDULE_WHERE),
    )

    op.create_table(
        "readiness_confirmations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("confirmed_by", sa.String(), nullable=False),
        sa.Column("confirmed_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(["schedule_id"], ["scheduled_rotations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "schedule_id", "owner", name="uq_readiness_confirmations_schedule_owner"
        ),
    )

    op.create_table(
        "secrets_seen",
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("first_seen", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("secret"),
    )

    op.create_table(
        "due_reminders",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("due_since", _utc(), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("sent_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "secret", "due_since", "slot", name="uq_due_reminders_secret_due_since_slot"
        ),
    )


def downgrade() -> None:
    op.drop_table("due_reminders")
    op.drop_table("secrets_seen")
    op.drop_table("readiness_confirmations")
    op.drop_index("uq_scheduled_rotations_one_open_per_secret", table_name="scheduled_rotations")
    op.drop_index("ix_scheduled_rotations_status_at", table_name="scheduled_rotations")
    op.drop_table("scheduled_rotations")
