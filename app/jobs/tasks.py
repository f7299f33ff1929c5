"""RQ jobs: one-line wrappers over services; they take ids, never ORM objects, and return the
service's counts. Their names are app.models.job.JobName."""

from __future__ import annotations

import logging
from typing import Any

from app.jobs import outbox, queues, sender
from app.models.job import JobName
from app.services import deadlines, decide, issue, issuing_control, ledger_sealing, poll, recovery
from app.services.issue import Sender
from app.services.outcome import Outcome

log = logging.getLogger(__name__)


def _sender() -> Sender | None:
    running = sender.current()
    return running.submit if running is not None else None


def decide_requests(request_ids: list[int]) -> dict[str, Any]:
    return decide.decide_requests(request_ids, queues.current_settings(), sender=_sender()).counts


def issue_invoices(invoice_ids: list[int]) -> dict[str, Any]:
    return issue.issue_invoices(invoice_ids, queues.current_settings(), sender=_sender()).counts


def poll_invoices(invoice_ids: list[int]) -> dict[str, Any]:
    return poll.poll_invoices(invoice_ids, queues.current_settings()).counts


def tick() -> dict[str, Any]:
    """Push what the outbox still holds (Redis was down, a process died after its commit),
    then the recovery pass."""
    settings = queues.current_settings()
    outcome = Outcome()
    try:
        outcome.bump("outbox_dispatched", outbox.dispatch_pending(older_than=settings.timing.outbox_grace))
    except Exception:
        log.warning("outbox dispatch failed (Redis down?)", exc_info=True)
    outcome.add(recovery.tick(settings))
    return outcome.counts


def seal_ledger(budget_seconds: float = 30.0) -> int:
    return ledger_sealing.seal_backlog(budget_seconds, queues.current_settings())


def refresh_credit() -> bool:
    return issuing_control.refresh_credit(queues.current_settings())


def check_deadlines() -> dict[str, Any]:
    return deadlines.check_deadlines()


# Periodic work registered with RQ's cron scheduler (`kaipiao scheduler`): job, seconds.
PERIODIC: tuple[tuple[JobName, int], ...] = (
    (JobName.TICK, 1),
    (JobName.SEAL_LEDGER, 5),
    (JobName.CHECK_DEADLINES, 300),
    (JobName.REFRESH_CREDIT, 300),
)
