"""Order intake: the one service every source goes through (API, JSONL import, demo feed,
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
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.engine.amounts import order_totals
from app.engine.clock import parse_iso_datetime, utcnow
from app.engine.contract import Order as ParsedOrder
from app.engine.contract import is_contract_time, parse_order
from app.engine.states import DECIDABLE, RequestStatus
from app.errors import Forbidden, Problem, ValidationFailed
from app.models import InvoiceRequest, Order, OrderLine, Refund, Shop
from app.models.job import JobName
from app.services.unit_of_work import UnitOfWork

log = logging.getLogger(__name__)

STATUS_RANK = {"created": 0, "paid": 1, "shipped": 2, "received": 3, "completed": 4, "cancelled": 5, "closed": 5}
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
    return parse_iso_datetime(value).astimezone(UTC)


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


class OtherMerchant(Forbidden):
    """Orders naming a shop outside the caller's merchant: the whole call is refused, nothing
    is written. ``refused`` pairs each such order's index with its problem."""

    def __init__(self, refused: list[tuple[int, Problem]]) -> None:
        super().__init__([problem for _, problem in refused])
        self.refused = refused


def ingest(work: UnitOfWork, docs: Iterable[Any], *, source: str = "api", actor: str = "system",
           merchant_id: int | None = None) -> IntakeResult:
    """Validate and upsert ``docs``; the caller commits.

    ``merchant_id``: the caller is confined to that merchant (a merchant-scoped user): an order
    of any other shop, or of a shop Kaipiao does not know (the answer must not tell them apart),
    refuses the whole call with ``OtherMerchant`` before anything is written.

    Every document is validated first (bad ones are rejected one by one); the valid ones are
    then stored together in one savepoint: one lookup of the existing orders and of their
    latest requests, one flush for the orders, lines and requests, one for the events and
    outbox rows. If that fails at the database (e.g. another process inserted one of the
    orders meanwhile), the savepoint is rolled back and the batch is redone one savepoint
    per order, so one bad row never takes the others down. A key twice in one batch behaves
    as if the documents had come one after the other.
    """
    if work.batched:  # it needs savepoints
        raise ValueError("intake works in an unbatched unit of work")
    session = work.session
    result = IntakeResult()
    shops: dict[tuple[str, str], Shop | None] = {}
    items: list[_Item] = []
    foreign: list[tuple[int, Problem]] = []
    for index, doc in enumerate(docs):
        key = _key(doc)
        try:
            items.append(_check(session, shops, index, key, doc, merchant_id))
        except Forbidden as exc:
            foreign += [(index, problem) for problem in exc.problems]
        except ValidationFailed as exc:
            result.rejected.append({"index": index, "key": key, "errors": [p.as_dict() for p in exc.problems]})
        except SQLAlchemyError as exc:
            result.rejected.append(_storage_error(index, key, exc))
        except Exception as exc:  # one unreadable document never takes the others down
            log.exception("intake: order %s at index %d could not be read", key, index, extra={"order_id": key})
            result.rejected.append({"index": index, "key": key, "errors": [{
                "path": "", "code": "unreadable", "message": f"cannot read the order ({type(exc).__name__})"}]})
    if foreign:
        raise OtherMerchant(foreign)
    if not items:
        return result
    try:
        with work.savepoint():
            result.accepted = _upsert_batch(work, items, source=source, actor=actor)
    except SQLAlchemyError as exc:
        # The driver's first line only: its DETAIL can quote the row (buyer data).
        reason = str(getattr(exc, "orig", None) or "").split("\n", 1)[0]
        log.warning("intake: a batch of %d orders failed at the database (%s: %s); storing them one by one",
                    len(items), exc.__class__.__name__, reason)
        for item in items:
            try:
                with work.savepoint():
                    result.accepted += _upsert_batch(work, [item], source=source, actor=actor)
            except SQLAlchemyError as one:
                result.rejected.append(_storage_error(item.index, item.key, one))
        result.rejected.sort(key=lambda r: r["index"])
    return result


@dataclass(slots=True)
class _Item:
    """A document that passed validation, with what its upsert needs."""

    index: int
    key: str
    doc: dict[str, Any]
    order: ParsedOrder
    shop: Shop
    digest: str
    version: str

    @property
    def natural_key(self) -> tuple[str, str, str]:
        return self.doc["platform"], self.doc["shop_id"], self.doc["order_id"]


def _check(session: Session, shops: dict[tuple[str, str], Shop | None], index: int, key: str | None,
           doc: Any, merchant_id: int | None) -> _Item:
    parsed = parse_order(doc)  # contract + semantic checks; raises ValidationFailed
    shop_key = (doc["platform"], doc["shop_id"])
    if shop_key not in shops:
        shops[shop_key] = session.scalar(select(Shop).where(Shop.platform == shop_key[0],
                                                            Shop.shop_code == shop_key[1]))
    shop = shops[shop_key]
    if merchant_id is not None and (shop is None or shop.merchant_id != merchant_id):
        raise Forbidden(Problem("shop_id", "forbidden",
                                f"{doc['platform']} shop {doc['shop_id']!r} is not a shop of your merchant: "
                                "your account may write only its own merchant's orders"))
    if shop is None or not shop.active:
        raise ValidationFailed(Problem("shop_id", "unknown_shop",
                                       f"{doc['platform']} shop {doc['shop_id']!r} is not configured in Kaipiao"))
    _check_source_time(doc)
    return _Item(index, key or "", doc, parsed, shop, document_hash(doc), source_version(doc))


