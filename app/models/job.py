"""The jobs Kaipiao runs (their names and queues), the job outbox (written in the business
transaction, dispatched to RQ after commit) and job failures mirrored from RQ so they survive
a Redis flush."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.engine.clock import utcnow
from app.models.types import UTCDateTime


class Queue(StrEnum):
    """RQ queues, in the order a worker listens (finishing work beats starting new work)."""

    ISSUE = "issue"
    DECIDE = "decide"
    DELIVER = "deliver"
    RENDER = "render"
    SYNC = "sync"
    PERIODIC = "periodic"


class JobName(StrEnum):
    """Every job, by the name of its function in app/jobs/tasks.py."""

    DECIDE_REQUESTS = "decide_requests"
    ISSUE_INVOICES = "issue_invoices"
    POLL_INVOICES = "poll_invoices"
    TICK = "tick"
    SEAL_LEDGER = "seal_ledger"
    CHECK_DEADLINES = "check_deadlines"
    REFRESH_CREDIT = "refresh_credit"

    @property
    def queue(self) -> Queue:
        return _QUEUE_OF.get(self, Queue.PERIODIC)

    @property
    def takes_ids(self) -> bool:
        """Called with a list of ids (batched by the outbox; re-creatable from a failure)."""
        return self in _QUEUE_OF


_QUEUE_OF = {JobName.DECIDE_REQUESTS: Queue.DECIDE, JobName.ISSUE_INVOICES: Queue.ISSUE,
             JobName.POLL_INVOICES: Queue.ISSUE}


class OutboxMessage(Base):
    __tablename__ = "job_outbox"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    queue: Mapped[str] = mapped_column(String(20))
    func: Mapped[str] = mapped_column(String(120))
    args: Mapped[list[Any]] = mapped_column(JSON, default=list)
    job_id: Mapped[str] = mapped_column(String(120), unique=True)
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The request id of what queued it (app/logging_setup.py); the job's log lines show it.
    origin_request_id: Mapped[str | None] = mapped_column(String(64))


class JobFailure(Base):
    __tablename__ = "job_failure"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(String(120), index=True)
    queue: Mapped[str] = mapped_column(String(20))
    func: Mapped[str] = mapped_column(String(120))
    args: Mapped[list[Any]] = mapped_column(JSON, default=list)
    exc_type: Mapped[str] = mapped_column(String(120))
    message: Mapped[str] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_by: Mapped[str | None] = mapped_column(String(80))
    resolution: Mapped[str | None] = mapped_column(String(40))
