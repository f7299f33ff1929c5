"""Small builders for rule-set documents and contract orders used by the rules tests."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from app.engine.clock import BEIJING

# The worked order of the domain note, kept in the repository (tests never read ../shared).
WORKED = Path(__file__).resolve().parents[1] / "engine" / "data" / "worked-order.json"
NOW = datetime(2026, 11, 15, 9, 0, tzinfo=BEIJING)
_names = itertools.count()


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BEIJING)


def gen_order(**changes: Any) -> dict[str, Any]:
    """A received Tmall order with a personal 普票 request (the worked example's figures)."""
    order: dict[str, Any] = {
        "platform": "tmall",
        "shop_id": "demo-tmall",
        "order_id": "3141592653589793",
        "status": "received",
        "paid_at": "2026-11-11T00:01:02+08:00",
        "received_at": "2026-11-14T10:20:00+08:00",
        "buyer": {"nick": "tb_buyer_01", "email": "buyer@example.com"},
        "invoice_request": {
            "kind": "normal",
            "title_type": "personal",
            "title": "个人",
            "email": "buyer@example.com",
        },
        "lines": [
            {
                "line_id": "1",
                "sku": "CUP-CERAMIC",
                "name": "手工陶瓷杯",
                "unit": "个",
                "quantity": "2",
                "unit_price": "99.00",
                "tax_code": "1060502990000000000",
                "tax_rate": "0.13",
            },
            {
                "line_id": "2",
                "sku": "BOOK-PY",
                "name": "Python编程",
                "unit": "本",
                "quantity": "1",
                "unit_price": "59.90",
                "tax_code": "1060201010000000000",
                "tax_rate": "0.09",
            },
        ],
        "shipping_fee": "10.00",
        "order_discount": "20.00",
        "paid_amount": "247.90",
    }
    for key, value in changes.items():
        if value is None:
            order.pop(key, None)
        else:
            order[key] = value
    return copy.deepcopy(order)


def worked_order() -> dict[str, Any]:
    return json.loads(WORKED.read_text(encoding="utf-8"))


def rule(rule_id: str, priority: int, then: list[dict], when: dict | None = None, **extra: Any) -> dict:
    out: dict[str, Any] = {"id": rule_id, "priority": priority, "then": then, **extra}
    if when is not None:
        out["when"] = when
    return out


def ruleset(*rules: dict, name: str | None = None, **extra: Any) -> dict:
    """A document with a fresh name, so each test registers its own engine version."""
    return {"name": name or f"t{next(_names)}", "description": "test", "rules": list(rules), **extra}
