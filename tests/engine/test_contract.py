from __future__ import annotations

import pytest

from app.engine.contract import Order, parse_order, validate_draft, validate_order
from app.errors import ValidationFailed

from .helpers import example, line, order


def paths(problems) -> dict[str, str]:
    return {p.path: p.message for p in problems}


def test_worked_order_is_valid_and_parses_to_decimals() -> None:
    doc = example("worked-order.json")
    assert validate_order(doc) == []
    parsed = parse_order(doc)
    assert isinstance(parsed, Order)
    assert str(parsed.lines[0].unit_price) == "99.00"
    assert str(parsed.shipping_fee) == "10.00"
    assert parsed.invoice_request is not None and parsed.invoice_request.title == "个人"


def test_schema_problems_have_paths_and_plain_messages() -> None:
    doc = order([line("1", "99.00"), line("2", "x"), line("3", "1.00")])
    doc["lines"][0]["colour"] = "red"
    doc["lines"][2]["quantity"] = 2
    doc["lines"][2]["tax_rate"] = "13%"
    del doc["lines"][1]["name"]
    doc["paid_at"] = "2026-11-11 00:01"
    doc["currency"] = "USD"
    doc["surprise"] = 1
    found = paths(validate_order(doc))
    assert found["lines[0].colour"] == "unknown field"
    assert found["surprise"] == "unknown field"
    assert found["lines[1].name"] == "required"
    assert found["lines[1].unit_price"].startswith("not a decimal amount")
    assert found["lines[2].quantity"].startswith("not a decimal quantity")
    assert found["lines[2].tax_rate"].startswith("not a tax rate")
    assert "date-time" in found["paid_at"]
    assert found["currency"] == "must be CNY"


def test_date_time_needs_an_offset_and_a_real_date() -> None:
    doc = order([line("1", "1.00")], paid_at="2026-11-11T00:01:02")
    assert "paid_at" in paths(validate_order(doc))
    doc["paid_at"] = "2026-02-30T00:00:00+08:00"
    assert "paid_at" in paths(validate_order(doc))
    doc["paid_at"] = "2026-11-11T00:01:02Z"
    assert validate_order(doc) == []


def test_not_an_object() -> None:
    assert paths(validate_order([])) == {"": "an order must be a JSON object"}


def test_semantic_checks() -> None:
    doc = order(
        [line("1", "99.00", discount="100.00"), line("1", "5.00", qty="0"), line("3", "-1.00")],
        order_discount="500.00",
        refunds=[
            {"refund_id": "r1", "amount": "1.00", "status": "success", "line_id": "9"},
            {"refund_id": "r1", "amount": "1.00", "status": "success", "quantity": "1"},
        ],
        shipping_fee="-1.00",
    )
    found = paths(validate_order(doc))
    assert "larger than the line" in found["lines[0].discount"]
    assert "duplicate line_id" in found["lines[1].line_id"]
    assert found["lines[1].quantity"] == "must be greater than zero"
    assert found["lines[2].unit_price"] == "must not be negative"
    assert "larger than the discountable goods" in found["order_discount"]
    assert found["refunds[0].line_id"] == "names unknown line '9'"
    assert "duplicate refund_id" in found["refunds[1].refund_id"]
    assert "needs a line_id" in found["refunds[1].quantity"]
    assert found["shipping_fee"] == "must not be negative"


def test_refunded_quantity_cannot_exceed_the_line() -> None:
    doc = order([line("1", "10.00", qty="2")], refunds=[
        {"refund_id": "a", "amount": "10.00", "status": "success", "line_id": "1", "quantity": "2"},
        {"refund_id": "b", "amount": "10.00", "status": "success", "line_id": "1", "quantity": "1"},
    ])
    assert "refunds[1].quantity" in paths(validate_order(doc))


def test_title_checks() -> None:
    doc = order([line("1", "1.00")])
    doc["invoice_request"] = {"kind": "normal", "title_type": "enterprise", "title": "某公司",
                              "tax_id": "91110000600037341I", "address": "地" * 80, "phone": "1" * 21}
    found = paths(validate_order(doc))
    assert "alphabet" in found["invoice_request.tax_id"]
    assert "limit 100" in found["invoice_request.address"]


def test_exempt_line_with_a_rate() -> None:
    doc = order([line("1", "1.00", tax_treatment="exempt")])
    assert paths(validate_order(doc))["lines[0].tax_rate"] == "must be 0 for a exempt line"


def test_parse_order_raises_with_all_problems() -> None:
    doc = order([line("1", "abc")])
    doc["lines"][0]["colour"] = "red"
    with pytest.raises(ValidationFailed) as info:
        parse_order(doc)
    assert {p.path for p in info.value.problems} == {"lines[0].unit_price", "lines[0].colour"}


def test_fast_path_never_gives_a_stack_trace() -> None:
    with pytest.raises(ValidationFailed):
        parse_order({"lines": [{}]}, validate=False)


def test_validate_draft_accepts_the_worked_drafts_and_names_problems() -> None:
    draft = example("worked-draft-net-price.json")
    assert validate_draft(draft) == []
    draft["invoices"][0]["lines"][0]["amount"] = "161.6"
    draft["invoices"][0]["kind"] = "vat"
    found = paths(validate_draft(draft))
    assert "invoices[0].lines[0].amount" in found
    assert "invoices[0].kind" in found
