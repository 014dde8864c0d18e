"""SQLModel tables: rotations, consumer steps, credential version labels, alerts, audit log.

Only references (store path, version, key id) and labels are stored, never a credential
value. The schema itself is created by the Alembic migrations in storage/migrations; these
classes are the metadata those migrations are checked against.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

# A rotation in one of these phases no longer holds its secret; any other phase does.
TERMINAL_PHASE_VALUES: tuple[str, ...] = ("revoked", "rolled-back", "cancelled")
ACTIVE_ROTATION_WHERE = "phase NOT IN ('revoked', 'rolled-back', 'cancelled')"
ONE_ACTIVE_INDEX = "uq_rotations_one_active_per_secret"

# SQLite only turns an INTEGER PRIMARY KEY into an auto-incrementing rowid alias.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every back end.

    PostgreSQL keeps the offset (timestamptz); SQLite stores text without one, so values are
    converted to UTC before they are written and marked UTC when read. A naive datetime is
    taken to be UTC already.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            # Stored as fixed-format text, so comparisons in SQL stay chronological.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @property
    def python_type(self) -> type[datetime]:
        return datetime


class RotationRow(SQLModel, table=True):
    __tablename__ = "rotations"
    __table_args__ = (
        Index("ix_rotations_secret_phase", "secret", "phase"),
        # At most one rotation per secret may hold it: a racing second start fails here.
        Index(
            ONE_ACTIVE_INDEX,
            "secret",
            unique=True,
            sqlite_where=text(ACTIVE_ROTATION_WHERE),
            postgresql_where=text(ACTIVE_ROTATION_WHERE),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    secret: str = Field(nullable=False)
    phase: str = Field(nullable=False)
    lanes: str = Field(sa_type=Text, nullable=False)  # JSON list of lane names, in order
    overlap_seconds: float = Field(nullable=False)
    observe_seconds: float = Field(nullable=False)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    started_by: str = Field(nullable=False)
    store_path: str = Field(default="", nullable=False)
    prepared_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    switched_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    observe_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    overlap_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    failed_from: str | None = Field(default=None)
    failure_reason: str | None = Field(default=None, sa_type=Text)
    old_version: str | None = Field(default=None)
    new_version: str | None = Field(default=None)
    old_key_id: str | None = Field(default=None)
    new_key_id: str | None = Field(default=None)
    channel: str | None = Field(default=None)
    message_ts: str | None = Field(default=None)
    urgent: bool = Field(default=False, nullable=False)
    auto_revoke: bool = Field(default=False, nullable=False)
    # JSON: lanes with distribution targets, and lane -> the targets written there. Rows from
    # before 0007 hold "[]" and "{}": their lanes open as before, with nothing to write.
    gated_lanes: str = Field(default="[]", sa_type=Text, nullable=False)
    lane_writes: str = Field(default="{}", sa_type=Text, nullable=False)
    # A hard cutover's window in seconds (NULL: an overlapping rotation) and when it ends.
    cutover_seconds: float | None = Field(default=None)
    cutover_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Optimistic lock: every write is UPDATE ... WHERE revision = <the revision loaded>.
    revision: int = Field(default=0, nullable=False)


class ConsumerStepRow(SQLModel, table=True):
    __tablename__ = "consumer_steps"
    __table_args__ = (
        UniqueConstraint("rotation_id", "name", name="uq_consumer_steps_rotation_name"),
    )

    id: int | None = Field(default=None, primary_key=True)
    rotation_id: int = Field(foreign_key="rotations.id", nullable=False)
    name: str = Field(nullable=False)
    lane: str = Field(nullable=False)
    owner: str = Field(nullable=False)
    reload: str = Field(nullable=False)
    state: str = Field(nullable=False)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_by: str | None = Field(default=None)
    note: str | None = Field(default=None, sa_type=Text)


class CredentialVersionRow(SQLModel, table=True):
    """A credential version a rotation handles, by reference, with its label."""

    __tablename__ = "credential_versions"
    __table_args__ = (
        UniqueConstraint("rotation_id", "version", name="uq_credential_versions_rotation_version"),
        Index("ix_credential_versions_secret", "secret"),
    )

    id: int | None = Field(default=None, primary_key=True)
    rotation_id: int = Field(foreign_key="rotations.id", nullable=False)
    secret: str = Field(nullable=False)
    store_path: str = Field(nullable=False)
    version: str = Field(nullable=False)
    key_id: str | None = Field(default=None)
    label: str = Field(nullable=False)  # pending | current | previous | revoked


class AlertRow(SQLModel, table=True):
    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_consumer_class_last_seen", "consumer", "failure_class", "last_seen"),
        Index("ix_alerts_secret_last_seen", "secret", "last_seen"),
        Index("ix_alerts_last_seen", "last_seen"),
    )

    id: int | None = Field(default=None, primary_key=True)
    consumer: str = Field(nullable=False)
    secret: str = Field(nullable=False)
    lane: str = Field(nullable=False)
    failure_class: str = Field(nullable=False)
    reason: str = Field(sa_type=Text, nullable=False)
    first_seen: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_seen: datetime = Field(sa_type=UTCDateTime, nullable=False)
    source: str = Field(default="unknown", nullable=False)
    rotation_id: int | None = Field(default=None, foreign_key="rotations.id")
    phase_at_alert: str | None = Field(default=None)
    began_during_rotation: bool = Field(default=False, nullable=False)
    status: str = Field(nullable=False)
    count: int = Field(default=1, nullable=False)
    channel: str | None = Field(default=None)
    message_ts: str | None = Field(default=None)
    resolved_by: str | None = Field(default=None)


class AuditEventRow(SQLModel, table=True):
    """Append-only: the migration installs triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_secret_id", "secret", "id"),
        Index("ix_audit_events_rotation_id", "rotation_id"),
        Index("ix_audit_events_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=BigId)
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor: str = Field(nullable=False)
    action: str = Field(nullable=False)
    secret: str = Field(nullable=False)
    rotation_id: int | None = Field(default=None, foreign_key="rotations.id")
    consumer: str | None = Field(default=None)
    before: str | None = Field(default=None)
    after: str | None = Field(default=None)
    reason: str | None = Field(sa_type=Text, default=None)
    detail: str = Field(default="{}", sa_type=Text, nullable=False)  # JSON object of strings


class ReminderSentRow(SQLModel, table=True):
    """One reminder, escalation or notice already sent; the unique key makes it once-only
    across replicas (``consumer`` is "" for notices about the whole rotation)."""

    __tablename__ = "reminders_sent"
    __table_args__ = (
        UniqueConstraint(
            "rotation_id", "consumer", "kind", name="uq_reminders_sent_rotation_consumer_kind"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    rotation_id: int = Field(foreign_key="rotations.id", nullable=False)
    consumer: str = Field(nullable=False)
    kind: str = Field(nullable=False)
    sent_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    # The Slack ts of a thread prompt once posted (updated in place when it stops applying).
    message_ts: str | None = Field(default=None, max_length=64, nullable=True)


OPEN_SCHEDULE_WHERE = "status IN ('readiness-passed', 'review-posted', 'scheduled')"


class ScheduledRotationRow(SQLModel, table=True):
    """`/rotate schedule`: a planned rotation, its readiness review and how it ended."""

    __tablename__ = "scheduled_rotations"
    __table_args__ = (
        Index("ix_scheduled_rotations_status_at", "status", "at"),
        # At most one open schedule per secret: a second `/rotate schedule` replaces the first.
        Index(
            "uq_scheduled_rotations_one_open_per_secret",
            "secret",
            unique=True,
            sqlite_where=text(OPEN_SCHEDULE_WHERE),
            postgresql_where=text(OPEN_SCHEDULE_WHERE),
        ),
        Index("uq_scheduled_rotations_occurrence", "occurrence", unique=True),
    )

    id: int | None = Field(default=None, primary_key=True)
    secret: str = Field(nullable=False)
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    created_by: str = Field(nullable=False)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    status: str = Field(nullable=False)
    review_channel: str | None = Field(default=None)
    review_ts: str | None = Field(default=None)
    reviewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    findings: str = Field(default="[]", sa_type=Text, nullable=False)  # JSON list of findings
    rotation_id: int | None = Field(default=None, foreign_key="rotations.id")
    outcome: str | None = Field(default=None, sa_type=Text)
    changed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)  # last transition
    # A recurring rotation's occurrence (`every:`), e.g. "db-password@2027-03-01T09:00Z":
    # unique, so it is created once across replicas; None for `/rotate schedule`.
    occurrence: str | None = Field(default=None)
    # When the owners who had not confirmed were reminded (once, halfway through the lead).
    reminded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A hard cutover's review (`/rotate start`): the rotation starts once every owner confirmed.
    start_when_ready: bool = Field(default=False, nullable=False)


class ReadinessConfirmationRow(SQLModel, table=True):
    """An owner confirmed readiness for a scheduled rotation (once per owner)."""

    __tablename__ = "readiness_confirmations"
    __table_args__ = (
        UniqueConstraint("schedule_id", "owner", name="uq_readiness_confirmations_schedule_owner"),
    )

    id: int | None = Field(default=None, primary_key=True)
    schedule_id: int = Field(foreign_key="scheduled_rotations.id", nullable=False)
    owner: str = Field(nullable=False)
    confirmed_by: str = Field(nullable=False)
    confirmed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class SecretSeenRow(SQLModel, table=True):
    """When rotabot first saw a secret: its age for max_age until a rotation finishes."""

    __tablename__ = "secrets_seen"

    secret: str = Field(primary_key=True)
    first_seen: datetime = Field(sa_type=UTCDateTime, nullable=False)


class DueReminderRow(SQLModel, table=True):
    """A max_age "due" reminder already sent; the unique key makes each one once-only."""

    __tablename__ = "due_reminders"
    __table_args__ = (
        UniqueConstraint(
            "secret", "due_since", "slot", name="uq_due_reminders_secret_due_since_slot"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    secret: str = Field(nullable=False)
    due_since: datetime = Field(sa_type=UTCDateTime, nullable=False)
    slot: int = Field(nullable=False)
    sent_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class AlertDeliveryRow(SQLModel, table=True):
    """An ``X-Rotabot-Delivery`` id some replica reserved, until ``expires_at``; once ``done``
    (the alert was taken) a retry of it is answered, not counted. storage/deliveries.py."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (Index("ix_alert_deliveries_expires_at", "expires_at"),)

    delivery_id: str = Field(primary_key=True, sa_type=String(200))  # as the sender sent it
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    done: bool = Field(default=False, nullable=False)


class SlackRequestRow(SQLModel, table=True):
    """A Slack request signature or user action some replica took, until ``expires_at``: a
    replayed request is acknowledged and ignored, a repeated action answered with what it
    created (``result``). storage/slack_requests.py."""

    __tablename__ = "slack_requests"
    __table_args__ = (Index("ix_slack_requests_expires_at", "expires_at"),)

    # "sig:" or "act:" and the SHA-256 (hex) of the signature or the action id.
    request_key: str = Field(primary_key=True, sa_type=String(100))
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    done: bool = Field(default=False, nullable=False)
    result: str | None = Field(default=None, sa_type=String(200))  # e.g. a rotation's id


class ReplicaRow(SQLModel, table=True):
    """A rotabot process and the catalog it runs: the newest catalog loaded is the one every
    replica must run to act on rotations (bot/domain/replicas.py). storage/replicas.py."""

    __tablename__ = "replicas"

    replica_id: str = Field(primary_key=True, sa_type=String(200))  # host:pid:random
    catalog_sha256: str = Field(sa_type=String(64), nullable=False)
    loaded_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    seen_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class EvidenceReportRow(SQLModel, table=True):
    """A consumer's report of the version or key id it runs and whether its check passed
    (``POST /evidence``, or its health check's ``version_field``). Only references: a body
    carrying anything credential-shaped is refused before it gets here. bot/domain/evidence.py."""

    __tablename__ = "evidence_reports"
    __table_args__ = (
        Index("ix_evidence_reports_secret_consumer_received", "secret", "consumer",
              "received_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    secret: str = Field(sa_type=String(100), nullable=False)
    consumer: str = Field(sa_type=String(100), nullable=False)
    lane: str = Field(sa_type=String(50), nullable=False)
    version: str | None = Field(default=None, sa_type=String(64))
    key_id: str | None = Field(default=None, sa_type=String(200))
    ok: bool = Field(nullable=False)
    workflow: str | None = Field(default=None, sa_type=String(100))
    reported_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    received_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    source: str = Field(sa_type=String(100), nullable=False)
    # The rotation running when it arrived (none: recorded for the heartbeat only).
    rotation_id: int | None = Field(default=None, foreign_key="rotations.id")


class SlackBudgetRow(SQLModel, table=True):
    """One token bucket of the workspace-wide Slack call budget, shared by every replica
    (adapters/slack_budget.py keeps each Web API method under its tier; storage/slack_budget.py
    takes tokens with a conditional UPDATE)."""

    __tablename__ = "slack_call_budget"

    # The method, and for chat.postMessage its channel: "chat.update", "chat.postMessage:C0…".
    bucket: str = Field(primary_key=True, sa_type=String(200))
    tokens: float = Field(nullable=False)
    stamp: float = Field(nullable=False)  # epoch seconds the tokens were counted at


metadata = SQLModel.metadata


def table_names() -> tuple[str, ...]:
    return (
        "rotations",
        "consumer_steps",
        "credential_versions",
        "alerts",
        "audit_events",
        "reminders_sent",
        "scheduled_rotations",
        "readiness_confirmations",
        "secrets_seen",
        "due_reminders",
        "alert_deliveries",
        "slack_requests",
        "replicas",
        "evidence_reports",
        "slack_call_budget",
    )
