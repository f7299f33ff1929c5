"""Recording what the tax provider answered, for the issue job (answers to issue and 重试
calls) and the poll job (answers to queries by serial): which state each answer leads to.

Exactly once: an answer that may hide a processed request (a timeout, a lost reply) leads to
a query by serial, never to a blind resend; only a serial the provider says it never had is
sent again (the same serial: the provider is idempotent on it). Transient failures wait with
a back-off; permanent ones are ``failed`` with the provider's reason.

The answers of a batch are recorded in one batched unit of work (``recorded``); if a row
changed under it (another worker recorded it first) or one answer cannot be recorded, the
batch is redone item by item, and an answer that cannot be recorded sets its invoice aside
(``unknown``, asked again after the longest back-off) without holding up the others.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from app.engine.clock import utcnow
from app.engine.states import SETTLED_INVOICE
from app.engine.states import InvoiceStatus as I
from app.engine.states import RequestStatus as R
from app.errors import InvalidTransition
from app.integrations.tax.base import (
    Accepted,
    CreditExhausted,
    GatewayPaused,
    IssueStatus,
    NotFound,
    NotRetryable,
    OutcomeUnknown,
    RetryUnsupported,
    TaxGatewayError,
    TransientGatewayError,
)
from app.models import Invoice, InvoiceRequest
from app.services.outcome import Outcome
from app.services.queueing import queue_issue
from app.services.serials import last_generation, serial_for
from app.services.transitions import move_invoice, move_request
from app.services.unit_of_work import UnitOfWork, unit_of_work
from app.settings import Timing

log = logging.getLogger(__name__)

MAX_TRANSIENT_ATTEMPTS = 12


def backoff(attempts: int, timing: Timing, retry_after: float | None = None) -> timedelta:
    base = min(2 ** max(attempts - 1, 0), timing.max_backoff.total_seconds())
    seconds = max(base * (0.75 + random.random() / 2), retry_after or 0)
    return timedelta(seconds=seconds)


def classify_issue(answer: Any) -> str:
    """What an answer to an issue call is: accepted, unsent (issuing is paused), credit,
    unknown (may have been processed), transient, or failed (the provider refused the data)."""
    if isinstance(answer, Accepted):
        return "accepted"
    if isinstance(answer, GatewayPaused):
        return "unsent"
    if isinstance(answer, CreditExhausted):
        return "credit"
    if isinstance(answer, OutcomeUnknown):
        return "unknown"
    if isinstance(answer, TransientGatewayError):
        return "transient"
    return "failed"  # PermanentGatewayError and anything else the provider refused


def classify_retry(answer: Any) -> str:
    """An answer to ``gateway.retry``: the three refusals that are not a failure of the
    invoice, then the same kinds as an issue answer."""
    if isinstance(answer, NotFound):
        return "resend"  # the provider never accepted the serial: send it (the same one) again
    if isinstance(answer, NotRetryable):
        return "not_failed"  # held in another state than failed: ask which
    if isinstance(answer, RetryUnsupported):
        return "unsupported"  # this provider cannot retry: see Recorder.without_retry
    return classify_issue(answer)


def recorded(invoice_ids: list[int], record_one: Callable[[Recorder, int], str], timing: Timing,
             prepare: Callable[[UnitOfWork], None] | None = None) -> Outcome:
    """Record the answers of a batch in one transaction: ``prepare(work)`` once, then
    ``record_one(recorder, invoice_id)`` (what happened) for each, with batched transitions.
    If a row changed under us (another worker recorded it), redo it unbatched, where each item
    is guarded on its own and a lost race is just counted: no savepoint needed, a refused
    guarded UPDATE changes nothing, and nothing else is written for that item before it."""

    def run(work: UnitOfWork) -> Outcome:
        counts = Outcome()
        recorder = Recorder(work, timing)
        # The invoices and their requests into the identity map (held here: it is weak), so
        # recording their answers needs no per-invoice SELECT.
        invoices = work.session.scalars(select(Invoice).where(Invoice.id.in_(invoice_ids))).all()
        requests = work.session.scalars(select(InvoiceRequest).where(
            InvoiceRequest.id.in_({i.request_id for i in invoices}))).all() if invoices else []
        if prepare is not None:
            prepare(work)
        for invoice_id in invoice_ids:
            if work.batched:
                counts.bump(record_one(recorder, invoice_id))
                continue
            try:
                with work.savepoint():
                    counts.bump(record_one(recorder, invoice_id))
            except InvalidTransition:
                counts.bump("raced")  # another worker recorded it first
            except Exception as exc:  # this answer alone; the others are recorded
                log.exception("the answer for invoice %s could not be recorded", invoice_id,
                              extra={"invoice_id": invoice_id})
                counts.bump(recorder.set_aside(invoice_id, exc))
        del invoices, requests
        counts.waiting, counts.issued_at = recorder.waiting, recorder.issued_at
        return counts

    try:
        with unit_of_work(batched=True) as work, work.session.no_autoflush:
            return run(work)
    except InvalidTransition:
        log.info("recording a batch raced with another worker; redoing it item by item", exc_info=True)
    except Exception:
        log.warning("recording a batch failed; redoing it item by item", exc_info=True)
    with unit_of_work() as work, work.session.no_autoflush:
        return run(work)


class Recorder:
    """Records answers in one unit of work; every method returns what happened."""

    def __init__(self, work: UnitOfWork, timing: Timing) -> None:
        self.work = work
        self.timing = timing
        self.waiting: list[int] = []  # accepted, not settled: asked again
        self.issued_at: dict[int, datetime] = {}

    # ------------------------------------------------------------------ issue and 重试 answers

    def issue_answer(self, invoice_id: int, kind: str, value: Any, result: Any, *, retry: bool = False) -> str:
        """The answer to an issue call or, with ``retry``, to a 重试 call (``result``: the query
        right after it, for what was accepted or could not be retried)."""
        work = self.work
        back = I.RETRY_READY if retry else I.READY  # where an unsent or transiently failed call waits
        if kind == "accepted":
            move_invoice(work, invoice_id, I.PENDING, expect=I.ISSUING, provider_ref=value.provider_serial,
                         data={"provider_serial": value.provider_serial, "duplicate": value.duplicate,
                               **({"retry": True} if retry else {})},
                         next_attempt_at=utcnow() + self.timing.first_poll)
            return self.query_answer(invoice_id, I.PENDING, 0, result, just_accepted=True)
        if kind in ("unknown", "not_failed"):
            # The call may have been processed (unknown), or the provider holds the serial in
            # another state than we do (not_failed): query by serial, never send blind.
            reason = str(value) if kind == "unknown" else f"not retried, the provider holds it as not failed: {value}"
            move_invoice(work, invoice_id, I.UNKNOWN, expect=I.ISSUING, reason=reason[:200],
                         next_attempt_at=utcnow() + self.timing.first_poll)
            return kind
        if kind == "resend":
            move_invoice(work, invoice_id, I.READY, expect=I.ISSUING, next_attempt_at=None,
                         reason="the provider has no record of this serial: it is sent again")
            queue_issue(work, invoice_id)
            return "resend"
        if kind == "unsupported":
            return self.without_retry(invoice_id, result)
        if kind == "transient":
            return self.retry_later(invoice_id, value, to=back)
        if kind == "failed":
            code = getattr(value, "code", None) or type(value).__name__
            self.fail(invoice_id, f"{code}: {value}", expect=I.ISSUING)
            return "failed"
        # Unsent (refused before processing because issuing is paused, or never sent after the
        # pause) or refused for want of credit: back to (retry_)ready, sent again on resume.
        why = f"credit exhausted: {value}" if kind == "credit" else "issuing is paused"
        move_invoice(work, invoice_id, back, expect=I.ISSUING, reason=f"not sent: {why}"[:200])
        return "paused"

    def without_retry(self, invoice_id: int, result: Any) -> str:
        """重试 at a provider that cannot retry: its answer to the query by serial decides. Never
        accepted: the same serial is sent again. Failed there (final at such a provider, so the
        serial can never become an invoice): a new serial, the old one closed in the invoice log.
        Pending or issued after all: recorded as such. No answer: asked again later."""
        work = self.work
        if isinstance(result, NotFound):
            return self.issue_answer(invoice_id, "resend", result, None)
        if isinstance(result, TransientGatewayError) or result is None:
            return self.retry_later(invoice_id, result or TransientGatewayError("no answer"), to=I.RETRY_READY)
        if isinstance(result, TaxGatewayError):
            self.fail(invoice_id, f"cannot retry, and the query by serial failed: {result}", expect=I.ISSUING)
            return "failed"
        if result.status != IssueStatus.FAILED:
            return self.query_answer(invoice_id, I.ISSUING, 0, result)
        invoice = work.session.get(Invoice, invoice_id)
        assert invoice is not None  # loaded by ``recorded``
        work.flush()  # the generation below reads the serials of the batch's rows
        closed = invoice.serial_no
        assert invoice.request_id is not None
        serial_no = serial_for(invoice.request_id, invoice.split_index,
                               last_generation(work.session, invoice.request_id) + 1)
        work.record("serial_closed", order_pk=invoice.order_pk, request_id=invoice.request_id,
                    invoice_id=invoice_id, data={"serial_no": closed, "replaced_by": serial_no,
                                                 "provider_status": result.status.value,
                                                 "reason": "the provider cannot retry a failed serial"})
        move_invoice(work, invoice_id, I.READY, expect=I.ISSUING, serial_no=serial_no, provider_ref=None,
                     next_attempt_at=None, reason=f"sent under a new serial; {closed} closed",
                     data={"serial_no": serial_no, "closed_serial_no": closed})
        queue_issue(work, invoice_id)
        return "new_serial"

    # ------------------------------------------------------------------ query answers

    def query_answer(self, invoice_id: int, status: str, attempts: int, result: Any,
                     just_accepted: bool = False) -> str:
        """One answer to a query by serial for an invoice in ``status``; returns what happened
        (prefixed ``poll_`` when asked right after the provider accepted it)."""
        if result is None:
            kind = "query_failed"
        elif isinstance(result, NotFound):
            # Accepted but unknown now: keep asking, never resend. Never reached: resend the same serial.
            kind = "lost_pending" if status == I.PENDING else "resend"
        elif isinstance(result, TaxGatewayError):
            log.info("query %s failed: %s", invoice_id, result, extra={"invoice_id": invoice_id})
            kind = "query_failed"
        else:
            kind = {IssueStatus.ISSUED: "issued", IssueStatus.FAILED: "failed"}.get(result.status, "pending")
        if kind == "issued":
            self.mark_issued(invoice_id, status, result)
        elif kind == "failed":
            self.fail(invoice_id, f"{result.error_code}: {result.error_reason}", expect=status)
        elif kind == "resend":
            move_invoice(self.work, invoice_id, I.READY, expect=status,
                         reason="provider has no record of this serial", next_attempt_at=None)
            queue_issue(self.work, invoice_id)
        elif kind == "pending" and just_accepted:
            self.waiting.append(invoice_id)  # not settled yet: next_attempt_at is set, the tick polls it
        else:  # pending, lost_pending, query_failed: ask again later
            if kind == "pending":
                self.waiting.append(invoice_id)
            self.poll_later(invoice_id, status, attempts, to=I.PENDING if kind == "pending" else None)
        return f"poll_{kind}" if just_accepted else kind

    def poll_later(self, invoice_id: int, status: str, attempts: int, to: I | None = None) -> None:
        when = utcnow() + backoff(attempts + 1, self.timing)
        if to and to != status:
            move_invoice(self.work, invoice_id, to, expect=status, next_attempt_at=when)
        else:
            self.work.flush()
            self.work.session.execute(update(Invoice).where(Invoice.id == invoice_id, Invoice.status == status)
                                      .values(next_attempt_at=when, attempts=Invoice.attempts + 1)
                                      .execution_options(synchronize_session=False))

    def mark_issued(self, invoice_id: int, status: str, result: Any) -> None:
        """The invoice is issued; its request too once every part of it is."""
        work = self.work
        issued_at = result.issued_at or utcnow()
        self.issued_at[invoice_id] = issued_at
        move_invoice(work, invoice_id, I.ISSUED, expect=status, number=result.number,
                     issued_at=issued_at, next_attempt_at=None,
                     data={"number": result.number, "provider_serial": result.provider_serial})
        invoice = work.session.get(Invoice, invoice_id)
        assert invoice is not None
        if invoice.split_count != 1:
            work.flush()  # the count below reads the parts' rows
        open_parts = 0 if invoice.split_count == 1 else work.session.query(Invoice).filter(
            Invoice.request_id == invoice.request_id, Invoice.color == "blue",
            Invoice.status.notin_(sorted(SETTLED_INVOICE))).count()
        if open_parts == 0:
            request = work.session.get(InvoiceRequest, invoice.request_id)
            if request is None or request.status != R.ISSUING:
                return
            try:
                move_request(work, request, R.ISSUED, expect=R.ISSUING, order_pk=invoice.order_pk)
            except InvalidTransition:
                if work.batched:
                    raise

    # ------------------------------------------------------------------ failures

    def set_aside(self, invoice_id: int, exc: Exception) -> str:
        """An answer that could not be recorded (a malformed reply, a bug): the invoice waits as
        ``unknown`` with the reason, asked again after the longest back-off, so it neither loops
        nor is resent (it may be issued at the provider: never ``failed`` on a guess)."""
        work = self.work
        reason = f"the provider's answer could not be recorded: {type(exc).__name__}: {exc}"[:200]
        when = utcnow() + self.timing.max_backoff
        try:
            with work.savepoint():
                status = work.session.scalar(select(Invoice.status).where(Invoice.id == invoice_id))
                if status in (I.ISSUING, I.PENDING):
                    move_invoice(work, invoice_id, I.UNKNOWN, expect=status, reason=reason, next_attempt_at=when)
                elif status == I.UNKNOWN:
                    invoice = work.session.get(Invoice, invoice_id)
                    assert invoice is not None
                    work.session.execute(update(Invoice).where(Invoice.id == invoice_id, Invoice.status == status)
                                         .values(next_attempt_at=when, attempts=Invoice.attempts + 1)
                                         .execution_options(synchronize_session=False))
                    work.record("answer_set_aside", order_pk=invoice.order_pk, request_id=invoice.request_id,
                                invoice_id=invoice_id, data={"reason": reason})
                else:
                    return "error"
            return "set_aside"
        except Exception:
            log.exception("invoice %s could not be set aside either", invoice_id, extra={"invoice_id": invoice_id})
            return "error"

    def retry_later(self, invoice_id: int, exc: TaxGatewayError, *, to: I = I.READY) -> str:
        invoice = self.work.session.get(Invoice, invoice_id)
        assert invoice is not None
        attempts = invoice.attempts + 1
        if attempts >= MAX_TRANSIENT_ATTEMPTS:
            self.fail(invoice_id, f"gave up after {attempts} transient failures: {exc}", expect=I.ISSUING)
            return "failed"
        retry_after = getattr(exc, "retry_after", None)
        move_invoice(self.work, invoice_id, to, expect=I.ISSUING, reason=str(exc)[:200], attempts=attempts,
                     next_attempt_at=utcnow() + backoff(attempts, self.timing, retry_after))
        return "retry"

    def fail(self, invoice_id: int, reason: str, *, expect: str) -> None:
        """The invoice failed; its request too, unless another part of it failed first."""
        work = self.work
        move_invoice(work, invoice_id, I.FAILED, expect=expect, reason=reason[:500],
                     failure_reason=reason[:500], next_attempt_at=None)
        invoice = work.session.get(Invoice, invoice_id)
        assert invoice is not None and invoice.request_id is not None
        request = work.session.get(InvoiceRequest, invoice.request_id)
        if request is not None and request.status != R.ISSUING:
            return  # another part of the same order failed first
        try:  # a refused guarded UPDATE changes nothing: no savepoint needed
            move_request(work, request or invoice.request_id, R.FAILED, expect=R.ISSUING,
                         order_pk=invoice.order_pk, reason=f"invoice {invoice.serial_no} failed: {reason}"[:500])
        except InvalidTransition:
            if work.batched:
                raise
            # another part of the same order failed first
