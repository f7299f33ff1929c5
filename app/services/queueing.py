"""Asking for work on a request or an invoice: the job goes into the outbox of the unit of work
and the row's ``queued_at`` is stamped, so the periodic tick re-queues only work whose job has
had time to run (or was lost) and never floods a backlog with duplicates."""

from __future__ import annotations

from sqlalchemy import update

from app.engine.clock import utcnow
from app.models import Invoice, InvoiceRequest
from app.models.job import JobName
from app.services.unit_of_work import UnitOfWork


def queue_decision(work: UnitOfWork, request_id: int) -> None:
    work.session.execute(update(InvoiceRequest).where(InvoiceRequest.id == request_id)
                         .values(queued_at=utcnow()).execution_options(synchronize_session=False))
    work.queue_job(JobName.DECIDE_REQUESTS, request_id)


def queue_issue(work: UnitOfWork, invoice_id: int, *, stamp: bool = True) -> None:
    """``stamp=False`` when the caller already set ``queued_at`` on the new row."""
    if stamp:
        work.session.execute(update(Invoice).where(Invoice.id == invoice_id).values(queued_at=utcnow())
                             .execution_options(synchronize_session=False))
    work.queue_job(JobName.ISSUE_INVOICES, invoice_id)


def queue_poll(work: UnitOfWork, invoice_id: int) -> None:
    work.session.execute(update(Invoice).where(Invoice.id == invoice_id).values(queued_at=utcnow())
                         .execution_options(synchronize_session=False))
    work.queue_job(JobName.POLL_INVOICES, invoice_id)
