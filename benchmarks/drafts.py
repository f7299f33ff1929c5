"""Drafts per second for 5-line orders on one core (target ≥ 5,000/s).

Two paths: a contract document validated on every call (what the preview API does), and an
already parsed ``Order`` (what jobs use for stored, validated orders).
"""

from __future__ import annotations

import time
from decimal import Decimal

from _common import header, report

from app.engine.compose import compose_draft
from app.engine.contract import parse_order

SELLER = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}
CODES = [("1060502990000000000", "0.13"), ("1060201010000000000", "0.09"), ("3049900000000000000", "0.06")]


def make_order(n: int, lines: int = 5) -> dict:
    out = []
    for i in range(lines):
        code, rate = CODES[(n + i) % len(CODES)]
        out.append({
            "line_id": str(i + 1), "sku": f"SKU-{i}", "name": f"商品{i}", "unit": "个",
            "quantity": str(1 + (n + i) % 3), "unit_price": f"{19 + (n * 7 + i * 13) % 180}.90",
            "discount": "1.00" if i % 2 else "0.00", "tax_code": code, "tax_rate": rate,
        })
    return {
        "platform": "tmall", "shop_id": "bench", "order_id": f"B{n:012d}", "status": "received",
        "invoice_request": {"kind": "normal", "title_type": "enterprise", "title": "北京某某科技有限公司",
                            "tax_id": "91110000600037341L"},
        "lines": out, "shipping_fee": "8.00", "order_discount": "10.00",
    }


def rate(fn, items, seconds: float = 2.0, clock=time.process_time) -> float:
    """Calls per second of ``clock``; CPU time by default, so other processes on the machine
    do not count against the one core we measure."""
    done, start = 0, clock()
    while True:
        for item in items:
            fn(item)
        done += len(items)
        elapsed = clock() - start
        if elapsed >= seconds:
            return done / elapsed


def main() -> None:
    header("drafts")
    docs = [make_order(n) for n in range(200)]
    parsed = [parse_order(d) for d in docs]
    for mode in ("discount_line", "net_price"):
        opts = {"discount_mode": mode}
        draft = compose_draft(docs[0], SELLER, opts)
        assert draft["decision"]["action"] == "issue", draft["decision"]
        fast = rate(lambda o, opts=opts: compose_draft(o, SELLER, opts), parsed)
        full = rate(lambda d, opts=opts: compose_draft(d, SELLER, opts), docs)
        name = "" if mode == "discount_line" else "_net_price"
        report(f"drafts_per_second{name}", fast, "drafts/s")
        report(f"drafts_per_second_validated{name}", full, "drafts/s")
        if not name:
            wall = rate(lambda o, opts=opts: compose_draft(o, SELLER, opts), parsed, clock=time.perf_counter)
            report("drafts_per_second_wall", wall, "drafts/s")
    report("validate_parse_per_second", rate(parse_order, docs), "orders/s")
    total = sum((Decimal(inv["total"]) for inv in compose_draft(docs[0], SELLER)["invoices"]), Decimal(0))
    report("check_total_first_order", total, "yuan")


if __name__ == "__main__":
    main()
