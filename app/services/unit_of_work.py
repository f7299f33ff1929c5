"""A use case's transaction and what it writes at its end. Every service that moves a state,
records an event or asks for a job takes the ``UnitOfWork`` it works in, so whether its writes
happen now or at the end shows in the signature, not in hidden session state.

- ``batched=False``: a transition is one guarded UPDATE at once (app.services.transitions); an
  event is a row at once.
- ``batched=True``: transitions are checked at once against the loaded objects and written by
  ``flush()`` as one executemany UPDATE per shape, guarded on each row's status *and*
  state_version as loaded, with the events in one multi-row INSERT. A row someone changed
  since it was loaded makes ``flush()`` raise ``InvalidTransition``; the caller rolls back
  and redoes its work unbatched, where each item is guarded on its own (a race costs time,
  never correctness). Committing with unflushed batched writes is a bug and raises.
- Jobs (``queue_job``) are outbox rows in the same transaction; ``unit_of_work()`` pushes them
  to the queue after the commit (the job system registers how: ``dispatch_after_commit``).
  Whatever misses that (Redis down, a crash), the periodic tick pushes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app import db, ledger
from app.models.job import JobName, OutboxMessage

if TYPE_CHECKING:
    from app.services.transitions import PendingMoves

_dispatch: Callable[[], object] | None = None


def dispatch_after_commit(dispatcher: Callable[[], object] | None) -> None:
    """How queued jobs reach the workers after a commit (app.jobs sets it when it starts; None:
    they wait in the outbox for the tick)."""
    global _dispatch
    _dispatch = dispatcher


class UnitOfWork:
    def __init__(self, session: Session, *, batched: bool = False) -> None:
        from app.services.transitions import PendingMoves

        self.session = session
        self.batched = batched
        self.moves: PendingMoves | None = PendingMoves() if batched else None
        self.events: list[dict[str, Any]] = []  # held while batched
        self.jobs_queued = False
        if batched:
            event.listen(session, "before_commit", self._refuse_unflushed, once=True)

    # ------------------------------------------------------------------ events and jobs

    def record(self, kind: str, **fields: Any) -> None:
        """Append an event to the invoice log (app.ledger) in this transaction."""
        if self.batched:
            self.events.append(ledger.event_row(kind, **fields))
        else:
            ledger.record(self.session, kind, **fields)

    def queue_job(self, job: JobName, item_id: int | str, *, key: str | None = None,
                  not_before: datetime | None = None) -> None:
        """Ask for ``job([item_id])`` once this transaction commits.

        With ``key``, a request is ignored while an earlier one with the same key is not yet
        dispatched (one query); without, every call is a new job: jobs are idempotent, and
        the callers' ``queued_at`` stamps keep the tick from flooding a backlog."""
        if key is not None:
            pending = self.session.scalar(select(OutboxMessage.id).where(
                OutboxMessage.job_id.startswith(f"{key}:"), OutboxMessage.dispatched_at.is_(None)).limit(1))
            if pending:
                return
        job_id = f"{key or f'{job.value}:{item_id}'}:{uuid.uuid4().hex[:12]}"
        self.session.add(OutboxMessage(queue=job.queue.value, func=job.value, args=[item_id], job_id=job_id,
                                       not_before=not_before))
        self.jobs_queued = True

    # ------------------------------------------------------------------ writing

    def flush(self) -> None:
        """Write the held transitions and events now (reads that need them in the database
        call this first). Raises InvalidTransition when a row changed since it was loaded."""
        if self.moves is not None:
            self.moves.write(self.session)
        if self.events:
            self.session.flush()  # the rows the events point at go first
            rows, self.events = self.events, []
            ledger.insert_rows(self.session, rows)

    def _refuse_unflushed(self, session: Session) -> None:
        if (self.moves is not None and self.moves.pending) or self.events:
            raise RuntimeError("a batched unit of work was committed with unwritten transitions or events; "
                               "call flush() (unit_of_work() does) before the commit")


@contextmanager
def unit_of_work(*, batched: bool = False) -> Iterator[UnitOfWork]:
    """A unit of work in its own transaction: flushed and committed on success (then its jobs
    are dispatched), rolled back on error."""
    with db.transaction() as session:
        work = UnitOfWork(session, batched=batched)
        yield work
        work.flush()
    if work.jobs_queued and _dispatch is not None:
        try:
            _dispatch()
        except Exception:  # Redis down: the periodic tick dispatches later
            import logging

            logging.getLogger(__name__).warning("dispatch after commit failed; the tick will retry",
                                                exc_info=True)
