"""Transactional outbox, the RQ side: no job is lost between the database and Redis.

Work is written as ``job_outbox`` rows in the same transaction as the state change that
needs it (``UnitOfWork.queue_job``, app/services/unit_of_work.py); after the commit the rows
are pushed to RQ here, grouped into batch jobs, and the periodic tick pushes whatever an
earlier attempt could not (Redis down, process killed). RQ may therefore run a job twice;
every job is idempotent through guarded state transitions.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from rq import Queue
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import db
from app.engine.clock import utcnow
from app.jobs import queues
from app.models.job import OutboxMessage

log = logging.getLogger(__name__)


def dispatch_pending(limit: int = 2000, older_than: timedelta | None = None) -> int:
    """Push undispatched outbox rows to RQ as batch jobs; returns how many rows were sent."""
    now = utcnow()
    with db.transaction() as session:
        query = (
            select(OutboxMessage)
            .where(OutboxMessage.dispatched_at.is_(None))
            .where((OutboxMessage.not_before.is_(None)) | (OutboxMessage.not_before <= now))
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        if older_than is not None:
            query = query.where(OutboxMessage.created_at <= now - older_than)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = session.scalars(query).all()
        if not rows:
            return 0
        groups: dict[tuple[str, str], list[OutboxMessage]] = defaultdict(list)
        for row in rows:
            groups[(row.queue, row.func)].append(row)
        conn = queues.connection()
        with conn.pipeline() as pipe:
            for (queue_name, func), members in groups.items():
                q = Queue(queue_name, connection=conn, default_timeout=queues.SPECS[queue_name].timeout)
                size = queues.SPECS[queue_name].batch
                for chunk in _chunks(members, size):
                    ids = [m.args[0] for m in chunk]
                    job_id = chunk[0].job_id if len(chunk) == 1 else f"{func}:batch:{chunk[0].id}-{chunk[-1].id}"
                    q.enqueue_call(_task(func), args=(ids,), job_id=_safe_id(job_id),
                                   timeout=queues.SPECS[queue_name].timeout, failure_ttl=365 * 24 * 3600,
                                   meta=_meta(chunk), pipeline=pipe)
            pipe.execute()
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([r.id for r in rows]))
            .values(dispatched_at=now, attempts=OutboxMessage.attempts + 1)
        )
        return len(rows)


def _meta(rows: list[OutboxMessage]) -> dict[str, Any]:
    """What the worker binds to the job's log lines (app/jobs/worker.py): the request ids of
    whatever queued these rows (web requests or jobs), in order, without repeats."""
    request_ids = list(dict.fromkeys(row.origin_request_id for row in rows if row.origin_request_id))
    return {"request_ids": request_ids} if request_ids else {}


def _task(func: str) -> str:
    return func if "." in func else f"app.jobs.tasks.{func}"


_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def _safe_id(job_id: str) -> str:
    # RQ 3 accepts only letters, digits, "_" and "-" in job ids (they become Redis keys).
    return _ID_UNSAFE.sub("-", job_id)[:120]


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def undispatched_count(session: Session) -> int:
    from sqlalchemy import func

    return session.scalar(select(func.count()).select_from(OutboxMessage)
                          .where(OutboxMessage.dispatched_at.is_(None))) or 0
