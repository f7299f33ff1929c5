"""Transactional outbox: no job is lost between the database and Redis.

Work is written as ``job_outbox`` rows in the same transaction as the state change that
needs it; after commit the rows are pushed to RQ (grouped into batch jobs), and a periodic
tick pushes whatever an earlier attempt could not (Redis down, process killed). RQ may
therefore run a job twice; every job is idempotent through guarded state transitions.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta

from rq import Queue
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from app import db
from app.engine.clock import utcnow
from app.jobs import queues
from app.models.job import OutboxMessage

log = logging.getLogger(__name__)
_PENDING_KEY = "kaipiao_outbox_pending"


def add(session: Session, queue: str, func: str, item_id: int | str, *, key: str | None = None,
        not_before: datetime | None = None) -> None:
    """Ask for ``func(ids)`` to run on ``queue`` for ``item_id`` once this transaction commits.

    With ``key``, a request is ignored while an earlier one with the same key is not yet
    dispatched (one query); without, every call is a new job — jobs are idempotent, and the
    callers' ``queued_at`` stamps keep the tick from flooding a backlog.
    """
    if queue not in queues.SPECS:
        raise ValueError(f"unknown queue {queue!r}")
    if key is not None:
        pending = session.scalar(select(OutboxMessage.id).where(OutboxMessage.job_id.startswith(f"{key}:"),
                                                                OutboxMessage.dispatched_at.is_(None)).limit(1))
        if pending:
            return
    job_key = f"{key or f'{func}:{item_id}'}:{uuid.uuid4().hex[:12]}"
    session.add(OutboxMessage(queue=queue, func=func, args=[item_id], job_id=job_key, not_before=not_before))
    session.info[_PENDING_KEY] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # Also emitted when a SAVEPOINT is released: wait for the outermost commit, when the
    # rows are visible to others (and SQLite's write lock is free).
    if session.in_nested_transaction():
        return
    if session.info.pop(_PENDING_KEY, False) and not session.info.get("kaipiao_no_dispatch"):
        try:
            dispatch_pending()
        except Exception:  # Redis down: the periodic tick dispatches later
            log.warning("outbox dispatch after commit failed; the tick will retry", exc_info=True)


def dispatch_pending(limit: int = 2000, older_than: timedelta | None = None) -> int:
    """Push undispatched outbox rows to RQ as batch jobs; returns how many rows were sent."""
    now = utcnow()
    with db.transaction() as session:
        session.info["kaipiao_no_dispatch"] = True
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
                                   pipeline=pipe)
            pipe.execute()
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_([r.id for r in rows]))
            .values(dispatched_at=now, attempts=OutboxMessage.attempts + 1)
        )
        return len(rows)


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

    return session.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.dispatched_at.is_(None)))