def _check_source_time(doc: dict[str, Any]) -> None:
    """The contract checks every time it defines (format and range); the platform's modified
    time in ``extensions.source_updated_at``, an adapter convention, is checked here."""
    explicit = (doc.get("extensions") or {}).get("source_updated_at")
    if explicit is not None and not is_contract_time(explicit):
        raise ValidationFailed(Problem(
            "extensions.source_updated_at", "invalid",
            "not an ISO 8601 date-time with offset between 1970 and 2099 (e.g. 2026-11-11T00:01:02+08:00)"))


def _storage_error(index: int, key: str | None, exc: SQLAlchemyError) -> dict[str, Any]:
    message = f"could not store the order: {exc.__class__.__name__}"
    if isinstance(exc, IntegrityError):
        message += " (it conflicts with data stored at the same time, e.g. the same order from another sync; send it again)"
    return {"index": index, "key": key, "errors": [{"path": "", "code": "storage_error", "message": message}]}


def _key(doc: Any) -> str | None:
    if isinstance(doc, dict) and all(isinstance(doc.get(k), str) for k in ("platform", "shop_id", "order_id")):
        key = f"{doc['platform']}:{doc['shop_id']}:{doc['order_id']}"
        # Shown in the answer even when the order is refused: a lone surrogate, which no
        # encoding can write, is shown escaped.
        return key if key.isascii() else key.encode("utf-8", "backslashreplace").decode("utf-8")
    return None


_CHUNK = 500  # keys per IN list


def _chunks(values: list, size: int = _CHUNK) -> Iterable[list]:
    for i in range(0, len(values), size):
        yield values[i:i + size]


def _existing_orders(session: Session, keys: Iterable[tuple[str, str, str]]) -> dict[tuple[str, str, str], Order]:
    """The stored orders among ``keys`` (platform, shop_code, order_no): one query per shop and chunk."""
    by_shop: dict[tuple[str, str], list[str]] = defaultdict(list)
    for platform, shop_code, order_no in set(keys):
        by_shop[(platform, shop_code)].append(order_no)
    found: dict[tuple[str, str, str], Order] = {}
    for (platform, shop_code), numbers in by_shop.items():
        for chunk in _chunks(sorted(numbers)):
            # Locked (PostgreSQL) and read fresh: of two syncs of one order, the second waits
            # and then compares versions with what the first stored.
            query = (select(Order).where(Order.platform == platform, Order.shop_code == shop_code,
                                         Order.order_no.in_(chunk))
                     .order_by(Order.id).with_for_update().execution_options(populate_existing=True))
            for order in session.scalars(query):
                found[(order.platform, order.shop_code, order.order_no)] = order
    return found


def _latest_requests(session: Session, order_pks: list[int]) -> dict[int, InvoiceRequest]:
    """The newest invoice request of each order (highest id), one query per chunk."""
    latest: dict[int, InvoiceRequest] = {}
    for chunk in _chunks(order_pks):
        newest = (select(func.max(InvoiceRequest.id)).where(InvoiceRequest.order_pk.in_(chunk))
                  .group_by(InvoiceRequest.order_pk))
        # Locked too: a decision committing meanwhile is waited for, so its new status is seen
        # here (an issued request only gets the order_changed_after_issue event).
        query = (select(InvoiceRequest).where(InvoiceRequest.id.in_(newest)).order_by(InvoiceRequest.id)
                 .with_for_update().execution_options(populate_existing=True))
        for request in session.scalars(query):
            latest[request.order_pk] = request
    return latest


def _load_children(session: Session, orders: list[Order]) -> None:
    """Lines and refunds of the orders about to be rewritten, two queries per chunk instead of two per order."""
    pending = [o for o in orders if {"lines", "refunds"} & inspect(o).unloaded]
    for chunk in _chunks(list({o.id: o for o in pending}.values())):
        ids = [o.id for o in chunk]
        lines: dict[int, list[OrderLine]] = defaultdict(list)
        refunds: dict[int, list[Refund]] = defaultdict(list)
        for line in session.scalars(select(OrderLine).where(OrderLine.order_pk.in_(ids))
                                    .order_by(OrderLine.order_pk, OrderLine.position)):
            lines[line.order_pk].append(line)
        for refund in session.scalars(select(Refund).where(Refund.order_pk.in_(ids)).order_by(Refund.id)):
            refunds[refund.order_pk].append(refund)
        for order in chunk:
            unloaded = inspect(order).unloaded
            if "lines" in unloaded:
                set_committed_value(order, "lines", lines[order.id])
            if "refunds" in unloaded:
                set_committed_value(order, "refunds", refunds[order.id])


