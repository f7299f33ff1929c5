"""From a stored order to an issued invoice, exactly once.

Service functions that the RQ jobs (app/jobs/tasks.py) call with ids. Each unit of work is
its own transaction; every state change goes through app/engine/lifecycle.py.

Exactly once: an invoice's serial (our idempotency key with the provider) is stored when
the invoice is composed, and the invoice is committed as ``issuing`` *before* the gateway is
called. After a timeout the state is ``unknown`` and the next step is a query by serial,
never a blind resend; only when the provider says it has no such serial is the same serial
sent again (the provider is idempotent on it). Transient failures go back to ``ready`` with
a backoff; permanent ones become ``failed`` with the provider's reason; an expired tax-bureau
login or an outage pauses issuing until it is resolved, then the backlog drains in order.

重试 (operations retry a failed invoice): a failed serial is not simply sent again — the
provider would answer "duplicate" and keep it failed. The invoice goes ``failed →
retry_ready`` and the issue job asks the provider to retry that serial (``gateway.retry``,
Nuonuo reInvoice), committed as ``issuing`` first like an issue; its answer is recorded the
same way (accepted → pending → polled; lost → unknown → queried, never retried blind). Only a
serial the provider never accepted is sent again, and only where a provider cannot retry
does the invoice get a new serial, the old one closed in the invoice log.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, joinedload, selectinload

from app import db, ledger
from app.engine import lifecycle
from app.engine.clock import utcnow
from app.engine.contract import parse_order
from app.engine.decisions import ruleset_for
from app.engine.gateways import gateway_for
from app.engine.shop_context import compose_for, seller_for
from app.engine.states import SENDABLE
from app.errors import InvalidTransition, Problem, ValidationFailed
from app.integrations.tax.base import (
    Accepted,
    AuthExpired,
    CreditExhausted,
    GatewayPaused,
    IssueRequest,
    IssueStatus,
    NotFound,
    NotRetryable,
    OutcomeUnknown,
    RetryUnsupported,
    TaxGatewayError,
    TransientGatewayError,
)
from app.jobs import outbox, queues
from app.models import GatewayStatus, Invoice, InvoiceLine, InvoiceRequest, SellerEntity, Shop
from app.rules import decide
from app.rules.ruleset import deadline_for

log = logging.getLogger(__name__)

SCOPE = "default"  # one pause switch for the deployment's provider account(s)
MAX_TRANSIENT_ATTEMPTS = 12
OUTAGE_THRESHOLD = 5  # consecutive transient failures in one batch that mean "provider down"


@dataclass
class Timing:
    """Knobs of retries and recovery; ``KAIPIAO_TIMING_<NAME>`` (seconds) overrides each,
    which the chaos test and the benchmarks use to shorten them."""

    stuck_issuing: timedelta = timedelta(seconds=120)
    stale_undecided: timedelta = timedelta(seconds=60)
    requeue_after: timedelta = timedelta(seconds=60)
    outbox_grace: timedelta = timedelta(seconds=2)
    first_poll: timedelta = timedelta(milliseconds=500)
    max_backoff: timedelta = timedelta(seconds=300)

    @classmethod
    def from_env(cls) -> Timing:
        import os
        from dataclasses import fields

        timing = cls()
        for f in fields(cls):
            value = os.environ.get(f"KAIPIAO_TIMING_{f.name.upper()}")
            if value:
                # Decimal parsing: app/engine, where money lives, has no float conversions at all.
                setattr(timing, f.name, timedelta(milliseconds=int(Decimal(value) * 1000)))
        return timing


TIMING = Timing.from_env()


@dataclass
class Outcome:
    counts: dict[str, int] = field(default_factory=dict)

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n


def backoff(attempts: int, retry_after: float | None = None) -> timedelta:
    base = min(2 ** max(attempts - 1, 0), TIMING.max_backoff.total_seconds())
    seconds = max(base * (0.75 + random.random() / 2), retry_after or 0)
    return timedelta(seconds=seconds)


def serial_for(request_id: int, split_index: int, generation: int) -> str:
    """Stable, unique and ≤ 20 characters (Nuonuo orderNo): KP + request + part + generation."""
    return f"KP{request_id:011d}{split_index:03d}{generation:04d}"


# ------------------------------------------------------------------------------------------ queue


def queue_decision(session: Session, request_id: int) -> None:
    session.execute(update(InvoiceRequest).where(InvoiceRequest.id == request_id).values(queued_at=utcnow())
                    .execution_options(synchronize_session=False))
    outbox.add(session, "decide", "decide_requests", request_id)


def queue_issue(session: Session, invoice_id: int, *, stamp: bool = True) -> None:
    """``stamp=False`` when the caller already set ``queued_at`` on the new row."""
    if stamp:
        session.execute(update(Invoice).where(Invoice.id == invoice_id).values(queued_at=utcnow())
                        .execution_options(synchronize_session=False))
    outbox.add(session, "issue", "issue_invoices", invoice_id)


def queue_poll(session: Session, invoice_id: int) -> None:
    session.execute(update(Invoice).where(Invoice.id == invoice_id).values(queued_at=utcnow())
                    .execution_options(synchronize_session=False))
    outbox.add(session, "issue", "poll_invoices", invoice_id)


# ------------------------------------------------------------------------------------------ decide


@dataclass
class _Claim:
    """An invoice committed as ``issuing`` (its serial stored), ready to be sent."""

    invoice_id: int
    request: IssueRequest
    seller: SellerEntity | None
    retry: bool = False  # claimed from retry_ready: ask the provider to retry the serial


def decide_requests(request_ids: Iterable[int], now: datetime | None = None, *, issue_now: bool = True) -> Outcome:
    """A batch in one transaction; one commit queues (or claims) all the issue work.

    Fast path: the whole batch with its transitions written together (lifecycle.batched).
    If anything fails (a race with another worker, a bad row), the batch is rolled back and
    redone with a savepoint per request, so one bad request never takes the others down.

    ``issue_now``: invoices are composed straight into ``issuing`` (serial committed in the
    same transaction) and sent by this job right after the commit: one hop less between an
    order's arrival and its invoice. Should this process die before the answers are
    recorded, the tick finds them stuck in ``issuing`` and asks the provider by serial."""
    ids = [int(i) for i in request_ids]
    claimed: list[_Claim] = []
    try:
        outcome = _decide_batch(ids, now, isolate=False, claimed=claimed if issue_now else None)
    except Exception:
        log.info("decide batch of %s fell back to one savepoint per request", len(ids), exc_info=True)
        claimed.clear()
        outcome = _decide_batch(ids, now, isolate=True, claimed=claimed if issue_now else None)
    if claimed:
        for key, n in _send(claimed).counts.items():
            outcome.bump(f"issue_{key}", n)
    return outcome


def _decide_batch(ids: list[int], now: datetime | None, *, isolate: bool, claimed: list[_Claim] | None) -> Outcome:
    outcome = Outcome()
    with db.transaction() as session:
        # Claim for issuing only while issuing is not paused; otherwise compose as ``ready``
        # and let the backlog drain in order on resume.
        session.info[_CLAIM_KEY] = claimed if claimed is not None and not pause_status(session) else None
        # One query loads the batch (and its orders) into the identity map; the references
        # held here keep them there (the identity map is weak), with shops and sellers.
        batch = session.scalars(select(InvoiceRequest).where(InvoiceRequest.id.in_(ids))
                                .options(joinedload(InvoiceRequest.order))).all()
        shop_ids = {r.order.shop_id for r in batch if r.order.shop_id}
        shops = session.scalars(select(Shop).where(Shop.id.in_(shop_ids))).all() if shop_ids else []
        sellers = session.scalars(select(SellerEntity).where(
            SellerEntity.merchant_id.in_({s.merchant_id for s in shops}))).all() if shops else []
        keep = (batch, shops, sellers)
        # Guarded UPDATEs do not read pending objects, so autoflush buys nothing here.
        with session.no_autoflush:
            if not isolate:
                with lifecycle.batched(session):
                    for request_id in ids:
                        outcome.bump(decide_request(session, request_id, now=now))
                    _record_composed(session)
            else:
                for request_id in ids:
                    try:
                        with session.begin_nested():
                            outcome.bump(decide_request(session, request_id, now=now))
                            _record_composed(session)
                    except InvalidTransition:
                        session.info.pop(_COMPOSED_KEY, None)
                        outcome.bump("raced")  # another worker decided it first
    del keep
    return outcome


_CLAIM_KEY = "kaipiao_claim"  # list[_Claim] to fill, or None: compose as ready and queue
_COMPOSED_KEY = "kaipiao_composed"  # invoices added by _compose_and_queue, not yet flushed


def decide_request(session: Session, request_id: int, now: datetime | None = None) -> str:
    """received / waiting / held / skipped / failed → deciding → issuing | waiting | held | skipped.

    One transaction: if the process dies half-way nothing is left in ``deciding``."""
    now = now or utcnow()
    request = session.get(InvoiceRequest, request_id)
    if request is None:
        return "missing"
    if request.status not in ("received", "waiting", "held", "skipped", "failed"):
        return "noop"
    if request.status == "waiting" and request.issue_after and request.issue_after > now:
        return "not_due"
    order = request.order
    shop = session.get(Shop, order.shop_id) if order.shop_id else None
    lifecycle.move_request(session, request, "deciding", expect=request.status,
                           expect_version=request.state_version, order_pk=order.id)
    try:
        # Validated at intake: read without the schema pass (~0.8 ms an order), once for
        # the rules and the composition both.
        parsed = parse_order(order.document, validate=False)
        ruleset = ruleset_for(session, shop)
        decision = decide(parsed, ruleset=ruleset, now=now)
        deadline = deadline_for(parsed, ruleset)
    except Exception as exc:  # a broken rule must not loop forever: a person looks at it
        log.exception("decision failed for request %s", request_id)
        lifecycle.move_request(session, request, "failed", expect="deciding", order_pk=order.id,
                               reason=f"decision failed: {exc}"[:500])
        return "failed"
    stamp = {"decision": decision.as_dict(), "rules_version": decision.rules_version,
             "rules_fired": list(decision.rules_fired), "deadline_at": deadline}
    reason = "; ".join(r["message"] for r in decision.as_dict()["reasons"])[:500] or None
    if decision.action in ("skip", "hold", "wait"):
        verdict = {"skip": "skipped", "hold": "held", "wait": "waiting"}[decision.action]
        extra = {"issue_after": decision.issue_after} if verdict == "waiting" else {}
        lifecycle.move_request(session, request, verdict, expect="deciding", order_pk=order.id,
                               reason=reason, **extra, **stamp)
        return verdict
    return _compose_and_queue(session, request, order, parsed, shop, decision, stamp)


def _compose_and_queue(session: Session, request: InvoiceRequest, order, parsed, shop: Shop | None, decision,
                       stamp: dict[str, Any]) -> str:
    seller = seller_for(session, shop, decision.seller_code)
    if seller is None:
        lifecycle.move_request(session, request, "held", expect="deciding", order_pk=order.id,
                               reason="no seller entity configured for this shop", **stamp)
        return "held"
    try:
        draft = compose_for(session, parsed, shop, decision)
    except ValidationFailed as exc:
        lifecycle.move_request(session, request, "held", expect="deciding", order_pk=order.id,
                               reason=f"cannot compose: {exc}"[:500], **stamp)
        return "held"
    if draft["decision"]["action"] != "issue" or not draft["invoices"]:
        reason = "; ".join(r["message"] for r in draft["decision"]["reasons"])[:500]
        verdict = "skipped" if draft["decision"]["action"] == "skip" else "held"
        lifecycle.move_request(session, request, verdict, expect="deciding", order_pk=order.id,
                               reason=reason, **{**stamp, "decision": draft["decision"]})
        return verdict
    # A first decision has no earlier invoices; a re-decision (after a hold, a failure) goes past them.
    generation = 0 if request.rules_version is None else _last_generation(session, request.id)
    count = len(draft["invoices"])
    claiming = session.info.get(_CLAIM_KEY) is not None
    composed = session.info.setdefault(_COMPOSED_KEY, [])
    for index, part in enumerate(draft["invoices"], start=1):
        invoice = Invoice(
            request_id=request.id, order_pk=order.id, seller_entity_id=seller.id, color="blue",
            kind=part["kind"], status="issuing" if claiming else "ready",
            serial_no=serial_for(request.id, index, generation + 1), state_version=0, attempts=0,
            split_index=index, split_count=count, buyer=part["buyer"], seller=part["seller"],
            total_amount=Decimal(part["total_amount"]), total_tax=Decimal(part["total_tax"]),
            total=Decimal(part["total"]), remark=part.get("remark"),
            rules_version=decision.rules_version, rules_fired=list(decision.rules_fired), queued_at=utcnow(),
        )
        session.add(invoice)
        composed.append((invoice, seller, f"{index}/{count}", part))
    lifecycle.move_request(session, request, "issuing", expect="deciding", order_pk=order.id,
                           reason=None, **{**stamp, "decision": draft["decision"]})
    return "issuing"


def _last_generation(session: Session, request_id: int) -> int:
    """The highest serial generation the request's invoices carry (0: none). A new serial takes
    the next one, so it never repeats an earlier serial, nor one closed in the log (a closed
    serial is always below the serial that replaced it)."""
    serials = session.scalars(select(Invoice.serial_no).where(Invoice.request_id == request_id)).all()
    return max((int(serial[-4:]) for serial in serials if serial[-4:].isdigit()), default=0)


def _record_composed(session: Session) -> None:
    """Insert the invoices composed so far (one flush for the batch), log them and either
    claim them for this job (``issuing``, serial committed with the row) or queue them."""
    composed = session.info.pop(_COMPOSED_KEY, None)
    if not composed:
        return
    session.flush()
    # The lines go in as one executemany (no ids to read back): much cheaper than ORM objects,
    # and a multi-row INSERT of a few hundred lines is a statement psycopg re-parses every time.
    session.connection().execute(InvoiceLine.__table__.insert(), [
        _line_row(invoice.id, line) for invoice, _, _, draft in composed for line in draft["lines"]])
    claimed = session.info.get(_CLAIM_KEY)
    for invoice, seller, part, draft in composed:
        ledger.record(session, "invoice_composed", order_pk=invoice.order_pk, request_id=invoice.request_id,
                      invoice_id=invoice.id, to_state="ready",
                      data={"serial_no": invoice.serial_no, "total": draft["total"],
                            "rules_version": invoice.rules_version, "part": part})
        if claimed is None:
            queue_issue(session, invoice.id, stamp=False)
            continue
        # Inserted as ``issuing``: the log shows the step a separate claim would have made.
        ledger.record(session, "invoice_transition", order_pk=invoice.order_pk, request_id=invoice.request_id,
                      invoice_id=invoice.id, from_state="ready", to_state="issuing",
                      data={"serial_no": invoice.serial_no, "attempt": 1})
        # Built from the draft: the same payload as from the stored rows (IssueLine is canonical).
        claimed.append(_Claim(invoice.id, IssueRequest.from_draft_invoice(invoice.serial_no, draft), seller))


def _line_row(invoice_id: int, line: dict[str, Any]) -> dict[str, Any]:
    return {
        "invoice_id": invoice_id, "seq": line["seq"], "kind": line["kind"], "source_line_id": line.get("source_line_id"),
        "name": line["name"], "display_name": line.get("display_name"), "tax_code": line["tax_code"],
        "short_name": line.get("short_name"), "spec": line.get("spec"), "unit": line.get("unit"),
        "quantity": Decimal(line["quantity"]) if line.get("quantity") else None,
        "unit_price": Decimal(line["unit_price"]) if line.get("unit_price") else None,
        "amount": Decimal(line["amount"]), "tax_rate": Decimal(line["tax_rate"]),
        "tax_treatment": line.get("tax_treatment"), "tax": Decimal(line["tax"]), "gross": Decimal(line["gross"]),
    }


# ------------------------------------------------------------------------------------------- issue


def invoice_document(invoice: Invoice) -> dict[str, Any]:
    """The stored invoice as a draft invoice (the exact data that is sent to the provider)."""
    lines = []
    for line in invoice.lines:
        doc = {"seq": line.seq, "kind": line.kind, "name": line.name, "tax_code": line.tax_code,
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
    from app.engine.words import amount_in_words

    return {"kind": invoice.kind, "color": invoice.color, "buyer": invoice.buyer, "seller": invoice.seller,
            "remark": invoice.remark or "", "lines": lines, "total_amount": str(invoice.total_amount),
            "total_tax": str(invoice.total_tax), "total": str(invoice.total),
            "total_in_words": amount_in_words(invoice.total)}


def pause_status(session: Session) -> GatewayStatus | None:
    status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == SCOPE))
    return status if status is not None and status.paused else None


def pause(session: Session, code: str, reason: str, actor: str = "system") -> None:
    status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == SCOPE))
    if status is None:
        status = GatewayStatus(scope=SCOPE)
        session.add(status)
    if status.paused and status.pause_code == code:
        return
    status.paused, status.pause_code, status.pause_reason, status.paused_at = True, code, reason[:500], utcnow()
    ledger.record(session, "issuing_paused", actor=actor, data={"code": code, "reason": reason[:500]})
    log.warning("issuing paused (%s): %s", code, reason)


def resume(session: Session, actor: str) -> bool:
    """Operations confirm the cause is gone (e.g. the tax-bureau login was renewed)."""
    status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == SCOPE))
    if status is None or not status.paused:
        return False
    ledger.record(session, "issuing_resumed", actor=actor, data={"code": status.pause_code})
    status.paused, status.resumed_at, status.resumed_by = False, utcnow(), actor
    status.failure_streak = 0
    _queue_backlog(session, limit=None)
    return True


def issue_invoices(invoice_ids: Iterable[int], now: datetime | None = None) -> Outcome:
    """ready → issuing (committed) → call → pending | issued | unknown | ready (backoff) | failed.
    retry_ready → issuing (committed) → ``gateway.retry`` → pending | unknown | retry_ready
    (backoff, paused) | failed; ``_record_issue`` says what each answer leads to.

    Every serial is committed as ``issuing`` before any call leaves this process; the answers
    are then recorded together (a crash before that leaves ``issuing``, which the tick turns
    into a query by serial)."""
    ids = [int(i) for i in invoice_ids]
    now = now or utcnow()
    try:
        outcome, claimed = _claim(ids, now, batch=True)
    except InvalidTransition:  # another worker claimed one of them first: item by item
        outcome, claimed = _claim(ids, now, batch=False)
    if claimed:
        for key, n in _send(claimed).counts.items():
            outcome.bump(key, n)
    return outcome


def _claim(ids: list[int], now: datetime, *, batch: bool) -> tuple[Outcome, list[_Claim]]:
    outcome = Outcome()
    claimed: list[_Claim] = []
    with db.transaction() as session:
        if pause_status(session):
            outcome.bump("paused")
            return outcome, claimed
        invoices = session.scalars(select(Invoice).where(Invoice.id.in_(ids))
                                   .options(selectinload(Invoice.lines)).order_by(Invoice.id)).all()
        sellers: dict[int, SellerEntity | None] = {}
        with session.no_autoflush, (lifecycle.batched(session) if batch else nullcontext()):
            for invoice in invoices:
                if invoice.status not in SENDABLE or (invoice.next_attempt_at and invoice.next_attempt_at > now):
                    outcome.bump("skipped")
                    continue
                retry = invoice.status == "retry_ready"
                request = IssueRequest.from_draft_invoice(invoice.serial_no, invoice_document(invoice))
                if invoice.seller_entity_id not in sellers:
                    sellers[invoice.seller_entity_id] = (session.get(SellerEntity, invoice.seller_entity_id)
                                                         if invoice.seller_entity_id else None)
                try:
                    lifecycle.move_invoice(session, invoice, "issuing", expect=invoice.status,
                                           data={"serial_no": invoice.serial_no, "attempt": invoice.attempts + 1,
                                                 **({"retry": True} if retry else {})})
                except InvalidTransition:
                    if batch:
                        raise
                    outcome.bump("raced")
                    continue
                claimed.append(_Claim(invoice.id, request, sellers[invoice.seller_entity_id], retry))
    return outcome, claimed


def _send(claimed: list[_Claim]) -> Outcome:
    """Send claimed invoices (batch calls where the provider has them), ask at once for the
    results of the accepted ones, and record every answer in one transaction."""
    settings = queues.current_settings()
    answers: dict[int, tuple[str, Any]] = {}  # invoice id → (kind, Accepted / exception)
    stop: tuple[str, str] | None = None  # (pause code, reason)
    # Failed calls in a row: ``leading`` before this job's first success extend the streak
    # recorded by earlier jobs (gateway_status.failure_streak); ``streak`` is the current run.
    streak, leading, succeeded, last_error = 0, 0, False, None
    by_seller: dict[int | None, list[_Claim]] = {}
    for claim in claimed:
        by_seller.setdefault(claim.seller.id if claim.seller else None, []).append(claim)
    for group in by_seller.values():
        gateway = gateway_for(group[0].seller, settings)
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
                    kind = _classify_retry(answer) if retry else _classify_issue(answer)
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
                        if streak >= OUTAGE_THRESHOLD and stop is None:
                            stop = ("outage", f"{streak} consecutive transient failures: {answer}")
                    elif kind == "accepted":
                        streak, last_error, succeeded = 0, None, True
                    answers[claim.invoice_id] = (kind, answer)
    # Ask right away for what was accepted: a fast provider has settled it already. And for a
    # retry the provider cannot do: the answer decides between the same serial and a new one.
    results: dict[int, Any] = {}
    for group in by_seller.values():
        ask = [c for c in group if answers[c.invoice_id][0] in ("accepted", "unsupported")]
        if ask:
            gateway = gateway_for(group[0].seller, settings)
            results.update(zip([c.invoice_id for c in ask],
                               gateway.query_many([c.request.serial_no for c in ask]), strict=True))
    retried = {c.invoice_id for c in claimed if c.retry}

    def prepare(session: Session) -> None:
        outage = _record_streak(session, streak if succeeded else None, leading)
        reason = stop or (("outage", outage) if outage else None)
        if reason is not None:
            pause(session, *reason)

    def record_one(session: Session, invoice_id: int) -> str:
        kind, value = answers[invoice_id]
        return _record_issue(session, invoice_id, kind, value, results.get(invoice_id), retry=invoice_id in retried)

    outcome = _recorded(list(answers), record_one, prepare)
    accepted = sum(kind == "accepted" for kind, _ in answers.values())
    if accepted:
        outcome.bump("accepted", accepted)
    return outcome


def _record_streak(session: Session, trailing: int | None, leading: int) -> str | None:
    """Keep the deployment-wide count of failed calls in a row; returns the reason to pause
    for an outage once it reaches OUTAGE_THRESHOLD. ``trailing``: failures after this job's
    last success (None: no success, so ``leading`` extends the earlier count). Written only
    when it changes, so the steady state costs one read."""
    status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == SCOPE))
    before = status.failure_streak if status is not None else 0
    if (trailing is None and leading == 0) or trailing == before:
        return None
    if status is None:
        status = GatewayStatus(scope=SCOPE, failure_streak=0)
        session.add(status)
        session.flush()
    # Atomic in the database: several workers record at once.
    value = GatewayStatus.failure_streak + leading if trailing is None else trailing
    after = session.execute(update(GatewayStatus).where(GatewayStatus.id == status.id)
                            .values(failure_streak=value).returning(GatewayStatus.failure_streak)
                            .execution_options(synchronize_session=False)).scalar_one()
    if after >= OUTAGE_THRESHOLD and leading + (trailing or 0) > 0:
        return f"{after} consecutive failed calls to the provider"
    return None


def _load_for_recording(session: Session, invoice_ids: list[int]) -> tuple[list, list]:
    """The invoices and their requests into the identity map (held by the caller): recording
    their answers then needs no per-invoice SELECT."""
    invoices = session.scalars(select(Invoice).where(Invoice.id.in_(invoice_ids))).all()
    requests = session.scalars(select(InvoiceRequest).where(
        InvoiceRequest.id.in_({i.request_id for i in invoices}))).all() if invoices else []
    return invoices, requests


def _classify_issue(answer: Any) -> str:
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


def _classify_retry(answer: Any) -> str:
    """An answer to ``gateway.retry``: the three refusals that are not a failure of the
    invoice, then the same kinds as an issue answer."""
    if isinstance(answer, NotFound):
        return "resend"  # the provider never accepted the serial: send it (the same one) again
    if isinstance(answer, NotRetryable):
        return "not_failed"  # held in another state than failed: ask which
    if isinstance(answer, RetryUnsupported):
        return "unsupported"  # this provider cannot retry: see _without_retry
    return _classify_issue(answer)


def _record_issue(session: Session, invoice_id: int, kind: str, value: Any, result: Any, *,
                  retry: bool = False) -> str:
    """Record the answer to an issue call or, with ``retry``, to a 重试 call (``result``: the
    query right after it, for what was accepted or could not be retried)."""
    back = "retry_ready" if retry else "ready"  # where an unsent or transiently failed call waits
    if kind == "accepted":
        lifecycle.move_invoice(session, invoice_id, "pending", expect="issuing", provider_ref=value.provider_serial,
                               data={"provider_serial": value.provider_serial, "duplicate": value.duplicate,
                                     **({"retry": True} if retry else {})},
                               next_attempt_at=utcnow() + TIMING.first_poll)
        return _record_result(session, invoice_id, "pending", 0, result, just_accepted=True)
    if kind in ("unknown", "not_failed"):
        # The call may have been processed (unknown), or the provider holds the serial in
        # another state than we do (not_failed): query by serial, never send blind.
        reason = str(value) if kind == "unknown" else f"not retried, the provider holds it as not failed: {value}"
        lifecycle.move_invoice(session, invoice_id, "unknown", expect="issuing", reason=reason[:200],
                               next_attempt_at=utcnow() + TIMING.first_poll)
        return kind
    if kind == "resend":
        lifecycle.move_invoice(session, invoice_id, "ready", expect="issuing", next_attempt_at=None,
                               reason="the provider has no record of this serial: it is sent again")
        queue_issue(session, invoice_id)
        return "resend"
    if kind == "unsupported":
        return _without_retry(session, invoice_id, result)
    if kind == "transient":
        return _retry_later(session, invoice_id, value, to=back)
    if kind == "failed":
        code = getattr(value, "code", None) or type(value).__name__
        _fail(session, invoice_id, f"{code}: {value}", expect="issuing")
        return "failed"
    # Unsent (refused before processing because issuing is paused, or never sent after the
    # pause) or refused for want of credit: back to (retry_)ready, sent again when issuing resumes.
    why = f"credit exhausted: {value}" if kind == "credit" else "issuing is paused"
    lifecycle.move_invoice(session, invoice_id, back, expect="issuing", reason=f"not sent: {why}"[:200])
    return "paused"


def _without_retry(session: Session, invoice_id: int, result: Any) -> str:
    """重试 at a provider that cannot retry: its answer to the query by serial decides. Never
    accepted: the same serial is sent again. Failed there (final at such a provider, so the
    serial can never become an invoice): a new serial, the old one closed in the invoice log.
    Pending or issued after all: recorded as such. No answer: asked again later."""
    if isinstance(result, NotFound):
        return _record_issue(session, invoice_id, "resend", result, None)
    if isinstance(result, TransientGatewayError) or result is None:
        return _retry_later(session, invoice_id, result or TransientGatewayError("no answer"), to="retry_ready")
    if isinstance(result, TaxGatewayError):
        _fail(session, invoice_id, f"cannot retry, and the query by serial failed: {result}", expect="issuing")
        return "failed"
    if result.status != IssueStatus.FAILED:
        return _record_result(session, invoice_id, "issuing", 0, result)
    invoice = session.get(Invoice, invoice_id)
    lifecycle.flush_batch(session)  # the generation below reads the serials of the batch's rows
    closed = invoice.serial_no
    serial_no = serial_for(invoice.request_id, invoice.split_index, _last_generation(session, invoice.request_id) + 1)
    ledger.record(session, "serial_closed", order_pk=invoice.order_pk, request_id=invoice.request_id,
                  invoice_id=invoice_id, data={"serial_no": closed, "replaced_by": serial_no,
                                               "provider_status": result.status.value,
                                               "reason": "the provider cannot retry a failed serial"})
    lifecycle.move_invoice(session, invoice_id, "ready", expect="issuing", serial_no=serial_no, provider_ref=None,
                           next_attempt_at=None, reason=f"sent under a new serial; {closed} closed",
                           data={"serial_no": serial_no, "closed_serial_no": closed})
    queue_issue(session, invoice_id)
    return "new_serial"


def _recorded(invoice_ids: list[int], record_one: Any, prepare: Any = None) -> Outcome:
    """Record the answers of a batch in one transaction: ``prepare(session)`` once, then
    ``record_one(session, invoice_id)`` (what happened) for each, with batched transitions.
    If a row changed under us (another worker recorded it), redo it unbatched, where each item
    is guarded on its own and a lost race is just counted — no savepoint needed: a refused
    guarded UPDATE changes nothing, and nothing else is written for that item before it."""

    def run(session: Session) -> Outcome:
        counts = Outcome()
        loaded = _load_for_recording(session, invoice_ids)
        if prepare is not None:
            prepare(session)
        for invoice_id in invoice_ids:
            try:
                counts.bump(record_one(session, invoice_id))
            except InvalidTransition:
                if lifecycle.is_batched(session):
                    raise
                counts.bump("raced")  # another worker recorded it first
        del loaded
        return counts

    try:
        with db.transaction() as session, session.no_autoflush, lifecycle.batched(session):
            return run(session)
    except InvalidTransition:
        log.info("recording a batch raced with another worker; redoing it item by item", exc_info=True)
    with db.transaction() as session, session.no_autoflush:
        return run(session)


def _retry_later(session: Session, invoice_id: int, exc: TaxGatewayError, *, to: str = "ready") -> str:
    invoice = session.get(Invoice, invoice_id)
    attempts = invoice.attempts + 1
    if attempts >= MAX_TRANSIENT_ATTEMPTS:
        _fail(session, invoice_id, f"gave up after {attempts} transient failures: {exc}", expect="issuing")
        return "failed"
    retry_after = getattr(exc, "retry_after", None)
    lifecycle.move_invoice(session, invoice_id, to, expect="issuing", reason=str(exc)[:200],
                           attempts=attempts, next_attempt_at=utcnow() + backoff(attempts, retry_after))
    return "retry"


def _fail(session: Session, invoice_id: int, reason: str, *, expect: str) -> None:
    lifecycle.move_invoice(session, invoice_id, "failed", expect=expect, reason=reason[:500],
                           failure_reason=reason[:500], next_attempt_at=None)
    invoice = session.get(Invoice, invoice_id)
    request = session.get(InvoiceRequest, invoice.request_id)
    if request is not None and request.status != "issuing":
        return  # another part of the same order failed first
    try:  # a refused guarded UPDATE changes nothing: no savepoint needed
        lifecycle.move_request(session, request or invoice.request_id, "failed", expect="issuing",
                               order_pk=invoice.order_pk, reason=f"invoice {invoice.serial_no} failed: {reason}"[:500])
    except InvalidTransition:
        if lifecycle.is_batched(session):
            raise
        # another part of the same order failed first


# -------------------------------------------------------------------------------------------- poll


def poll_invoices(invoice_ids: Iterable[int]) -> Outcome:
    """Ask the provider by serial: pending | unknown | issuing(stuck) → issued | pending | failed | ready.
    One batch query per provider call; the answers of a batch are recorded in one transaction."""
    settings = queues.current_settings()
    with db.transaction() as session:
        rows = session.execute(
            select(Invoice.id, Invoice.serial_no, Invoice.status, Invoice.seller_entity_id, Invoice.attempts)
            .where(Invoice.id.in_([int(i) for i in invoice_ids]),
                   Invoice.status.in_(("pending", "unknown", "issuing")))
            .order_by(Invoice.id)
        ).all()
        sellers = {r.seller_entity_id: session.get(SellerEntity, r.seller_entity_id) for r in rows
                   if r.seller_entity_id}
    results: dict[int, Any] = {}
    by_seller: dict[int | None, list[Any]] = {}
    for row in rows:
        by_seller.setdefault(row.seller_entity_id, []).append(row)
    for seller_id, group in by_seller.items():
        answers = gateway_for(sellers.get(seller_id), settings).query_many([r.serial_no for r in group])
        results.update(zip([r.id for r in group], answers, strict=True))

    by_id = {row.id: row for row in rows}

    def record_one(session: Session, invoice_id: int) -> str:
        row = by_id[invoice_id]
        return _record_result(session, invoice_id, row.status, row.attempts, results[invoice_id])

    return _recorded(list(by_id), record_one) if rows else Outcome()


def _record_result(session: Session, invoice_id: int, status: str, attempts: int, result: Any,
                   just_accepted: bool = False) -> str:
    """Record one query answer for an invoice in ``status``; returns what happened (prefixed
    ``poll_`` when asked right after the provider accepted it)."""
    if result is None:
        kind = "query_failed"
    elif isinstance(result, NotFound):
        # Accepted but unknown now: keep asking, never resend. Never reached: resend the same serial.
        kind = "lost_pending" if status == "pending" else "resend"
    elif isinstance(result, TaxGatewayError):
        log.info("query %s failed: %s", invoice_id, result)
        kind = "query_failed"
    else:
        kind = {IssueStatus.ISSUED: "issued", IssueStatus.FAILED: "failed"}.get(result.status, "pending")
    if kind == "issued":
        _mark_issued(session, invoice_id, status, result)
    elif kind == "failed":
        _fail(session, invoice_id, f"{result.error_code}: {result.error_reason}", expect=status)
    elif kind == "resend":
        lifecycle.move_invoice(session, invoice_id, "ready", expect=status,
                               reason="provider has no record of this serial", next_attempt_at=None)
        queue_issue(session, invoice_id)
    elif kind == "pending" and just_accepted:
        pass  # just accepted, not settled yet: next_attempt_at is set, the tick polls it
    else:  # pending, lost_pending, query_failed: ask again later
        _poll_later(session, invoice_id, status, attempts, to="pending" if kind == "pending" else None)
    return f"poll_{kind}" if just_accepted else kind


def _poll_later(session: Session, invoice_id: int, status: str, attempts: int, to: str | None = None) -> None:
    when = utcnow() + backoff(attempts + 1)
    if to and to != status:
        lifecycle.move_invoice(session, invoice_id, to, expect=status, next_attempt_at=when)
    else:
        lifecycle.flush_batch(session)
        session.execute(update(Invoice).where(Invoice.id == invoice_id, Invoice.status == status)
                        .values(next_attempt_at=when, attempts=Invoice.attempts + 1)
                        .execution_options(synchronize_session=False))


def _mark_issued(session: Session, invoice_id: int, status: str, result) -> None:
    lifecycle.move_invoice(session, invoice_id, "issued", expect=status, number=result.number,
                           issued_at=result.issued_at or utcnow(), next_attempt_at=None,
                           data={"number": result.number, "provider_serial": result.provider_serial})
    invoice = session.get(Invoice, invoice_id)
    if invoice.split_count != 1:
        lifecycle.flush_batch(session)  # the count below reads the parts' rows
    open_parts = 0 if invoice.split_count == 1 else session.query(Invoice).filter(
        Invoice.request_id == invoice.request_id, Invoice.color == "blue",
        Invoice.status.notin_(("issued", "delivering", "delivered", "cancelled"))).count()
    if open_parts == 0:
        request = session.get(InvoiceRequest, invoice.request_id)
        if request is None or request.status != "issuing":
            return
        try:
            lifecycle.move_request(session, request, "issued", expect="issuing", order_pk=invoice.order_pk)
        except InvalidTransition:
            if lifecycle.is_batched(session):
                raise


# -------------------------------------------------------------------------------------------- tick


def _queue_backlog(session: Session, limit: int | None = 2000) -> int:
    """Queue ready invoices that are due, oldest first (drains a backlog in order)."""
    now = utcnow()
    query = (select(Invoice.id, Invoice.state_version).where(Invoice.status.in_(SENDABLE))
             .where((Invoice.next_attempt_at.is_(None)) | (Invoice.next_attempt_at <= now))
             .order_by(Invoice.id))
    rows = session.execute(query.limit(limit) if limit else query).all()
    for row in rows:
        queue_issue(session, row.id)
    return len(rows)


def _due_unqueued(statuses: Iterable[str], now: datetime, lost: datetime) -> Any:
    """Invoices in ``statuses`` whose next attempt is due and that no live job covers: never
    queued, queued before ``lost`` (the job must be gone), or queued before the retry time
    it is now waiting for. Oldest first, so a backlog drains in order."""
    return (select(Invoice.id).where(Invoice.status.in_(statuses))
            .where((Invoice.next_attempt_at.is_(None)) | (Invoice.next_attempt_at <= now))
            .where(Invoice.queued_at.is_(None) | (Invoice.queued_at <= lost)
                   | (Invoice.next_attempt_at.is_not(None) & (Invoice.queued_at < Invoice.next_attempt_at)))
            .order_by(Invoice.id).limit(2000))


def tick(now: datetime | None = None) -> Outcome:
    """Periodic: re-dispatch the outbox, retry due work, poll results, recover stuck work,
    wake waiting requests. Everything it needs is in the database, so a flushed Redis only
    delays work."""
    outcome = Outcome()
    now = now or utcnow()
    try:
        outcome.bump("outbox_dispatched", outbox.dispatch_pending(older_than=TIMING.outbox_grace))
    except Exception:
        log.warning("outbox dispatch failed (Redis down?)", exc_info=True)
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == SCOPE))
        paused = status is not None and status.paused
        if paused and status.pause_code in ("outage",):
            if _probe(session):
                resume(session, actor="system:probe")
                paused = False
        lost = now - TIMING.requeue_after  # a job queued before this has surely run or been lost
        if not paused:
            # Due retries (next_attempt_at passed since the last queueing) and ready invoices
            # whose job was lost (queued long ago, still ready).
            retry = session.scalars(_due_unqueued(SENDABLE, now, lost)).all()
            for invoice_id in retry:
                queue_issue(session, invoice_id)
            outcome.bump("retry_queued", len(retry))
        due_polls = session.scalars(_due_unqueued(("pending", "unknown"), now, lost)).all()
        for invoice_id in due_polls:
            queue_poll(session, invoice_id)
        outcome.bump("polls_queued", len(due_polls))
        stuck = session.scalars(select(Invoice.id).where(Invoice.status == "issuing",
                                                         Invoice.updated_at <= now - TIMING.stuck_issuing)).all()
        for invoice_id in stuck:
            # A worker died between the commit and the answer: ask, never resend.
            lifecycle.move_invoice(session, invoice_id, "unknown", expect="issuing",
                                   reason="no answer recorded (worker stopped?)", next_attempt_at=now)
            queue_poll(session, invoice_id)
        outcome.bump("stuck_recovered", len(stuck))
        undecided = session.scalars(
            select(InvoiceRequest.id).where(
                ((InvoiceRequest.status == "waiting") & (InvoiceRequest.issue_after <= now)
                 & (InvoiceRequest.queued_at.is_(None) | (InvoiceRequest.queued_at < InvoiceRequest.issue_after)
                    | (InvoiceRequest.queued_at <= lost)))
                | ((InvoiceRequest.status == "received") & (InvoiceRequest.updated_at <= now - TIMING.stale_undecided)
                   & (InvoiceRequest.queued_at.is_(None) | (InvoiceRequest.queued_at <= lost)))
            ).order_by(InvoiceRequest.id).limit(5000)
        ).all()
        for request_id in undecided:
            queue_decision(session, request_id)
        outcome.bump("decisions_queued", len(undecided))
    return outcome


def _probe(session: Session) -> bool:
    """Is the provider there? A cheap call — the monthly credit (授信额度) left — whose answer
    the operations view shows."""
    settings = queues.current_settings()
    seller = session.scalar(select(SellerEntity).order_by(SellerEntity.id).limit(1))
    if seller is None:
        return False
    try:
        credit = gateway_for(seller, settings).remaining_credit()
    except TaxGatewayError:
        return False
    status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == SCOPE))
    if status is None:
        status = GatewayStatus(scope=SCOPE)
        session.add(status)
    status.credit_remaining, status.credit_checked_at = credit, utcnow()
    return True


def refresh_credit() -> bool:
    """Periodic: record the provider's remaining monthly credit."""
    with db.transaction() as session:
        return _probe(session)


