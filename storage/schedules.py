"""SQL repository for scheduled rotations, owners' confirmations and max_age bookkeeping."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Engine, RowMapping, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from bot.domain.audit import AuditEvent
from bot.domain.errors import RotabotError
from bot.domain.lifecycle import Phase
from bot.domain.schedule import (
    OPEN_STATUS_VALUES,
    Confirmation,
    ReviewFinding,
    ScheduledRotation,
    ScheduleNotFound,
    ScheduleStatus,
)
from storage.engine import unavailable
from storage.sql_common import (
    AUDIT,
    CONFIRMATIONS,
    DUE_REMINDERS,
    ROTATIONS,
    SCHEDULES,
    SEEN,
    audit_values,
    new_id,
)
from storage.tables import ReadinessConfirmationRow, ScheduledRotationRow


def _finding_dicts(findings: Iterable[ReviewFinding]) -> str:
    return json.dumps(
        [
            {"severity": f.severity, "subject": f.subject, "message": f.message, "code": f.code}
            for f in findings
        ]
    )


def _schedule_from_row(m: RowMapping) -> ScheduledRotation:
    row = ScheduledRotationRow(**m)
    findings = tuple(
        ReviewFinding(
            severity=str(f["severity"]),
            subject=str(f["subject"]),
            message=str(f["message"]),
            code=str(f.get("code", "")),
        )
        for f in json.loads(row.findings or "[]")
    )
    return ScheduledRotation(
        id=row.id,
        secret=row.secret,
        at=row.at,
        created_by=row.created_by,
        created_at=row.created_at,
        status=ScheduleStatus(row.status),
        review_channel=row.review_channel,
        review_ts=row.review_ts,
        reviewed_at=row.reviewed_at,
        findings=findings,
        rotation_id=row.rotation_id,
        outcome=row.outcome,
        changed_at=row.changed_at,
        occurrence=row.occurrence,
        reminded_at=row.reminded_at,
        start_when_ready=bool(row.start_when_ready),
    )


def _schedule_values(item: ScheduledRotation) -> dict[str, Any]:
    return {
        "secret": item.secret,
        "at": item.at,
        "created_by": item.created_by,
        "created_at": item.created_at,
        "status": item.status.value,
        "review_channel": item.review_channel,
        "review_ts": item.review_ts,
        "reviewed_at": item.reviewed_at,
        "findings": _finding_dicts(item.findings),
        "rotation_id": item.rotation_id,
        "outcome": item.outcome,
        "changed_at": item.changed_at,
        "occurrence": item.occurrence,
        "start_when_ready": item.start_when_ready,
    }


_TRANSITION_FIELDS = frozenset({"findings", "reviewed_at", "rotation_id", "outcome"})


def _with_schedule(event: AuditEvent, ref: str) -> AuditEvent:
    return dataclasses.replace(event, detail={**event.detail, "schedule": ref})


class SqlScheduleRepository:
    """ScheduleRepository (bot/services/schedules.py): schedules, owners' confirmations and
    max_age bookkeeping. Each method is one short transaction; a state change and its audit
    event commit together, and every claim is a compare-and-set or a unique row, so two
    replicas (or a restart mid-step) never take the same step twice."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @contextmanager
    def _begin(self) -> Iterator[Connection]:
        try:
            with self._engine.begin() as conn:
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise unavailable(self._engine.url, exc) from None

    def _audit(self, conn: Connection, event: AuditEvent) -> None:
        conn.execute(insert(AUDIT).values(**audit_values(event)))

    def add(
        self,
        item: ScheduledRotation,
        *,
        event: AuditEvent,
        replaces: ScheduledRotation | None,
        replaced_event: AuditEvent | None,
    ) -> ScheduledRotation:
        if item.id is not None:
            raise ValueError(f"{item.ref} is already stored")
        try:
            with self._begin() as conn:
                if replaces is not None and replaces.id is not None:
                    result = conn.execute(
                        update(SCHEDULES)
                        .where(
                            SCHEDULES.c.id == replaces.id,
                            SCHEDULES.c.status.in_(OPEN_STATUS_VALUES),
                        )
                        .values(
                            status=ScheduleStatus.CANCELLED.value,
                            outcome=replaced_event.reason if replaced_event else None,
                            changed_at=event.at,
                        )
                    )
                    if result.rowcount == 1 and replaced_event is not None:
                        self._audit(conn, replaced_event)
                item.changed_at = item.created_at
                item.id = new_id(conn.execute(insert(SCHEDULES).values(**_schedule_values(item))))
                self._audit(conn, _with_schedule(event, item.ref))
        except IntegrityError:
            item.id = None
            raise RotabotError(
                f"another schedule for {item.secret} was made at the same moment; "
                "look at it and try again if it is not what you want"
            ) from None
        return item

    def add_occurrence(self, item: ScheduledRotation, *, event: AuditEvent
                       ) -> ScheduledRotation | None:
        assert item.occurrence is not None and item.id is None
        taken = select(SCHEDULES.c.id).where(SCHEDULES.c.occurrence == item.occurrence)
        try:
            with self._begin() as conn:
                if conn.execute(taken).first() is not None:
                    return None  # made before (it may have started, or gone to the admins)
                item.changed_at = item.created_at
                item.id = new_id(conn.execute(insert(SCHEDULES).values(**_schedule_values(item))))
                self._audit(conn, _with_schedule(event, item.ref))
        except IntegrityError:
            # Another replica made it between our check and our insert (the unique key), or
            # an open schedule of the secret appeared: either way there is nothing to make.
            item.id = None
            return None
        return item

    def get(self, schedule_id: int) -> ScheduledRotation:
        with self._begin() as conn:
            m = conn.execute(select(SCHEDULES).where(SCHEDULES.c.id == schedule_id)).mappings()
            row = m.first()
        if row is None:
            raise ScheduleNotFound(f"SR-{schedule_id}")
        return _schedule_from_row(row)

    def open_for_secret(self, secret: str) -> ScheduledRotation | None:
        with self._begin() as conn:
            row = (
                conn.execute(
                    select(SCHEDULES).where(
                        SCHEDULES.c.secret == secret, SCHEDULES.c.status.in_(OPEN_STATUS_VALUES)
                    )
                )
                .mappings()
                .first()
            )
        return _schedule_from_row(row) if row is not None else None

    def list_open(self) -> list[ScheduledRotation]:
        stmt = (
            select(SCHEDULES)
            .where(SCHEDULES.c.status.in_(OPEN_STATUS_VALUES))
            .order_by(SCHEDULES.c.at, SCHEDULES.c.id)
        )
        with self._begin() as conn:
            return [_schedule_from_row(m) for m in conn.execute(stmt).mappings()]

    def transition(
        self,
        item: ScheduledRotation,
        expected: Iterable[ScheduleStatus],
        new: ScheduleStatus,
        *,
        event: AuditEvent,
    ) -> bool:
        assert item.id is not None
        # Only what a transition decides; the review message is set by set_review_message and
        # the rest never changes, so a copy loaded a while ago cannot undo another write.
        values = {k: v for k, v in _schedule_values(item).items() if k in _TRANSITION_FIELDS}
        values["status"] = new.value
        values["changed_at"] = event.at
        with self._begin() as conn:
            result = conn.execute(
                update(SCHEDULES)
                .where(
                    SCHEDULES.c.id == item.id,
                    SCHEDULES.c.status.in_(sorted(s.value for s in expected)),
                )
                .values(**values)
            )
            if result.rowcount != 1:
                return False  # another replica (or an earlier tick) got there first
            self._audit(conn, event)
        item.status, item.changed_at = new, event.at
        return True

    def list_starting(self) -> list[ScheduledRotation]:
        """Schedules claimed for starting whose rotation is not recorded (yet)."""
        stmt = (
            select(SCHEDULES)
            .where(
                SCHEDULES.c.status == ScheduleStatus.STARTED.value,
                SCHEDULES.c.rotation_id.is_(None),
            )
            .order_by(SCHEDULES.c.id)
        )
        with self._begin() as conn:
            return [_schedule_from_row(m) for m in conn.execute(stmt).mappings()]

    def claim_owner_reminder(self, schedule_id: int, at: datetime) -> bool:
        with self._begin() as conn:
            result = conn.execute(
                update(SCHEDULES)
                .where(SCHEDULES.c.id == schedule_id, SCHEDULES.c.reminded_at.is_(None))
                .values(reminded_at=at)
            )
        return result.rowcount == 1

    def release_owner_reminder(self, schedule_id: int) -> None:
        with self._begin() as conn:
            conn.execute(
                update(SCHEDULES).where(SCHEDULES.c.id == schedule_id).values(reminded_at=None)
            )

    def set_review_message(self, schedule_id: int, channel: str, ts: str) -> None:
        with self._begin() as conn:
            conn.execute(
                update(SCHEDULES)
                .where(SCHEDULES.c.id == schedule_id)
                .values(review_channel=channel, review_ts=ts)
            )

    def record(self, event: AuditEvent) -> None:
        with self._begin() as conn:
            self._audit(conn, event)

    def confirm(self, schedule_id: int, confirmation: Confirmation, *, event: AuditEvent) -> bool:
        values = {
            "schedule_id": schedule_id,
            "owner": confirmation.owner,
            "confirmed_by": confirmation.confirmed_by,
            "confirmed_at": confirmation.confirmed_at,
        }
        try:
            with self._begin() as conn:
                conn.execute(insert(CONFIRMATIONS).values(**values))
                self._audit(conn, event)
        except IntegrityError:
            return False  # this owner had already confirmed
        return True

    def confirmations(self, schedule_id: int) -> list[Confirmation]:
        stmt = (
            select(CONFIRMATIONS)
            .where(CONFIRMATIONS.c.schedule_id == schedule_id)
            .order_by(CONFIRMATIONS.c.id)
        )
        with self._begin() as conn:
            rows = [ReadinessConfirmationRow(**m) for m in conn.execute(stmt).mappings()]
        return [
            Confirmation(owner=r.owner, confirmed_by=r.confirmed_by, confirmed_at=r.confirmed_at)
            for r in rows
        ]

    def first_seen(self, secret: str, now: datetime) -> datetime:
        stmt = select(SEEN.c.first_seen).where(SEEN.c.secret == secret)
        with self._begin() as conn:
            found = conn.execute(stmt).scalar_one_or_none()
        if found is not None:
            return cast(datetime, found)
        try:
            with self._begin() as conn:
                conn.execute(insert(SEEN).values(secret=secret, first_seen=now))
            return now
        except IntegrityError:
            with self._begin() as conn:  # another replica recorded it first: theirs stands
                return cast(datetime, conn.execute(stmt).scalar_one())

    def last_rotated(self, secret: str) -> datetime | None:
        stmt = select(func.max(ROTATIONS.c.finished_at)).where(
            ROTATIONS.c.secret == secret, ROTATIONS.c.phase == Phase.REVOKED.value
        )
        with self._begin() as conn:
            return cast("datetime | None", conn.execute(stmt).scalar_one_or_none())

    def claim_due_reminder(self, secret: str, due_since: datetime, slot: int, at: datetime) -> bool:
        values = {"secret": secret, "due_since": due_since, "slot": slot, "sent_at": at}
        try:
            with self._begin() as conn:
                conn.execute(insert(DUE_REMINDERS).values(**values))
        except IntegrityError:
            return False
        return True

    def release_due_reminder(self, secret: str, due_since: datetime, slot: int) -> None:
        with self._begin() as conn:
            conn.execute(
                delete(DUE_REMINDERS).where(
                    DUE_REMINDERS.c.secret == secret,
                    DUE_REMINDERS.c.due_since == due_since,
                    DUE_REMINDERS.c.slot == slot,
                )
            )
