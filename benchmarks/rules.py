"""Rules benchmark: decisions per second with the shipped default rule set on one core, and the
cost of publishing (validating + registering) a new rule-set version.

Run: ``.venv/bin/kaipiao bench rules`` from the repository root.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from datetime import datetime
from pathlib import Path

from _common import header, report

from app.engine.clock import BEIJING
from app.engine.contract import build_order
from app.rules import compile_ruleset, decide, default_ruleset, load_ruleset_file, rules_dir, validate_ruleset
from app.rules.facts import build_fact

EXAMPLE = Path("/work/shared/contracts/examples/worked-order.json")
NOW = datetime(2026, 11, 15, 9, 0, tzinfo=BEIJING)


def _orders() -> list[dict]:
    """A mix like a shop's day: requested personal / enterprise, unrequested, cancelled, refunded."""
    base = json.loads(EXAMPLE.read_text(encoding="utf-8")) if EXAMPLE.exists() else _fallback_order()
    variants = []
    for i in range(200):
        o = copy.deepcopy(base)
        o["order_id"] = f"B{i:06d}"
        kind = i % 5
        if kind == 1:
            o["invoice_request"] = {
                "kind": "normal",
                "title_type": "enterprise",
                "title": "北京某某科技有限公司",
                "tax_id": "91110000600037341L",
            }
            o["status"] = "shipped"
            o["shipped_at"] = "2026-11-12T10:00:00+08:00"
            o.pop("received_at", None)
        elif kind == 2:
            o["invoice_request"] = None
        elif kind == 3:
            o["status"] = "cancelled"
        elif kind == 4:
            o["refunds"] = [{"refund_id": "R1", "amount": "247.90", "status": "success"}]
        variants.append(o)
    return variants


def _fallback_order() -> dict:
    return {
        "platform": "tmall",
        "shop_id": "demo",
        "order_id": "1",
        "status": "received",
        "paid_at": "2026-11-11T00:01:02+08:00",
        "received_at": "2026-11-14T10:20:00+08:00",
        "invoice_request": {"kind": "normal", "title_type": "personal", "title": "个人"},
        "lines": [{"line_id": "1", "name": "杯", "quantity": "2", "unit_price": "99.00", "tax_rate": "0.13"}],
        "paid_amount": "198.00",
    }


def main() -> None:
    header("rules")
    orders = _orders()
    rs = default_ruleset()
    for o in orders[:50]:  # warm-up
        decide(o, ruleset=rs, now=NOW)

    # The pipeline reads each stored order once (app.engine.contract) for the rules and the
    # composition both: decisions are timed from parsed orders, and from documents (read each time).
    parsed = [build_order(o) for o in orders]
    n = 50_000
    start = time.perf_counter()
    for i in range(n):
        decide(parsed[i % len(parsed)], ruleset=rs, now=NOW)
    elapsed = time.perf_counter() - start
    report("decisions_per_s", n / elapsed, "decisions/s")
    report("decision_us", elapsed / n * 1e6, "us")

    start = time.perf_counter()
    for i in range(n):
        decide(orders[i % len(orders)], ruleset=rs, now=NOW)
    report("decisions_per_s_from_documents", n / (time.perf_counter() - start), "decisions/s")

    start = time.perf_counter()
    for i in range(n):
        build_fact(parsed[i % len(parsed)], NOW, rs.parsed.deadlines)
    report("fact_us", (time.perf_counter() - start) / n * 1e6, "us")

    doc = load_ruleset_file(rules_dir() / "default.yaml")
    validate_ms, publish_ms = [], []
    for i in range(30):
        version = copy.deepcopy(doc)
        version["description"] = f"benchmark version {i} {time.time_ns()}"  # a new document each time
        t0 = time.perf_counter()
        validate_ruleset(version)
        t1 = time.perf_counter()
        compile_ruleset(version, label=f"bench@v{i}")  # validates again, then registers
        t2 = time.perf_counter()
        validate_ms.append((t1 - t0) * 1e3)
        publish_ms.append((t2 - t1) * 1e3)
    report("validate_ms", statistics.median(validate_ms), "ms")
    report("publish_ms", statistics.median(publish_ms), "ms")


if __name__ == "__main__":
    main()
