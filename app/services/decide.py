"""Decide invoice requests with the rules and compose their invoices.

received / waiting / held / skipped / failed → deciding → issuing | waiting | held | skipped,
all in one transaction per batch: if the process dies half-way nothing is left in
``deciding``. Invoices are composed straight into ``issuing`` (their serials committed with
them) and sent by this job right after the commit (app.services.issue.send): one hop less
between an order's arrival and its invoice. The invoices of a seller entity whose issuing is
paused are composed as ``ready`` and queued instead, to drain in order when it resumes; the
other sellers' are sent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from app.db import table_of
from app.engine.clock import utcnow
from app.engine.contract import Order as ParsedOrder
from app.engine.contract import parse_order
from app.engine.states import DECIDABLE
from app.engine.states import InvoiceStatus as I
from app.engine.states import RequestStatus as R
from app.errors import InvalidTransition, ValidationFailed
from app.integrations.tax.base import IssueRequest
from app.models import Invoice, InvoiceLine, InvoiceRequest, Order, SellerEntity, Shop
from app.rules import Decision, decide
from app.rules.ruleset import deadline_for
from app.services.context import compose_for, rules_epoch, ruleset_for, seller_for
from app.services.issue import Claim, Sender, send
from app.services.issuing_control import paused_scopes, scope_of
from app.services.outcome import Outcome
from app.services.queueing import queue_issue
from app.services.serials import last_generation, serial_for
from app.services.transitions import move_invoice, move_request
from app.services.unit_of_work import UnitOfWork, unit_of_work
from app.settings import Settings

log = logging.getLogger(__name__)
_VERDICT_STATUS = {"skip": R.SKIPPED, "hold": R.HELD, "wait": R.WAITING}


@dataclass
class _Batch:
    """What deciding a batch carries from request to request within one unit of work."""

    work: UnitOfWork
    now: datetime
    epoch: int  # the rule-set versions as of this batch (context.rules_epoch)
    claims: list[Claim] | None  # composed invoices go here to be sent by this job; None: queue them
    paused: frozenset[str] = frozenset()  # sellers whose composed invoices are queued, not claimed
    composed: list[tuple[Invoice, SellerEntity, str, dict[str, Any]]] = field(default_factory=list)


def decide_requests(request_ids: Iterable[int], settings: Settings, now: datetime | None = None, *,
                    issue_now: bool = True, sender: Sender | None = None) -> Outcome:
    """Decide a batch in one transaction; one commit queues (or claims) all the issue work.

    Fast path: the whole batch in one batched unit of work. If anything fails (a race with
    another worker, a bad row), the batch is rolled back and redone with a savepoint per
    request, so one bad request never takes the others down.

    ``issue_now``: composed invoices are committed as ``issuing`` and sent after the commit,
    by ``sender`` (a worker's sender threads: app/jobs/sender.py) or else by this call. Should
    the process die before the answers are recorded, the tick finds them stuck in ``issuing``
    and asks the provider by serial."""
    ids = [int(i) for i in request_ids]
    claims: list[Claim] = []
    try:
        outcome = _decide_batch(ids, now, isolate=False, claims=claims if issue_now else None)
    except Exception:
        log.info("decide batch of %s fell back to one savepoint per request", len(ids), exc_info=True)
        claims.clear()
        outcome = _decide_batch(ids, now, isolate=True, claims=claims if issue_now else None)
    if claims:
        sent = sender(claims) if sender is not None else send(claims, settings)
        if sent is not None:
            outcome.add(sent, prefix="issue_")
    return outcome


def _decide_batch(ids: list[int], now: datetime | None, *, isolate: bool, claims: list[Claim] | None) -> Outcome:
    outcome = Outcome()
    with unit_of_work(batched=not isolate) as work:
        session = work.session
        # Claim for issuing only the invoices of sellers that are not paused (one read for the
        # batch); a paused seller's are composed as ``ready``, to drain in order on its resume.
        batch = _Batch(work, now or utcnow(), rules_epoch(session), claims,
                       frozenset(paused_scopes(session)) if claims is not None else frozenset())
        # One query loads the batch (and its orders) into the identity map; the references
        # held here keep them there (the identity map is weak), with shops and sellers.
        requests = session.scalars(select(InvoiceRequest).where(InvoiceRequest.id.in_(ids))
                                   .options(joinedload(InvoiceRequest.order))).all()
        shop_ids = {r.order.shop_id for r in requests if r.order.shop_id}
        shops = session.scalars(select(Shop).where(Shop.id.in_(shop_ids))).all() if shop_ids else []
        sellers = session.scalars(select(SellerEntity).where(
            SellerEntity.merchant_id.in_({s.merchant_id for s in shops}))).all() if shops else []
        keep = (requests, shops, sellers)
        # Guarded UPDATEs do not read pending objects, so autoflush buys nothing here.
        with session.no_autoflush:
            if not isolate:
                for request_id in ids:
                    outcome.bump(decide_request(batch, request_id))
                _record_composed(batch)
            else:
                for request_id in ids:
                    try:
                        with work.savepoint():
                            outcome.bump(decide_request(batch, request_id))
                            _record_composed(batch)
                    except InvalidTransition:
                        batch.composed.clear()
                        outcome.bump("raced")  # another worker decided it first
                    except Exception as exc:  # this order alone: the others proceed
                        batch.composed.clear()
                        log.exception("request %s could not be decided", request_id)
                        outcome.bump(_set_aside(work, request_id, exc))
        del keep
    return outcome


def _set_aside(work: UnitOfWork, request_id: int, exc: Exception) -> str:
    """A request whose decision fails for a reason of its own is ``failed`` with that reason
    (a person looks at it; an update of the order decides it again), never retried in a loop."""
    reason = f"could not be decided: {type(exc).__name__}: {exc}"[:500]
    try:
        with work.savepoint():
            request = work.session.get(InvoiceRequest, request_id)
            if request is None:
                return "error"
            work.session.refresh(request)  # what the rolled-back attempt left in memory is not so
            if request.status not in DECIDABLE:
                return "error"
            move_request(work, request, R.DECIDING, expect=request.status, order_pk=request.order_pk)
            move_request(work, request, R.FAILED, expect=R.DECIDING, order_pk=request.order_pk, reason=reason)
        return "failed"
    except Exception:
        log.exception("request %s could not be set aside either", request_id)
        return "error"


def decide_request(batch: _Batch, request_id: int) -> str:
    """Decide one request of the batch; returns what became of it."""
    work, now = batch.work, batch.now
    session = work.session
    request = session.get(InvoiceRequest, request_id)
    if request is None:
        return "missing"
    if request.status not in DECIDABLE:
        return "noop"
    if request.status == R.WAITING and request.issue_after and request.issue_after > now:
        return "not_due"
    order = request.order
    shop = session.get(Shop, order.shop_id) if order.shop_id else None
    move_request(work, request, R.DECIDING, expect=request.status, expect_version=request.state_version,
                 order_pk=order.id)
    try:
        # Validated at intake: read without the schema pass (~0.8 ms an order), once for
        # the rules and the composition both.
        parsed = parse_order(order.document, validate=False)
        ruleset = ruleset_for(session, shop, batch.epoch)
        decision = decide(parsed, ruleset=ruleset, now=now)
        deadline = deadline_for(parsed, ruleset)
    except Exception as exc:  # a broken rule must not loop forever: a person looks at it
        log.exception("decision failed for request %s", request_id)
        move_request(work, request, R.FAILED, expect=R.DECIDING, order_pk=order.id,
                     reason=f"decision failed: {exc}"[:500])
        return "failed"
    stamp: dict[str, Any] = {"decision": decision.as_dict(), "rules_version": decision.rules_version,
             "rules_fired": list(decision.rules_fired), "deadline_at": deadline}
    reason = "; ".join(r["message"] for r in decision.as_dict()["reasons"])[:500] or None
    work.tally("decision", order.platform, shop.seller_entity_id if shop else None, str(decision.action))
    if decision.action in _VERDICT_STATUS:
        verdict = _VERDICT_STATUS[decision.action]
        extra: dict[str, Any] = {"issue_after": decision.issue_after} if verdict == R.WAITING else {}
        move_request(work, request, verdict, expect=R.DECIDING, order_pk=order.id, reason=reason, **extra, **stamp)
        return verdict
    return _compose(batch, request, order, parsed, shop, decision, stamp)


def _compose(batch: _Batch, request: InvoiceRequest, order: Order, parsed: ParsedOrder, shop: Shop | None,
             decision: Decision, stamp: dict[str, Any]) -> str:
    work = batch.work
    session = work.session
    seller = seller_for(session, shop, decision.seller_code)
    if seller is None:
        move_request(work, request, R.HELD, expect=R.DECIDING, order_pk=order.id,
                     reason="no seller entity configured for this shop", **stamp)
        return R.HELD
    try:
        draft = compose_for(session, parsed, shop, decision)
    except (ValidationFailed, ArithmeticError, ValueError) as exc:  # this order's data: a person looks
        move_request(work, request, R.HELD, expect=R.DECIDING, order_pk=order.id,
                     reason=f"cannot compose: {exc}"[:500], **stamp)
        return R.HELD
    if draft["decision"]["action"] != "issue" or not draft["invoices"]:
        reason = "; ".join(r["message"] for r in draft["decision"]["reasons"])[:500]
        verdict = R.SKIPPED if draft["decision"]["action"] == "skip" else R.HELD
        move_request(work, request, verdict, expect=R.DECIDING, order_pk=order.id, reason=reason,
                     **{**stamp, "decision": draft["decision"]})
        return verdict
    # A first decision has no earlier invoices; a re-decision (after a hold, a failure) goes past them.
    generation = 0
    if request.rules_version is not None:
        earlier = session.scalars(select(Invoice).where(Invoice.request_id == request.id,
                                                        Invoice.color == "blue")).all()
        live = [i for i in earlier if i.status not in (I.FAILED, I.CANCELLED)]
        if live:
            # Composing the order again would issue those parts a second time: the failed
            # part is retried (重试), or what was issued is reversed first (after-sales).
            move_request(work, request, R.HELD, expect=R.DECIDING, order_pk=order.id, reason=(
                "invoices of this request are already "
                + ", ".join(sorted({str(i.status) for i in live}))
                + ": retry the failed part instead of deciding again")[:500], **stamp)
            return R.HELD
        for old in earlier:
            if old.status == I.FAILED:  # replaced by this decision's invoices: never retried later
                move_invoice(work, old, I.CANCELLED, expect=I.FAILED,
                             reason="replaced by the invoices of a new decision")
        generation = last_generation(session, request.id)
    count = len(draft["invoices"])
    claiming = batch.claims is not None and scope_of(seller.id) not in batch.paused
    for index, part in enumerate(draft["invoices"], start=1):
        invoice = Invoice(
            request_id=request.id, order_pk=order.id, seller_entity_id=seller.id, color="blue",
            kind=part["kind"], status=I.ISSUING if claiming else I.READY,
            serial_no=serial_for(request.id, index, generation + 1), state_version=0, attempts=0,
            split_index=index, split_count=count, buyer=part["buyer"], seller=part["seller"],
            total_amount=Decimal(part["total_amount"]), total_tax=Decimal(part["total_tax"]),
            total=Decimal(part["total"]), remark=part.get("remark"),
            rules_version=decision.rules_version, rules_fired=list(decision.rules_fired), queued_at=utcnow(),
        )
        session.add(invoice)
        batch.composed.append((invoice, seller, f"{index}/{count}", part))
    move_request(work, request, R.ISSUING, expect=R.DECIDING, order_pk=order.id, reason=None,
                 **{**stamp, "decision": draft["decision"]})
    return R.ISSUING


def _record_composed(batch: _Batch) -> None:
    """Insert the invoices composed so far (one flush for the batch), log them and either
    claim them for this job (``issuing``, serial committed with the row) or queue them."""
    composed, batch.composed = batch.composed, []
    if not composed:
        return
    work = batch.work
    work.session.flush()
    # The lines go in as one executemany (no ids to read back): much cheaper than ORM objects,
    # and a multi-row INSERT of a few hundred lines is a statement psycopg re-parses every time.
    work.session.connection().execute(table_of(InvoiceLine).insert(), [
        _line_row(invoice.id, line) for invoice, _, _, draft in composed for line in draft["lines"]])
    for invoice, seller, part, draft in composed:
        work.record("invoice_composed", order_pk=invoice.order_pk, request_id=invoice.request_id,
                    invoice_id=invoice.id, to_state=I.READY,
                    data={"serial_no": invoice.serial_no, "total": draft["total"],
                          "rules_version": invoice.rules_version, "part": part})
        if batch.claims is None or invoice.status != I.ISSUING:
            queue_issue(work, invoice.id, stamp=False)
            continue
        # Inserted as ``issuing``: the log shows the step a separate claim would have made.
        work.record("invoice_transition", order_pk=invoice.order_pk, request_id=invoice.request_id,
                    invoice_id=invoice.id, from_state=I.READY, to_state=I.ISSUING,
                    data={"serial_no": invoice.serial_no, "attempt": 1})
        # Built from the draft: the same payload as from the stored rows (IssueLine is canonical).
        batch.claims.append(Claim(invoice.id, IssueRequest.from_draft_invoice(invoice.serial_no, draft), seller))


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