def retry_failed(session: Session, invoice_id: int, actor: str) -> None:
    """Operations 重试: mark a failed invoice for a retry at the provider and queue the issue
    job, which makes the call (never a web request). Sending the same serial again would only
    get "duplicate" from the provider, which keeps it failed; see ``_record_issue`` for what
    each answer to the retry leads to."""
    invoice = session.get(Invoice, invoice_id)
    lifecycle.move_invoice(session, invoice_id, "retry_ready", expect="failed", actor=actor, attempts=0,
                           next_attempt_at=None, failure_reason=None, data={"serial_no": invoice.serial_no})
    try:
        lifecycle.move_request(session, invoice.request_id, "issuing", expect="failed", actor=actor)
    except InvalidTransition:
        pass
    queue_issue(session, invoice_id)


def redecide(session: Session, request_id: int, actor: str) -> None:
    """Operations / CS: decide a held, skipped or failed request again (after fixing data)."""
    request = session.get(InvoiceRequest, request_id)
    if request.status not in ("held", "skipped", "failed", "waiting"):
        raise InvalidTransition(Problem(
            "status", "invalid_transition",
            f"request {request_id} is {request.status}; only held, skipped, failed or waiting requests are decided again"))
    queue_decision(session, request_id)
    ledger.record(session, "redecide_requested", order_pk=request.order_pk, request_id=request_id, actor=actor)

