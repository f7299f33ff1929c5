"""The order fact: a flat, JSON-number-safe view of a parsed order (app.engine.contract)
that rules test.

durable-rules compares numbers as C doubles, so money is integer fen and rates integer basis
points; the amounts come from app.engine.amounts, computed in Decimal. A field whose value is unknown (e.g.
``days_since_shipped`` before shipment, ``hours_to_deadline`` without a deadline) is *absent*:
durable-rules evaluates any comparison on an absent field as false (``$neq`` included).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.engine.amounts import line_net, order_totals
from app.engine.clock import BEIJING
from app.engine.contract import Order, build_order
from app.engine.money import to_fen
from app.engine.taxid import check_tax_id
from app.errors import ValidationFailed
from app.rules.durations import parse_duration

# Every fact carries this marker and every compiled condition requires it: durable-rules also
# matches conditions against its own session-state messages, so a rule that could match
# "anything" (a bare $nex) re-fires forever without it.
GUARD_FIELD = "_type"
GUARD_VALUE = "order"

PLATFORMS = ("taobao", "tmall", "jd", "pdd", "douyin", "kuaishou", "xiaohongshu", "offline", "h5", "other")
STATUSES = ("created", "paid", "shipped", "received", "completed", "cancelled", "closed")
TITLE_TYPES = ("personal", "enterprise", "non_enterprise", "none")
KINDS = ("normal", "special", "none")
REFUND_STATES = ("none", "partial", "full")


@dataclass(frozen=True)
class FieldSpec:
    type: str  # "str" | "enum" | "int" | "bool" | "items"
    doc: str
    values: tuple[str, ...] = ()


FACT_FIELDS: dict[str, FieldSpec] = {
    "platform": FieldSpec("enum", "order platform", PLATFORMS),
    "shop": FieldSpec("str", "shop_id"),
    "status": FieldSpec("enum", "order status", STATUSES),
    "has_request": FieldSpec("bool", "the buyer asked for an invoice"),
    "title_type": FieldSpec("enum", "requested title type; none without a request", TITLE_TYPES),
    "kind": FieldSpec("enum", "requested kind (normal 普票 / special 专票); none without a request", KINDS),
    "amount_fen": FieldSpec("int", "what would be invoiced, fen"),
    "paid_fen": FieldSpec("int", "what the buyer paid, fen (absent when the order does not say)"),
    "has_tax_id": FieldSpec("bool", "the request carries a tax id"),
    "tax_id_valid": FieldSpec("bool", "the tax id passes its checksum (USCC / resident id)"),
    "tax_id_wellformed": FieldSpec("bool", "15/17/18/20 characters of 0-9 A-Z without I O S V Z"),
    "line_count": FieldSpec("int", "number of order lines"),
    "has_gift": FieldSpec("bool", "some line is a gift"),
    "has_platform_discount": FieldSpec("bool", "some platform-funded discount (order or line)"),
    "refund_state": FieldSpec("enum", "successful refunds: none / partial / full", REFUND_STATES),
    "refund_pending": FieldSpec("bool", "a refund is pending"),
    "days_since_paid": FieldSpec("int", "calendar days (Asia/Shanghai) since payment; absent if unpaid"),
    "days_since_shipped": FieldSpec(
        "int", "calendar days (Asia/Shanghai) since shipment; absent if not shipped"
    ),
    "hours_to_deadline": FieldSpec(
        "int", "whole hours left before the platform deadline (negative: past); absent without one"
    ),
    "is_received": FieldSpec("bool", "the buyer confirmed receipt (or the order is completed)"),
    "title_length": FieldSpec("int", "characters in the requested title (0 without a request)"),
    "buyer_email_present": FieldSpec("bool", "an e-mail for delivery is known"),
    "lines": FieldSpec("items", "order lines; test them with $iany / $iall"),
}

LINE_FIELDS: dict[str, FieldSpec] = {
    "sku": FieldSpec("str", "line sku ('' when absent)"),
    "category": FieldSpec("str", "line category ('' when absent)"),
    "name": FieldSpec("str", "line name"),
    "rate_bp": FieldSpec("int", "tax rate in basis points (1300 = 13 %); absent when the line gives none"),
    "gross_fen": FieldSpec("int", "quantity × unit price − merchant discount, fen"),
    "is_gift": FieldSpec("bool", "gift line"),
    "has_tax_code": FieldSpec("bool", "the line carries its 19-digit tax code"),
}


@dataclass(frozen=True)
class OrderTimes:
    """Event times of an order (aware datetimes) and whether each event happened at all."""

    paid_at: datetime | None
    shipped_at: datetime | None
    received_at: datetime | None
    requested_at: datetime | None
    paid: bool
    shipped: bool
    received: bool

    def happened(self, event: str) -> tuple[bool, datetime | None]:
        return getattr(self, event), getattr(self, f"{event}_at")


_AFTER = {
    "paid": ("paid", "shipped", "received", "completed"),
    "shipped": ("shipped", "received", "completed"),
    "received": ("received", "completed"),
}


def order_times(order: Order) -> OrderTimes:
    status = order.status
    return OrderTimes(
        paid_at=order.paid_at,
        shipped_at=order.shipped_at,
        received_at=order.received_at,
        requested_at=order.invoice_request.requested_at if order.invoice_request else None,
        paid=order.paid_at is not None or status in _AFTER["paid"],
        shipped=order.shipped_at is not None or status in _AFTER["shipped"],
        received=order.received_at is not None or status in _AFTER["received"],
    )


def deadline_at(order: Order, times: OrderTimes, deadlines: Mapping[str, Any] | None) -> datetime | None:
    """When the platform's invoicing countdown ends: it runs from the buyer's request (its
    requested_at, else payment); orders nobody asked an invoice for have no deadline."""
    if not deadlines or order.invoice_request is None:
        return None
    limit = deadlines.get(order.platform)
    if limit is None:
        return None
    start = times.requested_at or times.paid_at
    if start is None:
        return None
    return start + (limit if isinstance(limit, timedelta) else parse_duration(limit))


def order_fact(
    order: Order | Mapping[str, Any], now: datetime, deadlines: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The fact rules are evaluated on (see FACT_FIELDS / LINE_FIELDS and docs/rules.md)."""
    return build_fact(order if isinstance(order, Order) else build_order(order), now, deadlines)[0]


