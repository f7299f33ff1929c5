"""A use case's transaction and what it writes at its end. Every service that moves a state,
records an event or asks for a job takes the ``UnitOfWork`` it works in, so whether its writes
happen now or at the end shows in the signature, not in hidden session state.

- Events (``record``) and jobs (``queue_job``) are held and written by ``flush()`` in two
  executemany INSERTs (no ORM objects, no ids to read back), in the order they were made.
- ``batched=False``: a transition is one guarded UPDATE at once (app.services.transitions).
- ``batched=True``: transitions are checked at once against the loaded objects and written by
  ``flush()`` as one executemany UPDATE per shape, guarded on each row's status *and*
  state_version as loaded. A row someone changed since it was loaded makes ``flush()`` raise
  ``InvalidTransition``; the caller rolls back and redoes its work unbatched, where each item
  is guarded on its own (a race costs time, never correctness).
- ``savepoint()`` (unbatched only): what is held since it began is dropped with it on error.
- Nothing held is ever lost: ``unit_of_work()`` flushes before its commit, and a commit of the
  session flushes what is still held (a unit made over a caller's session).
- Jobs are outbox rows in the same transaction; ``unit_of_work()`` pushes them to the queue
  after the commit (the job system registers how: ``dispatch_after_commit``). Whatever misses
  that (Redis down, a crash), the periodic tick pushes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app import db, ledger, logging_setup
from app.engine.clock import utcnow
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
        self.events: list[dict[str, Any]] = []
        self.jobs: list[dict[str, Any]] = []
        self.jobs_queued = False
        # Raw observations for the metrics (app/services/tallies.py): labelled at the commit,
        # counted once it succeeded, forgotten on a rollback.
        self.tallies: list[tuple[Any, ...]] = []
        self._count: Callable[[], None] | None = None
        event.listen(session, "before_commit", self._flush_at_commit)
        event.listen(session, "after_commit", self._count_after_commit)
        event.listen(session, "after_rollback", self._forget_tallies)

    # ------------------------------------------------------------------ events and jobs

    def record(self, kind: str, **fields: Any) -> None:
        """Append an event to the invoice log (app.ledger) in this transaction."""
        self.events.append(ledger.event_row(kind, **fields))

    def queue_job(self, job: JobName, item_id: int | str, *, key: str | None = None,
                  not_before: datetime | None = None) -> None:
        """Ask for ``job([item_id])`` once this transaction commits.

        With ``key``, a request is ignored while an earlier one with the same key is not yet
        dispatched; without, every call is a new job: jobs are idempotent, and the callers'
        ``queued_at`` stamps keep the tick from flooding a backlog."""
        if key is not None:
            if any(row["job_id"].startswith(f"{key}:") for row in self.jobs):
                return
            pending = self.session.scalar(select(OutboxMessage.id).where(
                OutboxMessage.job_id.startswith(f"{key}:"), OutboxMessage.dispatched_at.is_(None)).limit(1))
            if pending:
                return
        self.jobs.append({"created_at": utcnow(), "queue": job.queue.value, "func": job.value,
                          "args": [item_id], "job_id": f"{key or f'{job.value}:{item_id}'}:{uuid.uuid4().hex[:12]}",
                          "not_before": not_before, "attempts": 0,
                          # What caused it (a web request, or the job this runs in): the new
                          # job's log lines show the same request id (app/jobs/outbox.py).
                          "origin_request_id": (logging_setup.request_id() or "")[:64] or None})
        self.jobs_queued = True

    def tally(self, *observation: Any) -> None:
        """Count ``observation`` in the metrics once this transaction commits (tallies.resolve)."""
        self.tallies.append(observation)

    # ------------------------------------------------------------------ writing

    def flush(self) -> None:
        """Write the held transitions, events and jobs now (reads that need them in the
        database call this first). Raises InvalidTransition when a row changed since it was
        loaded (batched)."""
        if self.moves is not None:
            self.moves.write(self.session)
        if self.events or self.jobs:
            self.session.flush()  # the rows the events point at go first
            if self.events:
                rows, self.events = self.events, []
                ledger.insert_rows(self.session, rows)
            if self.jobs:
                jobs, self.jobs = self.jobs, []
                self.session.connection().execute(db.table_of(OutboxMessage).insert(), jobs)

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """A SAVEPOINT: on error, the database and what was held since are both rolled back."""
        if self.batched:
            raise RuntimeError("a batched unit of work has no savepoints: redo the batch unbatched")
        events, jobs, tallies = len(self.events), len(self.jobs), len(self.tallies)
        try:
            with self.session.begin_nested():
                yield
        except BaseException:
            del self.events[events:], self.jobs[jobs:], self.tallies[tallies:]
            raise

    def _flush_at_commit(self, session: Session) -> None:
        if not session.in_nested_transaction():  # also fired when a SAVEPOINT is released
            self.flush()
            if self.tallies:
                from app.services import tallies

                observed, self.tallies = self.tallies, []
                try:
                    self._count = tallies.resolve(session, observed)
                except Exception:  # metrics never fail the work they describe
                    import logging

                    logging.getLogger(__name__).warning("metrics: labelling a commit failed", exc_info=True)

    def _count_after_commit(self, _session: Session) -> None:
        count, self._count = self._count, None
        if count is not None:
            try:
                count()
            except Exception:  # metrics never fail the work they describe
                import logging

                logging.getLogger(__name__).warning("metrics: counting a commit failed", exc_info=True)

    def _forget_tallies(self, _session: Session) -> None:
        self.tallies.clear()
        self._count = None


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