def _upsert_batch(work: UnitOfWork, items: list[_Item], *, source: str, actor: str) -> list[dict[str, Any]]:
    """Upsert the validated ``items`` in document order; returns their accepted entries."""
    session = work.session
    orders = _existing_orders(session, (item.natural_key for item in items))
    by_pk = _latest_requests(session, [o.id for o in orders.values()])
    requests: dict[tuple[str, str, str], InvoiceRequest | None] = {k: by_pk.get(o.id) for k, o in orders.items()}
    _load_children(session, [orders[item.natural_key] for item in items
                             if item.natural_key in orders and orders[item.natural_key].document_hash != item.digest])
    done: list[tuple[_Item, str, Order, InvoiceRequest | None]] = []
    after: list[Callable[[], Any]] = []  # events and outbox rows, made once the ids exist
    with session.no_autoflush:
        for item in items:
            natural_key = item.natural_key
            order = orders.get(natural_key)
            if order is None:
                order, request = _create(work, item, after, source=source, actor=actor)
                orders[natural_key], requests[natural_key] = order, request
                done.append((item, "created", order, request))
                work.tally("order", item.doc["platform"], item.shop.seller_entity_id)
            else:
                existing = requests.get(natural_key)
                done.append((item, _update(work, item, order, existing, after, source=source, actor=actor),
                             order, existing))
    session.flush()
    for step in after:
        step()
    return [{"index": item.index, "key": item.key, "outcome": outcome, "order_pk": order.id,
             "request_id": request.id if request is not None else None}
            for item, outcome, order, request in done]


def _event(work: UnitOfWork, kind: str, order: Order, request: InvoiceRequest | None, *, actor: str,
           data: dict[str, Any], to_state: str | None = None) -> None:
    work.record(kind, order_pk=order.id, request_id=request.id if request is not None else None,
                  actor=actor, to_state=to_state, data=data)


def _decide(work: UnitOfWork, request: InvoiceRequest) -> None:
    work.queue_job(JobName.DECIDE_REQUESTS, request.id)


def _create(work: UnitOfWork, item: _Item, after: list[Callable[[], Any]], *, source: str,
            actor: str) -> tuple[Order, InvoiceRequest]:
    doc = item.doc
    order = Order(platform=doc["platform"], shop_code=doc["shop_id"], order_no=doc["order_id"])
    _fill_order(order, item, item.version)
    request = InvoiceRequest(order=order, status=RequestStatus.RECEIVED, queued_at=utcnow())  # order_pk set at flush
    _fill_request(request, doc)
    work.session.add(order)
    work.session.add(request)
    after.append(partial(_event, work, "order_received", order, request, actor=actor, to_state=RequestStatus.RECEIVED,
                         data={"version": item.version, "source": source, "status": doc["status"]}))
    after.append(partial(_decide, work, request))
    return order, request


def _update(work: UnitOfWork, item: _Item, order: Order, request: InvoiceRequest | None,
            after: list[Callable[[], Any]], *, source: str, actor: str) -> str:
    doc, version = item.doc, item.version
    if order.document_hash == item.digest:
        return "unchanged"
    if order.source_version and version < order.source_version:
        after.append(partial(_event, work, "order_stale_ignored", order, None, actor=actor,
                             data={"incoming_version": version, "stored_version": order.source_version,
                                   "source": source}))
        return "stale"
    _fill_order(order, item, version)
    after.append(partial(_event, work, "order_updated", order, None, actor=actor,
                         data={"version": version, "status": doc["status"], "source": source}))
    if request is not None and request.status in DECIDABLE:
        _fill_request(request, doc)
        # A new version: a decision made meanwhile from the old data fails its guarded write
        # (status and state_version) and is redone from this one.
        request.state_version = (request.state_version or 0) + 1
        request.queued_at = utcnow()
        after.append(partial(_decide, work, request))
    elif request is not None:
        after.append(partial(_event, work, "order_changed_after_issue", order, request, actor=actor,
                             data={"request_status": request.status}))
    return "updated"


def _fill_order(order: Order, item: _Item, version: str) -> None:
    doc = item.doc
    totals = order_totals(item.order)
    order.shop_id = item.shop.id
    order.status = doc["status"]
    parsed = item.order  # times read once, by the contract
    order.paid_at = parsed.paid_at.astimezone(UTC) if parsed.paid_at else None
    order.shipped_at = parsed.shipped_at.astimezone(UTC) if parsed.shipped_at else None
    order.received_at = parsed.received_at.astimezone(UTC) if parsed.received_at else None
    # The platform's figures where it gives them; otherwise what the order's lines say, so
    # every order shows what was paid and what is to be invoiced.
    order.paid_amount = totals.paid
    order.invoice_amount = totals.invoiceable
    order.document = doc
    order.document_hash = item.digest
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