def build_fact(
    order: Order, now: datetime, deadlines: Mapping[str, Any] | None
) -> tuple[dict[str, Any], OrderTimes, datetime | None]:
    """order_fact plus the times and deadline, which decision building reuses."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    times = order_times(order)
    request = order.invoice_request
    totals = order_totals(order)

    lines_out: list[dict[str, Any]] = []
    has_gift = False
    line_platform_discount = False
    for line in order.lines:
        has_gift = has_gift or line.is_gift
        line_platform_discount = line_platform_discount or line.platform_discount > 0
        item: dict[str, Any] = {
            "sku": line.sku or "",
            "category": line.category or "",
            "name": line.name,
            "gross_fen": to_fen(line_net(line.quantity, line.unit_price, line.discount)),
            "is_gift": line.is_gift,
            "has_tax_code": bool(line.tax_code),
        }
        if line.tax_rate is not None:
            item["rate_bp"] = int(line.tax_rate * 10000)
        lines_out.append(item)

    refunded_fen = to_fen(totals.refunded)
    if refunded_fen <= 0:
        refund_state = "none"
    elif refunded_fen >= to_fen(totals.refund_basis):
        refund_state = "full"
    else:
        refund_state = "partial"

    tax_id = (request.tax_id or "").strip() if request else ""
    wellformed, checksum_ok = _tax_id_flags(tax_id) if tax_id else (False, False)
    title = request.title if request else ""
    fact: dict[str, Any] = {
        GUARD_FIELD: GUARD_VALUE,
        "platform": order.platform,
        "shop": order.shop_id,
        "status": order.status,
        "has_request": request is not None,
        "title_type": request.title_type if request else "none",
        "kind": request.kind if request else "none",
        "amount_fen": to_fen(totals.invoiceable),
        "has_tax_id": bool(tax_id),
        "tax_id_valid": wellformed and checksum_ok,
        "tax_id_wellformed": wellformed,
        "line_count": len(lines_out),
        "has_gift": has_gift,
        "has_platform_discount": totals.platform_discount > 0 or line_platform_discount,
        "refund_state": refund_state,
        "refund_pending": any(r.status == "pending" for r in order.refunds),
        "is_received": times.received,
        "title_length": len(title),
        "buyer_email_present": bool((request.email if request else None) or order.buyer_email),
        "lines": lines_out,
    }
    if totals.paid_given is not None:
        fact["paid_fen"] = to_fen(totals.paid_given)
    if times.paid_at is not None:
        fact["days_since_paid"] = _calendar_days(times.paid_at, now)
    if times.shipped_at is not None:
        fact["days_since_shipped"] = _calendar_days(times.shipped_at, now)
    deadline = deadline_at(order, times, deadlines)
    if deadline is not None:
        fact["hours_to_deadline"] = math.floor((deadline - now).total_seconds() / 3600)
    return fact, times, deadline


def _calendar_days(then: datetime, now: datetime) -> int:
    # Business dates are Beijing dates: paid 23:50 and evaluated 00:10 next day = 1 day.
    return (now.astimezone(BEIJING).date() - then.astimezone(BEIJING).date()).days


def _tax_id_flags(value: str) -> tuple[bool, bool]:
    """(well formed, checksum ok) by the engine's definition (app.engine.taxid, fapiao.md §2), so
    rules and composition agree; 15/17/20-character ids have no check character to fail."""
    try:
        check = check_tax_id(value)
    except ValidationFailed:
        return False, False
    return True, check.checksum_ok is not False
