"""Shared builders for engine tests."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from app.engine.contract import validate_draft
from app.engine.tolerance import invoice_problems

LOCAL_EXAMPLES = Path(__file__).parent / "data"
SELLER = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}
CRAFT = ("1060502990000000000", "0.13")  # 工艺品
BOOK = ("1060201010000000000", "0.09")  # 图书
SERVICE = ("3049900000000000000", "0.06")  # 现代服务


def example(name: str) -> Any:
    path = LOCAL_EXAMPLES / name
    return json.loads(path.read_text(encoding="utf-8"))


def line(line_id: str, price: str, qty: str = "1", code: tuple[str, str] = CRAFT, **extra: Any) -> dict:
    out = {"line_id": line_id, "name": f"商品{line_id}", "quantity": qty, "unit_price": price,
           "tax_code": code[0], "tax_rate": code[1]}
    out.update(extra)
    return out


def order(lines: list[dict], **extra: Any) -> dict:
    out: dict[str, Any] = {
        "platform": "tmall", "shop_id": "s1", "order_id": "O1", "status": "received",
        "invoice_request": {"kind": "normal", "title_type": "personal", "title": "个人"},
        "lines": lines,
    }
    out.update(copy.deepcopy(extra))
    return out


def assert_sound(draft: dict) -> None:
    """Every draft must fit the schema and pass every invoice check."""
    assert validate_draft(draft) == []
    for index, invoice in enumerate(draft["invoices"]):
        assert invoice_problems(invoice, f"invoices[{index}]") == []
