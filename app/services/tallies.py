"""What a unit of work counts for the metrics (app/metrics.py), made true by its commit.

Services note raw observations on the unit (``work.tally``: ids, no labels); at the commit they
are labelled in bulk (one SELECT for the invoices' platforms and arrival times, seller codes from
a per-process cache) and only after the commit succeeded are the counters incremented, once per
label set. A rolled-back unit counts nothing."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import metrics
from app.engine.clock import utcnow
from app.models import Invoice, InvoiceRequest, Order, SellerEntity

COUNTED_INVOICE_STATES = frozenset(metrics.INVOICE_COUNTERS)
_codes: dict[int, str] = {}  # seller entity id -> code (codes do not change once invoices exist)
_CHUNK = 500


def invalidate() -> None:
    """Forget the cached seller codes (a new database: ids mean other sellers)."""
    _codes.clear()


def _seller_codes(session: Session, ids: set[int]) -> dict[int, str]:
    missing = [i for i in ids if i not in _codes]
    for start in range(0, len(missing), _CHUNK):
        chunk = missing[start:start + _CHUNK]
        rows = session.execute(select(SellerEntity.id, SellerEntity.code).where(SellerEntity.id.in_(chunk)))
        _codes.update({seller_id: code for seller_id, code in rows})
    return _codes


def resolve(session: Session, observations: Sequence[tuple[Any, ...]]) -> Callable[[], None]:
    """Label ``observations`` in the committing transaction; returns what to do after the commit."""
    seller_ids = {o[2] for o in observations if o[0] != "invoice" and o[2] is not None}
    seller_ids |= {o[2] for o in observations if o[0] == "invoice" and o[2] is not None}
    codes = _seller_codes(session, seller_ids) if seller_ids else {}
    invoice_ids = [o[1] for o in observations if o[0] == "invoice"]
    where: dict[int, tuple[str, Any]] = {}
    for start in range(0, len(invoice_ids), _CHUNK):
        chunk = invoice_ids[start:start + _CHUNK]
        rows = session.execute(
            select(Invoice.id, Order.platform, InvoiceRequest.created_at)
            .outerjoin(Order, Order.id == Invoice.order_pk)
            .outerjoin(InvoiceRequest, InvoiceRequest.id == Invoice.request_id)
            .where(Invoice.id.in_(chunk)))
        where.update({invoice_id: (platform or "", arrived) for invoice_id, platform, arrived in rows})
    now = utcnow()
    counts: Tally[tuple[Any, ...]] = Tally()
    latencies: list[tuple[tuple[str, str], float]] = []
    for o in observations:
        if o[0] == "invoice":
            _, invoice_id, seller_id, color, state = o
            platform, arrived = where.get(invoice_id, ("", None))
            seller = codes.get(seller_id, "") if seller_id is not None else ""
            counts[(state, platform, seller, color)] += 1
            if state == "issued" and color == "blue" and arrived is not None:
                latencies.append(((platform, seller), max((now - arrived).total_seconds(), 0.0)))
        else:
            kind, platform, seller_id, *rest = o
            counts[(kind, platform or "", codes.get(seller_id, "") if seller_id is not None else "", *rest)] += 1

    def count() -> None:
        for (kind, *labels), n in counts.items():
            if kind == "order":
                metrics.ORDERS_RECEIVED.labels(*labels).inc(n)
            elif kind == "decision":
                metrics.DECISIONS.labels(*labels).inc(n)
            else:
                metrics.INVOICE_COUNTERS[kind].labels(*labels).inc(n)
        for (platform, seller), seconds in latencies:
            metrics.ISSUE_LATENCY.labels(platform, seller).observe(seconds)

    return count
