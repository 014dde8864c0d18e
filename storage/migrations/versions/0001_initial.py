"""Initial schema: rotations, consumer steps, credential versions, alerts, append-only audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTIVE_ROTATION_WHERE = "phase NOT IN ('revoked', 'rolled-back', 'cancelled')"


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("phase", sa.String(), nullable=False),
        sa.Column("lanes", sa.Text(), nullable=False),
        sa.Column("overlap_seconds", sa.Float(), nullable=False),
        sa.Column("observe_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("started_by", sa.String(), nullable=False),
        sa.Column("store_path", sa.String(), nullable=False),
        sa.Column("prepared_at", _utc(), nullable=True),
        sa.Column("switched_at", _utc(), nullable=True),
        sa.Column("observe_until", _utc(), nullable=True),
        sa.Column("overlap_until", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("failed_from", sa.String(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("old_version", sa.String(), nullable=True),
        sa.Column("new_version", sa.String(), nullable=True),
        sa.Column("old_key_id", sa.String(), nullable=True),
        sa.Column("new_key_id", sa.String(), nullable=True),
        sa.Column("channel", sa.String(), nullable=True),
        sa.Column("message_ts", sa.String(), nullable=True),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("auto_revoke", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rotations_secret_phase", "rotations", ["secret", "phase"])
    # At most one rotation per secret holds it; a racing second start fails on this index.
    op.create_index(
        "uq_rotations_one_active_per_secret",
        "rotations",
        ["secret"],
        unique=True,
        sqlite_where=sa.text(ACTIVE_ROTATION_WHERE),
        postgresql_where=sa.text(ACTIVE_ROTATION_WHERE),
    )

    op.create_table(
        "consumer_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rotation_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("lane", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=False),
        sa.Column("reload", sa.String(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=True),
        sa.Column("updated_by", sa.String(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["rotation_id"], ["rotations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("rotation_id", "name", name="uq_consumer_steps_rotation_name"),
    )

    op.create_table(
        "credential_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rotation_id", sa.Integer(), nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("store_path", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("label", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["rotation_id"], ["rotations.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "rotation_id", "version", name="uq_credential_versions_rotation_version"
        ),
    )
    op.create_index("ix_credential_versions_secret", "credential_versions", ["secret"])

    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consumer", sa.String(), nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("lane", sa.String(), nullable=False),
        sa.Column("failure_class", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("first_seen", _utc(), nullable=False),
        sa.Column("last_seen", _utc(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("rotation_id", sa.Integer(), nullable=True),
        sa.Column("phase_at_alert", sa.String(), nullable=True),
        sa.Column("began_during_rotation", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(), nullable=True),
        sa.Column("message_ts", sa.String(), nullable=True),
        sa.Column("resolved_by", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(["rotation_id"], ["rotations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_alerts_consumer_class_last_seen", "alerts", ["consumer", "failure_class", "last_seen"]
    )
    op.create_index("ix_alerts_secret_last_seen", "alerts", ["secret", "last_seen"])
    op.create_index("ix_alerts_last_seen", "alerts", ["last_seen"])

    op.create_table(
        "audit_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("at", _utc(), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("secret", sa.String(), nullable=False),
        sa.Column("rotation_id", sa.Integer(), nullable=True),
        sa.Column("consumer", sa.String(), nullable=True),
        sa.Column("before", sa.String(), nullable=True),
        sa.Column("after", sa.String(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["rotation_id"], ["rotations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_events_secret_id", "audit_events", ["secret", "id"])
    op.create_index("ix_audit_events_rotation_id", "audit_events", ["rotation_id"])
    op.create_index("ix_audit_events_at", "audit_events", ["at"])

    _make_audit_append_only()


def _make_audit_append_only() -> None:
    """The audit log refuses UPDATE and DELETE in the database itself, whoever asks."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            """
            CREATE FUNCTION audit_events_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $body$
            BEGIN
                RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP;
            END
            $body$
            """
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE "
            "ON audit_events FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"
        )
        op.execute(
            "CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE "
            "ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"
        )
    elif dialect == "sqlite":
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{verb.lower()} BEFORE {verb} ON audit_events "
                f"BEGIN SELECT RAISE(ABORT, 'audit_events is append-only ({verb} refused)'); END"
            )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update_delete ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update")
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_delete")
    op.drop_index("ix_audit_events_at", table_name="audit_events")
    op.drop_index("ix_audit_events_rotation_id", table_name="audit_events")
    op.drop_index("ix_audit_events_secret_id", table_name="audit_events")
    op.drop_table("audit_events")
    op.drop_index("ix_alerts_last_seen", table_name="alerts")
    op.drop_index("ix_alerts_secret_last_seen", table_name="alerts")
    op.drop_index("ix_alerts_consumer_class_last_seen", table_name="alerts")
    op.drop_table("alerts")
    op.drop_index("ix_credential_versions_secret", table_name="credential_versions")
    op.drop_table("credential_versions")
    op.drop_table("consumer_steps")
    op.drop_index("uq_rotations_one_active_per_secret", table_name="rotations")
    op.drop_index("ix_rotations_secret_phase", table_name="rotations")
    op.drop_table("rotations")
