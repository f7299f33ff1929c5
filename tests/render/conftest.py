"""Drafts for the render tests: the worked examples (copied from shared/contracts/examples)
and synthetic ones built with the same shape."""

from __future__ import annotations

import copy
import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
CENT = Decimal("0.01")


def load_draft(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def synthetic_line(seq: int, gross: Decimal, rate: Decimal = Decimal("0.13")) -> dict:
    amount = (gross / (1 + rate)).quantize(CENT, rounding=ROUND_HALF_UP)
    return {
        "seq": seq,
        "kind": "normal",
        "source_line_id": str(seq),
        "name": f"手工陶瓷杯{seq:03d}号",
        "display_name": f"*工艺品*手工陶瓷杯{seq:03d}号",
        "tax_code": "1060502990000000000",
        "short_name": "工艺品",
        "spec": "350ml",
        "unit": "个",
        "quantity": "1",
        "unit_price": f"{amount}",
        "amount": f"{amount}",
        "tax_rate": f"{rate}",
        "tax": f"{gross - amount}",
        "gross": f"{gross}",
    }


def synthetic_draft(n_lines: int, *, color: str = "blue", invoices: int = 1) -> dict:
    """A draft of ``invoices`` invoices with ``n_lines`` lines each; totals add up."""
    base = load_draft("worked-draft-discount-line")
    out = copy.deepcopy(base)
    out["invoices"] = []
    for _ in range(invoices):
        lines = [synthetic_line(seq, Decimal("10.00") + seq) for seq in range(1, n_lines + 1)]
        total_amount = sum(Decimal(line["amount"]) for line in lines)
        total_tax = sum(Decimal(line["tax"]) for line in lines)
        invoice = copy.deepcopy(base["invoices"][0])
        invoice.update(
            color=color,
            lines=lines,
            total_amount=f"{total_amount}",
            total_tax=f"{total_tax}",
            total=f"{total_amount + total_tax}",
            total_in_words="（测试）",
        )
        out["invoices"].append(invoice)
    return out


@pytest.fixture
def worked_draft() -> dict:
    return load_draft("worked-draft-discount-line")


@pytest.fixture
def net_price_draft() -> dict:
    return load_draft("worked-draft-net-price")


@pytest.fixture
def red_draft() -> dict:
    """The worked invoice reversed in full (开票有误): negative amounts, 正常行 only."""
    draft = load_draft("worked-draft-net-price")
    invoice = draft["invoices"][0]
    invoice["color"] = "red"
    for line in invoice["lines"]:
        for key in ("amount", "tax", "gross", "quantity"):
            if key in line:
                line[key] = f"{-Decimal(line[key])}"
    for key in ("total_amount", "total_tax", "total"):
        invoice[key] = f"{-Decimal(invoice[key])}"
    invoice["total_in_words"] = "负贰佰肆拾柒圆玖角整"
    invoice["remark"] = "被红冲蓝字数电发票号码：26331000000123456789"
    invoice["number"] = "26331000000123456790"
    invoice["issued_at"] = "2026-11-20T09:30:00+08:00"
    return draft
