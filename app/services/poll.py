"""Ask the tax provider by serial what became of invoices it was sent:
pending | unknown | issuing (stuck) → issued | pending | failed | ready (it never had them).
One batch query per provider call; the answers of a batch are recorded in one transaction
(app.services.answers)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from app import db
from app.engine.states import AWAITING_ANSWER
from app.models import Invoice, SellerEntity
from app.services.answers import Recorder, recorded
from app.services.context import gateway_for
from app.services.outcome import Outcome
from app.settings import Settings


def poll_invoices(invoice_ids: Iterable[int], settings: Settings) -> Outcome:
    with db.transaction() as session:
        rows = session.execute(
            select(Invoice.id, Invoice.serial_no, Invoice.status, Invoice.seller_entity_id, Invoice.attempts)
            .where(Invoice.id.in_([int(i) for i in invoice_ids]), Invoice.status.in_(sorted(AWAITING_ANSWER)))
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

    def record_one(recorder: Recorder, invoice_id: int) -> str:
        row = by_id[invoice_id]
        return recorder.query_answer(invoice_id, row.status, row.attempts, results[invoice_id])

    return recorded(list(by_id), record_one, settings.timing) if rows else Outcome()
