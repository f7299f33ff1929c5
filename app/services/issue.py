"""Issue invoices at the tax provider, exactly once.

ready → issuing (committed) → call → pending | issued | unknown | ready (back-off) | failed;
retry_ready (重试) → issuing (committed) → ``gateway.retry`` → pending | unknown | retry_ready |
failed. Every serial (our idempotency key with the provider) is committed as ``issuing``
before any call leaves this process; the answers are then recorded together
(app.services.answers). A crash before that leaves ``issuing``, which the tick turns into a
query by serial, never a resend. The decide job sends what it composed the same way
(``send``), right after its commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import selectinload

from app.engine.clock import utcnow
from app.engine.states import SENDABLE
from app.engine.states import InvoiceStatus as I
from app.engine.words import amount_in_words
from app.errors import InvalidTransition
from app.integrations.tax.base import AuthExpired, IssueRequest, TaxGateway
from app.models import Invoice, SellerEntity
from app.services import issuing_control
from app.services.answers import Recorder, classify_issue, classify_retry, recorded
from app.services.context import gateway_for
from app.services.issuing_control import Streak, pause, paused_scopes, record_streaks, scope_of
from app.services.outcome import Outcome
from app.services.transitions import move_invoice
from app.services.unit_of_work import UnitOfWork, unit_of_work
from app.settings import Settings, Timing

log = logging.getLogger(__name__)


@dataclass
class Claim:
    """An invoice committed as ``issuing`` (its serial stored), ready to be sent."""

    invoice_id: int
    request: IssueRequest
    seller: SellerEntity | None
    retry: bool = False  # claimed from retry_ready: ask the provider to retry the serial


def invoice_document(invoice: Invoice) -> dict[str, Any]:
    """The stored invoice as a draft invoice (the exact data that is sent to the provider)."""
    lines = []
    for line in invoice.lines:
        doc: dict[str, Any] = {"seq": line.seq, "kind": line.kind, "name": line.name, "tax_code": line.tax_code,
                               "amount": str(line.amount), "tax_rate": str(line.tax_rate), "tax": str(line.tax),
                               "gross": str(line.gross)}
        for key in ("source_line_id", "display_name", "short_name", "spec", "unit", "tax_treatment"):
            if getattr(line, key):
                doc[key] = getattr(line, key)
        if line.quantity is not None:
            doc["quantity"] = format(line.quantity.normalize(), "f")
        if line.unit_price is not None:
            doc["unit_price"] = format(line.unit_price, "f")
        lines.append(doc)
    return {"kind": invoice.kind, "color": invoice.color, "buyer": invoice.buyer, "seller": invoice.seller,
            "remark": invoice.remark or "", "lines": lines, "total_amount": str(invoice.total_amount),
            "total_tax": str(invoice.total_tax), "total": str(invoice.total),
            "total_in_words": amount_in_words(invoice.total)}


# Hands claimed invoices to whoever sends them; returns the outcome, or None when they are sent
# elsewhere (a worker's sender threads: app/jobs/sender.py).
Sender = Callable[[list["Claim"]], "Outcome | None"]


def issue_invoices(invoice_ids: Iterable[int], settings: Settings, now: datetime | None = None, *,
                   sender: Sender | None = None) -> Outcome:
    """Claim the sendable invoices among ``invoice_ids`` (one transaction) and send them
    (``sender``, else in this call)."""
    ids = [int(i) for i in invoice_ids]
    now = now or utcnow()
    try:
        outcome, claims = _claim(ids, now, settings.timing, batched=True)
    except InvalidTransition:  # another worker claimed one of them first: item by item
        outcome, claims = _claim(ids, now, settings.timing, batched=False)
    if claims:
        sent = sender(claims) if sender is not None else send(claims, settings)
        if sent is not None:
            outcome.add(sent)
    return outcome


def _claim(ids: list[int], now: datetime, timing: Timing, *, batched: bool) -> tuple[Outcome, list[Claim]]:
    outcome = Outcome()
    claims: list[Claim] = []
    with unit_of_work(batched=batched) as work, work.session.no_autoflush:
        session = work.session
        paused = paused_scopes(session)  # one read per job: a paused seller's invoices stay as they are
        held: set[str] = set()
        invoices = session.scalars(select(Invoice).where(Invoice.id.in_(ids))
                                   .options(selectinload(Invoice.lines)).order_by(Invoice.id)).all()
        sellers: dict[int | None, SellerEntity | None] = {}
        for invoice in invoices:
            if invoice.status not in SENDABLE:
                outcome.bump("skipped")
                continue
            scope = scope_of(invoice.seller_entity_id)
            if scope in paused:
                if scope not in held:  # counted once per paused seller: they drain on its resume
                    held.add(scope)
                    outcome.bump("paused")
                continue
            if invoice.next_attempt_at and invoice.next_attempt_at > now:
                outcome.bump("skipped")
                continue
            retry = invoice.status == I.RETRY_READY
            try:
                request = IssueRequest.from_draft_invoice(invoice.serial_no, invoice_document(invoice))
            except Exception as exc:  # a stored invoice that cannot be sent: it alone, never in a loop
                outcome.bump(_unsendable(work, invoice, exc, timing, batched=batched))
                continue
            seller_id = invoice.seller_entity_id
            if seller_id not in sellers:
                sellers[seller_id] = session.get(SellerEntity, seller_id) if seller_id else None
            try:
                move_invoice(work, invoice, I.ISSUING, expect=invoice.status,
                             data={"serial_no": invoice.serial_no, "attempt": invoice.attempts + 1,
                                   **({"retry": True} if retry else {})})
            except InvalidTransition:
                if batched:
                    raise
                outcome.bump("raced")
                continue
            claims.append(Claim(invoice.id, request, sellers[seller_id], retry))
    return outcome, claims


def _unsendable(work: UnitOfWork, invoice: Invoice, exc: Exception, timing: Timing, *, batched: bool) -> str:
    """A stored invoice that cannot be sent (never sent, so safely ``failed``, with its request);
    a 重试 of one waits for a person instead of coming round again at every tick."""
    log.exception("invoice %s cannot be sent", invoice.id, extra={"invoice_id": invoice.id})
    reason = f"cannot be sent: {type(exc).__name__}: {exc}"
    try:
        if invoice.status == I.READY:
            Recorder(work, timing).fail(invoice.id, reason, expect=I.READY)
            return "failed"
        work.session.execute(update(Invoice).where(Invoice.id == invoice.id, Invoice.status == invoice.status)
                             .values(next_attempt_at=utcnow() + timing.max_backoff)
                             .execution_options(synchronize_session=False))
        return "unsendable"
    except InvalidTransition:
        if batched:
            raise
        return "raced"


def send(claims: list[Claim], settings: Settings, *, settle: float = 0.0) -> Outcome:
    """Send claimed invoices (batch calls where the provider has them), ask for the results of
    the accepted ones, and record every answer in one transaction. Each seller entity is sent
    through its own provider account: a pause of one (its login expired, its credit exhausted,
    its provider out) stops the sending of that seller only (what is left of it goes back
    unsent) and pauses its switch; the other sellers' invoices in the job are sent.

    ``settle``: seconds the provider takes to settle an accepted invoice; the results are asked
    for that much later (the invoices stay ``issuing`` meanwhile, so a crash leaves them to the
    tick's query by serial). ``Outcome.sent_at`` says when the provider answered the sending."""
    answers: dict[int, tuple[str, Any]] = {}  # invoice id → (kind, Accepted / exception)
    stops: dict[str, tuple[str, str]] = {}  # seller scope → (pause code, reason)
    streaks: dict[str, Streak] = {}  # seller scope → failed calls in a row seen by this job
    by_seller: dict[int | None, list[Claim]] = {}
    for claim in claims:
        by_seller.setdefault(claim.seller.id if claim.seller else None, []).append(claim)
    for seller_id, group in by_seller.items():
        scope = scope_of(seller_id)
        stop, streak = _send_group(group, gateway_for(group[0].seller, settings), answers)
        if stop is not None:
            stops[scope] = stop
        streaks[scope] = streak
    # Ask for what was accepted once the provider should have settled it (at once for a fast
    # one), and about a retry the provider cannot do: that answer decides between the same
    # serial and a new one. Everything is then recorded together.
    sent_at = time.time()
    if settle > 0 and any(kind == "accepted" for kind, _ in answers.values()):
        time.sleep(settle)
    results: dict[int, Any] = {}
    for group in by_seller.values():
        ask = [c for c in group if answers[c.invoice_id][0] in ("accepted", "unsupported")]
        if ask:
            gateway = gateway_for(group[0].seller, settings)
            results.update(zip([c.invoice_id for c in ask],
                               gateway.query_many([c.request.serial_no for c in ask]), strict=True))
    retried = {c.invoice_id for c in claims if c.retry}

    def prepare(work: UnitOfWork) -> None:
        outages = record_streaks(work, streaks)  # one read for the job's sellers
        for scope in sorted(streaks):
            reason = stops.get(scope) or (("outage", outages[scope]) if scope in outages else None)
            if reason is not None:
                pause(work, *reason, scope=scope)

    def record_one(recorder: Recorder, invoice_id: int) -> str:
        kind, value = answers[invoice_id]
        return recorder.issue_answer(invoice_id, kind, value, results.get(invoice_id), retry=invoice_id in retried)

    outcome = recorded(list(answers), record_one, settings.timing, prepare)
    outcome.sent_at = sent_at
    accepted = sum(kind == "accepted" for kind, _ in answers.values())
    if accepted:
        outcome.bump("accepted", accepted)
    return outcome


def _send_group(group: list[Claim], gateway: TaxGateway, answers: dict[int, tuple[str, Any]]
                ) -> tuple[tuple[str, str] | None, Streak]:
    """Send one seller entity's claims through its provider account, their answers into
    ``answers``; returns why to pause that seller (None: no reason) and its failed calls in a row."""
    stop: tuple[str, str] | None = None  # (pause code, reason)
    # Failed calls in a row: ``leading`` before this job's first success extend the streak
    # recorded by earlier jobs (gateway_status.failure_streak); ``streak`` is the current run.
    streak, leading, succeeded, last_error = 0, 0, False, None
    for retry in (False, True):
        members = [c for c in group if c.retry is retry]
        # At most ten calls before a pause is heeded (a retry is one call per invoice).
        step = 10 if retry else max(gateway.batch_size, 1) * 10
        for start in range(0, len(members), step):
            chunk = members[start:start + step]
            if stop is not None:
                answers.update((c.invoice_id, ("unsent", None)) for c in chunk)
                continue
            sent = (gateway.retry_many([c.request.serial_no for c in chunk]) if retry
                    else gateway.issue_many([c.request for c in chunk]))
            for claim, answer in zip(chunk, sent, strict=True):
                kind = classify_retry(answer) if retry else classify_issue(answer)
                if kind == "unsent" and stop is None:
                    stop = ("auth_expired" if isinstance(answer, AuthExpired) else "paused", str(answer))
                elif kind == "credit" and stop is None:
                    stop = ("credit", f"monthly credit (授信额度) exhausted: {answer}")
                elif kind == "transient":
                    # One failed call answers for every item it carried: count calls, not items.
                    call_error = getattr(answer, "call_error", answer)
                    if call_error is not last_error:
                        streak += 1
                        leading += 0 if succeeded else 1
                    last_error = call_error
                    if streak >= issuing_control.OUTAGE_THRESHOLD and stop is None:
                        stop = ("outage", f"{streak} consecutive transient failures: {answer}")
                elif kind == "accepted":
                    streak, last_error, succeeded = 0, None, True
                answers[claim.invoice_id] = (kind, answer)
    return stop, Streak(streak if succeeded else None, leading)
