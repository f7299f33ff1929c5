from __future__ import annotations

import copy
from decimal import Decimal as D

import pytest

from app.engine.split import check_template, split_quantity
from app.engine.tolerance import check_invoice, invoice_problems
from app.errors import ValidationFailed

from .helpers import example

INVOICE = example("worked-draft-discount-line.json")["invoices"][0]


def broken(changes: dict) -> dict:
    invoice = copy.deepcopy(INVOICE)
    for (index, key), value in changes.items():
        invoice["lines"][index][key] = value
    return invoice


def codes(invoice: dict) -> set[str]:
    return {p.code for p in invoice_problems(invoice)}


def test_worked_drafts_pass() -> None:
    check_invoice(INVOICE)
    check_invoice(example("worked-draft-net-price.json")["invoices"][0])


def test_each_rule_fails_with_its_reason() -> None:
    assert "gross_mismatch" in codes(broken({(0, "tax"): "22.79"}))
    assert "tax_tolerance" in codes(broken({(0, "tax"): "22.70", (0, "amount"): "175.30"}))
    assert "price_tolerance" in codes(broken({(0, "unit_price"): "87.62000000"}))
    assert "discount_line_mismatch" in codes(broken({(1, "name"): "别的"}))
    assert "discount_not_negative" in codes(broken({(1, "gross"): "15.35", (1, "amount"): "13.58",
                                                       (1, "tax"): "1.77"}))
    assert "bad_seq" in codes(broken({(2, "seq"): 9}))
    moved = copy.deepcopy(INVOICE)
    moved["lines"].insert(0, moved["lines"].pop(1))
    assert "discount_line_orphan" in codes(moved)
    totals = copy.deepcopy(INVOICE)
    totals["total_tax"] = "26.74"
    with pytest.raises(ValidationFailed) as info:
        check_invoice(totals, "invoices[0]")
    assert {p.path for p in info.value.problems} >= {"invoices[0].total_tax", "invoices[0].total"}


def test_cumulative_tolerance() -> None:
    line = {"seq": 1, "kind": "normal", "name": "x", "tax_code": "1060502990000000000", "amount": "8.85",
            "tax_rate": "0.13", "tax": "1.10", "gross": "9.95"}  # residual 0.0505 each, within 0.06
    lines = [dict(line, seq=i + 1) for i in range(26)]
    invoice = {"lines": lines, "total_amount": str(D("8.85") * 26), "total_tax": str(D("1.10") * 26),
               "total": str(D("9.95") * 26)}
    assert codes(invoice) == {"cumulative_tax_tolerance"}


def test_split_quantity() -> None:
    chunks = split_quantity(D("10"), D("3000.00"), D("2990.00"), D("300.00"), D("1000.00"), "lines[0]")
    assert sum(q for q, _, _ in chunks) == 10
    assert sum(n for _, _, n in chunks) == D("2990.00") and sum(g for _, g, _ in chunks) == D("3000.00")
    assert all(n <= D("1000.00") for _, _, n in chunks)
    fractional = split_quantity(D("2.5"), D("2500.00"), D("2500.00"), D("1000.00"), D("1500.00"), "lines[0]")
    assert [q for q, _, _ in fractional] == [D(1), D(1), D("0.5")]
    with pytest.raises(ValidationFailed):
        split_quantity(D("1"), D("2000.00"), D("2000.00"), D("2000.00"), D("1000.00"), "lines[0]")


def test_templates() -> None:
    assert check_template("订单号:{order_id} {split_index}/{split_count}", "t")
    for bad in ("{order}", "{order_id!r}", "{order_id:>30}", "{0}", "{"):
        with pytest.raises(ValidationFailed):
            check_template(bad, "t")
