"""Order intake: the one service every source goes through (API, JSONL import, generator,
platform adapters). Validates each order against the contract, upserts it idempotently and
queues it for a decision — bad orders are rejected one by one, the rest are accepted.

State transitions: a new order creates its invoice request in ``received``; an updated
order sends a request that is still undecided (received / waiting / held / skipped / failed)
back for a decision. Requests already issuing or issued only get an event: changes after
issue are after-sales work (red-letter / re-issue).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app import ledger
from app.engine.contract import parse_order
from app.errors import Problem, ValidationFailed
from app.jobs import outbox
from app.models import InvoiceRequest, Order, OrderLine, Refund, Shop
from app.types import utcnow

STATUS_RANK = {"created": 0, "paid": 1, "shipped": 2, "received": 3, "completed": 4, "cancelled": 5, "closed": 5}
REDECIDE_FROM = ("received", "waiting", "held", "skipped", "failed")
TIME_FIELDS = ("created_at", "paid_at", "shipped_at", "received_at")


@dataclass
class IntakeResult:
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected,
                "counts": {"accepted": len(self.accepted), "rejected": len(self.rejected)}}


def _utc(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def document_hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def source_version(doc: dict[str, Any]) -> str:
    """A sortable version: the platform's modified time when the adapter gives one
    (``extensions.source_updated_at``), else the latest event time in the document; then
    the status rank and the refund count, so a later stage of the same order wins."""
    explicit = (doc.get("extensions") or {}).get("source_updated_at")
    times = [_utc(explicit)] if explicit else [_utc(doc.get(f)) for f in TIME_FIELDS]
    times += [_utc(r.get("created_at")) for r in doc.get("refunds") or []] if not explicit else []
    latest = max((t for t in times if t), default=datetime(1970, 1, 1, tzinfo=UTC))
    rank = STATUS_RANK.get(doc.get("status", ""), 0)
    return f"{latest.strftime('%Y-%m-%dT%H:%M:%S.%fZ')}|{rank:02d}|{len(doc.get('refunds') or []):04d}"


def ingest(session: Session, docs: Iterable[Any], *, source: str = "api", actor: str = "system") -> IntakeResult:
    """Validate and upsert ``docs``; the caller commits. Each order is its own savepoint,
    so one bad row never takes the others down."""
    result = IntakeResult()
    shops: dict[tuple[str, str], Shop | None] = {}
    for index, doc in enumerate(docs):
        key = _key(doc)
        try:
            parse_order(doc)  # contract + semantic checks; raises ValidationFailed
            shop_key = (doc["platform"], doc["shop_id"])
            if shop_key not in shops:
                shops[shop_key] = session.scalar(select(Shop).where(Shop.platform == shop_key[0],
                                                                    Shop.shop_code == shop_key[1]))
            shop = shops[shop_key]
            if shop is None or not shop.active:
                raise ValidationFailed(Problem("shop_id", "unknown_shop",
                                               f"{doc['platform']} shop {doc['shop_id']!r} is not configured in Kaipiao"))
            with session.begin_nested():
                outcome, order, request = _upsert(session, shop, doc, source=source, actor=actor)
            result.accepted.append({"index": index, "key": key, "outcome": outcome, "order_pk": order.id,
                                    "request_id": request.id if request else None})
        except ValidationFailed as exc:
            result.rejected.append({"index": index, "key": key, "errors": [p.as_dict() for p in exc.problems]})
        except SQLAlchemyError as exc:
            result.rejected.append({"index": index, "key": key, "errors": [
                {"path": "", "code": "storage_error", "message": f"could not store the order: {exc.__class__.__name__}"}]})
    return result


def _key(doc: Any) -> str | None:
    if isinstance(doc, dict) and all(isinstance(doc.get(k), str) for k in ("platform", "shop_id", "order_id")):
        return f"{doc['platform']}:{doc['shop_id']}:{doc['order_id']}"
    return None


def _upsert(session: Session, shop: Shop, doc: dict[str, Any], *, source: str,
            actor: str) -> tuple[str, Order, InvoiceRequest | None]:
    digest = document_hash(doc)
    version = source_version(doc)
    order = session.scalar(select(Order).where(Order.platform == doc["platform"], Order.shop_code == doc["shop_id"],
                                               Order.order_no == doc["order_id"]))
    if order is not None:
        request = session.scalar(select(InvoiceRequest).where(InvoiceRequest.order_pk == order.id)
                                 .order_by(InvoiceRequest.id.desc()).limit(1))
        if order.document_hash == digest:
            return "unchanged", order, request
        if order.source_version and version < order.source_version:
            ledger.record(session, "order_stale_ignored", order_pk=order.id, actor=actor,
                          data={"incoming_version": version, "stored_version": order.source_version, "source": source})
            return "stale", order, request
        _fill_order(order, shop, doc, digest, version)
        session.flush()
        ledger.record(session, "order_updated", order_pk=order.id, actor=actor,
                      data={"version": version, "status": doc["status"], "source": source})
        if request is not None and request.status in REDECIDE_FROM:
            _fill_request(request, doc)
            request.queued_at = utcnow()
            outbox.add(session, "decide", "decide_requests", request.id)
        elif request is not None:
            ledger.record(session, "order_changed_after_issue", order_pk=order.id, request_id=request.id, actor=actor,
                          data={"request_status": request.status})
        return "updated", order, request
    order = Order(platform=doc["platform"], shop_code=doc["shop_id"], order_no=doc["order_id"])
    _fill_order(order, shop, doc, digest, version)
    session.add(order)
    session.flush()
    request = InvoiceRequest(order_pk=order.id, status="received", queued_at=utcnow())
    _fill_request(request, doc)
    session.add(request)
    session.flush()
    ledger.record(session, "order_received", order_pk=order.id, request_id=request.id, actor=actor,
                  to_state="received", data={"version": version, "source": source, "status": doc["status"]})
    outbox.add(session, "decide", "decide_requests", request.id)
    return "created", order, request


def _money(value: str | None) -> Decimal | None:
    return Decimal(value) if value is not None else None


def _fill_order(order: Order, shop: Shop, doc: dict[str, Any], digest: str, version: str) -> None:
    order.shop_id = shop.id
    order.status = doc["status"]
    order.paid_at = _utc(doc.get("paid_at"))
    order.shipped_at = _utc(doc.get("shipped_at"))
    order.received_at = _utc(doc.get("received_at"))
    order.paid_amount = _money(doc.get("paid_amount"))
    order.invoice_amount = _money(doc.get("invoice_amount"))
    order.document = doc
    order.document_hash = digest
    order.source_version = version
    existing = {line.line_id: line for line in order.lines}
    seen = set()
    for position, raw in enumerate(doc["lines"]):
        line = existing.get(raw["line_id"])
        if line is None:
            line = OrderLine(line_id=raw["line_id"])
            order.lines.append(line)
        seen.add(raw["line_id"])
        line.position = position
        line.sku = raw.get("sku")
        line.name = raw["name"]
        line.category = raw.get("category")
        line.spec = raw.get("spec")
        line.unit = raw.get("unit")
        line.quantity = Decimal(raw["quantity"])
        line.unit_price = Decimal(raw["unit_price"])
        line.discount = Decimal(raw.get("discount", "0.00"))
        line.platform_discount = Decimal(raw.get("platform_discount", "0.00"))
        line.is_gift = bool(raw.get("is_gift", False))
        line.tax_code = raw.get("tax_code")
        line.tax_rate = Decimal(raw["tax_rate"]) if raw.get("tax_rate") else None
        line.tax_treatment = raw.get("tax_treatment")
    for line in list(order.lines):
        if line.line_id not in seen:
            order.lines.remove(line)
    refunds = {r.refund_id: r for r in order.refunds}
    for raw in doc.get("refunds") or []:
        refund = refunds.get(raw["refund_id"])
        if refund is None:
            refund = Refund(refund_id=raw["refund_id"])
            order.refunds.append(refund)
        refund.line_id = raw.get("line_id")
        refund.quantity = Decimal(raw["quantity"]) if raw.get("quantity") else None
        refund.amount = Decimal(raw["amount"])
        refund.kind = raw.get("kind")
        refund.status = raw["status"]
        refund.created_at = _utc(raw.get("created_at"))


def _fill_request(request: InvoiceRequest, doc: dict[str, Any]) -> None:
    asked = doc.get("invoice_request")
    if not asked:
        # Nothing asked: the rules decide (e.g. "invoice every paid order as personal 普票").
        request.source = "none"
        request.title_type, request.kind, request.title = "personal", "normal", "个人"
        buyer = doc.get("buyer") or {}
        request.email = buyer.get("email")
        request.mobile = buyer.get("mobile")
        return
    request.source = "platform"
    request.title_type = asked["title_type"]
    request.kind = asked["kind"]
    request.title = asked["title"]
    for name in ("tax_id", "id_number", "address", "phone", "bank", "account", "email", "mobile",
                 "platform_request_id"):
        setattr(request, name, asked.get(name))
    request.natural_person = bool(asked.get("natural_person", False))
    request.requested_at = _utc(asked.get("requested_at"))
