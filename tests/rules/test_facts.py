from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.rules.facts import FACT_FIELDS, LINE_FIELDS, order_fact
from tests.rules.helpers import NOW, at, gen_order, worked_order


def _walk(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def test_worked_order_fact() -> None:
    fact = order_fact(worked_order(), NOW, {"tmall": timedelta(hours=72)})
    assert fact["platform"] == "tmall" and fact["shop"] == "demo-tmall" and fact["status"] == "received"
    # 2 × 99.00 + 59.90 − 20.00 coupon + 10.00 shipping = 247.90 (fapiao.md §6.3 worked example)
    assert fact["amount_fen"] == 24790
    assert fact["paid_fen"] == 24790
    assert fact["has_request"] is True and fact["title_type"] == "personal" and fact["kind"] == "normal"
    assert fact["line_count"] == 2 and fact["has_gift"] is False and fact["has_platform_discount"] is False
    assert fact["refund_state"] == "none" and fact["is_received"] is True
    assert fact["title_length"] == 2 and fact["buyer_email_present"] is True
    assert fact["days_since_paid"] == 4  # paid 11-11, evaluated 11-15 (Beijing dates)
    assert "days_since_shipped" not in fact  # unknown values are absent, never a sentinel
    # deadline from payment (no requested_at): 11-11 00:01 + 72 h = 11-14 00:01; now 11-15 09:00
    assert fact["hours_to_deadline"] == -33
    assert fact["lines"][0] == {
        "sku": "CUP-CERAMIC",
        "category": "",
        "name": "手工陶瓷杯",
        "gross_fen": 19800,
        "is_gift": False,
        "has_tax_code": True,
        "rate_bp": 1300,
    }
    assert fact["lines"][1]["rate_bp"] == 900
    assert set(fact) - {"_type"} <= set(FACT_FIELDS)
    assert set(fact["lines"][0]) <= set(LINE_FIELDS)


def test_no_deadline_without_request_or_table() -> None:
    assert "hours_to_deadline" not in order_fact(gen_order(), NOW, None)
    assert "hours_to_deadline" not in order_fact(gen_order(invoice_request=None), NOW, {"tmall": 72})
    assert "hours_to_deadline" not in order_fact(gen_order(platform="h5"), NOW, {"tmall": 72})


def test_deadline_runs_from_request_time() -> None:
    request = {
        "kind": "normal",
        "title_type": "personal",
        "title": "个人",
        "requested_at": "2026-11-14T09:00:00+08:00",
    }
    fact = order_fact(gen_order(invoice_request=request), NOW, {"tmall": "72h"})
    assert fact["hours_to_deadline"] == 48


def test_gifts_refunds_stored_value_and_platform_discount() -> None:
    lines = [
        {
            "line_id": "1",
            "name": "主商品",
            "quantity": "1",
            "unit_price": "100.00",
            "discount": "10.00",
            "platform_discount": "5.00",
        },
        {"line_id": "2", "name": "赠品", "quantity": "1", "unit_price": "30.00", "is_gift": True},
    ]
    order = gen_order(
        lines=lines, shipping_fee=None, order_discount=None, paid_amount="85.00", stored_value_paid="20.00"
    )
    fact = order_fact(order, NOW)
    assert fact["lines"][0]["gross_fen"] == 9000 and fact["lines"][1]["gross_fen"] == 3000
    assert "rate_bp" not in fact["lines"][0]
    assert fact["amount_fen"] == 7000  # 90.00 goods − 20.00 stored value; the gift nets to zero
    assert fact["has_gift"] is True and fact["has_platform_discount"] is True

    partial = dict(
        order,
        refunds=[
            {"refund_id": "r1", "amount": "30.00", "status": "success"},
            {"refund_id": "r2", "amount": "50.00", "status": "pending"},
        ],
    )
    fact = order_fact(partial, NOW)
    assert fact["refund_state"] == "partial" and fact["refund_pending"] is True and fact["amount_fen"] == 4000

    full = dict(order, refunds=[{"refund_id": "r1", "amount": "85.00", "status": "success"}])
    assert order_fact(full, NOW)["refund_state"] == "full"
    closed = dict(order, refunds=[{"refund_id": "r1", "amount": "85.00", "status": "closed"}])
    assert order_fact(closed, NOW)["refund_state"] == "none"


def test_platform_invoice_amount_wins() -> None:
    assert order_fact(gen_order(invoice_amount="200.00"), NOW)["amount_fen"] == 20000


@pytest.mark.parametrize(
    ("tax_id", "has", "wellformed", "valid"),
    [
        ("91110000600037341L", True, True, True),  # fapiao.md §2.1 worked example
        ("9111 0000-600037341l", True, True, True),  # compacted like stdnum does
        ("91110000600037341M", True, True, False),  # wrong check character
        ("Y1110000MA01ABCD10", True, True, True),  # letter in position 1: GB 32100 allows it, stdnum does not
        ("11010519491231002X", True, True, True),  # resident id of a natural person
        ("110105600037341", True, True, True),  # 15-character old number: no checksum to test
        ("91110000600037341", True, True, True),  # 17 characters: a 个体工商户 number, no checksum
        ("9111000060003734", True, False, False),  # 16 characters: no such tax id
        ("9111000060003734IL", True, False, False),  # I is not in the alphabet
        ("", False, False, False),
    ],
)
def test_tax_id_fields(tax_id: str, has: bool, wellformed: bool, valid: bool) -> None:
    request = {
        "kind": "normal",
        "title_type": "enterprise",
        "title": "北京某某科技有限公司",
        "tax_id": tax_id,
    }
    fact = order_fact(gen_order(invoice_request=request), NOW)
    assert (fact["has_tax_id"], fact["tax_id_wellformed"], fact["tax_id_valid"]) == (has, wellformed, valid)


def test_calendar_days_are_beijing_dates() -> None:
    order = gen_order(paid_at="2026-11-14T23:50:00+08:00", shipped_at="2026-11-14T15:50:00Z")
    # 15:50 UTC = 23:50 Beijing on the 14th; at 00:10 Beijing on the 15th that is one day ago
    fact = order_fact(order, at("2026-11-15T00:10:00"))
    assert fact["days_since_paid"] == 1 and fact["days_since_shipped"] == 1
    assert order_fact(order, at("2026-11-14T23:59:00"))["days_since_paid"] == 0


def test_no_request_fields() -> None:
    fact = order_fact(gen_order(invoice_request=None, buyer=None), NOW)
    assert fact["has_request"] is False and fact["title_type"] == "none" and fact["kind"] == "none"
    assert fact["title_length"] == 0 and fact["buyer_email_present"] is False and fact["has_tax_id"] is False


def test_naive_now_refused_and_float_money_refused() -> None:
    with pytest.raises(ValueError):
        order_fact(gen_order(), datetime(2026, 11, 15))
    with pytest.raises(TypeError):
        order_fact(gen_order(shipping_fee=10.0), NOW)


money = st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False).map(str)


@given(price=money, qty=st.integers(min_value=1, max_value=999), discount=money, shipping=money)
def test_fact_is_floats_free_and_exact(price: str, qty: int, discount: str, shipping: str) -> None:
    lines = [{"line_id": "1", "name": "x", "quantity": str(qty), "unit_price": price, "discount": discount}]
    fact = order_fact(
        gen_order(lines=lines, shipping_fee=shipping, order_discount=None, paid_amount=None),
        datetime(2026, 11, 15, tzinfo=UTC),
    )
    assert not any(isinstance(v, float) for v in _walk(fact))
    from decimal import Decimal

    expected = (Decimal(price) * qty - Decimal(discount)) * 100
    assert fact["lines"][0]["gross_fen"] == int(expected)
    assert fact["amount_fen"] == max(0, int(expected + Decimal(shipping) * 100))
