"""What operations (and customer service) do by hand to invoices, requests and job failures:
重试 of a failed invoice, a new decision, skipping a held request, asking the provider about an
invoice, resuming a seller entity's issuing, closing a job failure. Each checks that the action
makes sense now (``Refused`` otherwise, nothing changed) and leaves its mark in the invoice log;
the caller writes its audit row in the same unit of work. Given a ``merchant_id`` (the caller is
confined to that merchant), an invoice or request of another merchant is refused as not found.
Provider calls are made by the jobs these actions queue, never here.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.engine.clock import utcnow
from app.engine.states import REDECIDABLE_BY_HAND
from app.engine.states import InvoiceStatus as I
from app.engine.states import RequestStatus as R
from app.errors import InvalidTransition, Problem, Refused
from app.models import Invoice, InvoiceRequest, JobFailure, Order, SellerEntity, Shop
from app.services.issuing_control import DEFAULT_SCOPE, resume, seller_id_of
from app.services.queueing import queue_decision, queue_issue, queue_poll
from app.services.transitions import move_invoice, move_request
from app.services.unit_of_work import UnitOfWork
from app.settings import Settings


def _get(work: UnitOfWork, model: Any, obj_id: int, merchant_id: int | None = None) -> Any:
    """The row, or ``Refused("not_found")``: also for a row of another merchant than ``merchant_id``
    (None: any), which must not learn that the row exists."""
    obj = work.session.get(model, obj_id)
    if obj is not None and merchant_id is not None and _merchant_of_order(work, obj.order_pk) != merchant_id:
        obj = None
    if obj is None:
        raise Refused("not_found", f"{model.__name__} {obj_id} does not exist", kind=model.__name__, id=obj_id)
    return obj


def _merchant_of_order(work: UnitOfWork, order_pk: int | None) -> int | None:
    return work.session.scalar(select(Shop.merchant_id).join(Order, Order.shop_id == Shop.id)
                               .where(Order.id == order_pk))


def retry_failed(work: UnitOfWork, invoice_id: int, actor: str, *, merchant_id: int | None = None) -> Invoice:
    """重试: mark a failed invoice for a retry at the provider and queue the issue job, which
    makes the call. Sending the same serial again would only get "duplicate" from the provider,
    which keeps it failed; app.services.answers says what each answer to the retry leads to."""
    invoice = _get(work, Invoice, invoice_id, merchant_id)
    if invoice.status != I.FAILED:
        raise Refused("not_failed", f"invoice {invoice_id} is {invoice.status}; only failed invoices are retried",
                      id=invoice_id, status=invoice.status)
    move_invoice(work, invoice_id, I.RETRY_READY, expect=I.FAILED, actor=actor, attempts=0,
                 next_attempt_at=None, failure_reason=None, data={"serial_no": invoice.serial_no})
    try:
        move_request(work, invoice.request_id, R.ISSUING, expect=R.FAILED, actor=actor)
    except InvalidTransition:
        pass  # another part of the order is being retried already
    queue_issue(work, invoice_id)
    return invoice


def redecide(work: UnitOfWork, request_id: int, actor: str, *, merchant_id: int | None = None) -> InvoiceRequest:
    """Decide a held, skipped, failed or waiting request again (after fixing data or rules)."""
    request = _get(work, InvoiceRequest, request_id, merchant_id)
    if request.status not in REDECIDABLE_BY_HAND:
        raise InvalidTransition(Problem(
            "status", "invalid_transition",
            f"request {request_id} is {request.status}; only held, skipped, failed or waiting requests "
            "are decided again"))
    queue_decision(work, request_id)
    work.record("redecide_requested", order_pk=request.order_pk, request_id=request_id, actor=actor)
    return request


def skip_held(work: UnitOfWork, request_id: int, actor: str, *, merchant_id: int | None = None) -> InvoiceRequest:
    """A person looked at a held request and decided nothing is to be invoiced."""
    request = _get(work, InvoiceRequest, request_id, merchant_id)
    if request.status != R.HELD:
        raise Refused("not_held", f"request {request_id} is {request.status}; only held requests are skipped here",
                      id=request_id, status=request.status)
    move_request(work, request_id, R.SKIPPED, expect=R.HELD, actor=actor, reason=f"skipped by {actor}")
    return request


def query_invoice(work: UnitOfWork, invoice_id: int, settings: Settings, *, merchant_id: int | None = None) -> Invoice:
    """Queue a query by serial for an invoice whose outcome is not known."""
    invoice = _get(work, Invoice, invoice_id, merchant_id)
    stuck = invoice.status == I.ISSUING and invoice.updated_at <= utcnow() - settings.timing.stuck_issuing
    # A fresh "issuing" invoice may be mid-call in a worker: only ask once it is stuck.
    if invoice.status not in (I.UNKNOWN, I.PENDING) and not stuck:
        raise Refused("not_awaiting", f"invoice {invoice_id} is {invoice.status}; only unknown, pending or "
                      "stuck issuing invoices are queried", id=invoice_id, status=invoice.status)
    queue_poll(work, invoice_id)
    return invoice


def resume_issuing(work: UnitOfWork, actor: str, scope: str = DEFAULT_SCOPE) -> SellerEntity | None:
    """Operations confirm the cause of a seller entity's pause is gone (its tax-bureau login
    renewed, its credit raised); its backlog drains in order, the other sellers' switches stay
    as they are. Returns the seller entity (None for the default scope)."""
    try:
        seller_id = seller_id_of(scope)
    except ValueError:
        raise Refused("not_found", f"no issuing switch {scope!r}", kind="GatewayStatus", id=scope) from None
    seller = work.session.get(SellerEntity, seller_id) if seller_id is not None else None
    if not resume(work, actor=actor, scope=scope):
        if seller is None:
            raise Refused("not_paused", "issuing is not paused")
        raise Refused("seller_not_paused", f"issuing is not paused for {seller.name}", seller=seller.name)
    return seller


def resolve_job_failures(work: UnitOfWork, job_id: str, resolution: str, actor: str) -> None:
    """Close every open failure row of a job (a requeued job that failed again left another)."""
    now = utcnow()
    for failure in work.session.scalars(select(JobFailure).where(JobFailure.job_id == job_id,
                                                                 JobFailure.resolved_at.is_(None))):
        failure.resolved_at, failure.resolved_by, failure.resolution = now, actor, resolution


def open_job_failure(work: UnitOfWork, failure_id: int) -> JobFailure:
    failure = _get(work, JobFailure, failure_id)
    if failure.resolved_at is not None:
        raise Refused("already_resolved", f"job failure {failure_id} is already resolved", id=failure_id)
    return failure


def resolve_job_failure(work: UnitOfWork, failure_id: int, actor: str) -> JobFailure:
    """A person has dealt with a failed job: it leaves the list of open failures."""
    failure = open_job_failure(work, failure_id)
    failure.resolved_at, failure.resolved_by, failure.resolution = utcnow(), actor, "resolved"
    return failure
