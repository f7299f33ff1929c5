"""The periodic recovery pass (the scheduler's tick, every second): retry due work (but a
paused seller's), poll results, recover work a stopped worker left behind, wake waiting
requests, and resume a seller paused for an outage once its provider account answers again
(each seller alone). Everything it needs is in the database, so a flushed Redis only delays
work. (The job also pushes the outbox first: app/jobs/tasks.py.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select

from app.engine.clock import utcnow
from app.engine.states import SENDABLE
from app.engine.states import InvoiceStatus as I
from app.engine.states import RequestStatus as R
from app.models import Invoice, InvoiceRequest
from app.services.issuing_control import paused_scopes, probe_outages, record_probes, sending_allowed
from app.services.outcome import Outcome
from app.services.queueing import queue_decision, queue_issue, queue_poll
from app.services.transitions import move_invoice
from app.services.unit_of_work import unit_of_work
from app.settings import Settings


def _due_unqueued(statuses: Iterable[str], now: datetime, lost: datetime, *where: Any) -> Any:
    """Invoices in ``statuses`` whose next attempt is due and that no live job covers: never
    queued, queued before ``lost`` (the job must be gone), or queued before the retry time
    it is now waiting for. Oldest first, so a backlog drains in order."""
    return (select(Invoice.id).where(Invoice.status.in_(sorted(statuses)))
            .where((Invoice.next_attempt_at.is_(None)) | (Invoice.next_attempt_at <= now))
            .where(Invoice.queued_at.is_(None) | (Invoice.queued_at <= lost)
                   | (Invoice.next_attempt_at.is_not(None) & (Invoice.queued_at < Invoice.next_attempt_at)))
            .where(*where).order_by(Invoice.id).limit(2000))


def tick(settings: Settings, now: datetime | None = None) -> Outcome:
    outcome = Outcome()
    timing = settings.timing
    now = now or utcnow()
    probed = probe_outages(settings)  # provider calls, before the transaction
    with unit_of_work() as work:
        session = work.session
        resumed = record_probes(work, probed)  # each resumed seller's backlog is queued
        if resumed:
            outcome.bump("resumed", len(resumed))
        paused = paused_scopes(session)
        lost = now - timing.requeue_after  # a job queued before this has surely run or been lost
        # Due retries (next_attempt_at passed since the last queueing) and invoices waiting to
        # be sent whose job was lost (queued long ago, still waiting), but for paused sellers.
        retry = session.scalars(_due_unqueued(SENDABLE, now, lost, sending_allowed(paused))).all()
        for invoice_id in retry:
            queue_issue(work, invoice_id)
        outcome.bump("retry_queued", len(retry))
        due_polls = session.scalars(_due_unqueued((I.PENDING, I.UNKNOWN), now, lost)).all()
        for invoice_id in due_polls:
            queue_poll(work, invoice_id)
        outcome.bump("polls_queued", len(due_polls))
        stuck = session.scalars(select(Invoice.id).where(Invoice.status == I.ISSUING,
                                                         Invoice.updated_at <= now - timing.stuck_issuing)).all()
        for invoice_id in stuck:
            # A worker died between the commit and the answer: ask, never resend.
            move_invoice(work, invoice_id, I.UNKNOWN, expect=I.ISSUING,
                         reason="no answer recorded (worker stopped?)", next_attempt_at=now)
            queue_poll(work, invoice_id)
        outcome.bump("stuck_recovered", len(stuck))
        undecided = session.scalars(
            select(InvoiceRequest.id).where(
                ((InvoiceRequest.status == R.WAITING) & (InvoiceRequest.issue_after <= now)
                 & (InvoiceRequest.queued_at.is_(None) | (InvoiceRequest.queued_at < InvoiceRequest.issue_after)
                    | (InvoiceRequest.queued_at <= lost)))
                | ((InvoiceRequest.status == R.RECEIVED) & (InvoiceRequest.updated_at <= now - timing.stale_undecided)
                   & (InvoiceRequest.queued_at.is_(None) | (InvoiceRequest.queued_at <= lost)))
            ).order_by(InvoiceRequest.id).limit(5000)
        ).all()
        for request_id in undecided:
            queue_decision(work, request_id)
        outcome.bump("decisions_queued", len(undecided))
    return outcome
