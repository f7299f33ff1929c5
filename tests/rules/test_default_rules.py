"""The shipped default rule set on realistic orders."""

from __future__ import annotations

import copy

import pytest

from app.rules import decide, default_ruleset, load_ruleset_file, rules_dir
from tests.rules.helpers import NOW, at, gen_order, worked_order

ENTERPRISE = {
    "kind": "normal",
    "title_type": "enterprise",
    "title": "北京某某科技有限公司",
    "tax_id": "91110000600037341L",
}


def requested(at_text: str, **request) -> dict:
    return {"kind": "normal", "title_type": "personal", "title": "个人", "requested_at": at_text, **request}


def test_worked_example_is_issued_with_the_default_face() -> None:
    d = decide(worked_order(), now=NOW)
    assert d.action == "issue"
    assert d.rules_fired == ["invoice-requested", "invoice-face"]
    assert d.options == {
        "gift_mode": "discount_line",
        "discount_mode": "discount_line",
        "platform_discount": "include",
        "remark_template": "订单号:{order_id}",
    }
    assert d.rules_version.startswith("default@") and d.required == [] and d.seller_code is None


def test_received_before_the_deadline_is_issued_on_receipt() -> None:
    order = gen_order(
        invoice_request=requested("2026-11-13T09:00:00+08:00"), received_at="2026-11-14T10:20:00+08:00"
    )
    d = decide(order, now=at("2026-11-14T11:00:00"))
    assert d.action == "issue" and "receipt 2026-11-14 10:20" in d.reasons[0]["message"]


def test_shipped_not_received_waits_until_deadline_minus_margin() -> None:
    order = gen_order(
        status="shipped",
        received_at=None,
        shipped_at="2026-11-12T10:00:00+08:00",
        invoice_request=requested("2026-11-12T09:00:00+08:00"),
    )
    d = decide(order, now=at("2026-11-13T09:00:00"))
    assert d.action == "wait" and d.issue_after == at("2026-11-14T21:00:00")  # 72 h − 12 h (tmall)
    assert decide(order, now=at("2026-11-14T21:00:00")).action == "issue"


def test_platform_without_deadline_waits_seven_days_after_shipment() -> None:
    order = gen_order(
        platform="h5", status="shipped", received_at=None, shipped_at="2026-11-12T10:00:00+08:00"
    )
    d = decide(order, now=NOW)
    assert d.action == "wait" and d.issue_after == at("2026-11-19T10:00:00")
    assert decide(order, now=at("2026-11-19T10:00:00")).action == "issue"


def test_paid_not_shipped_waits_for_an_event() -> None:
    order = gen_order(platform="offline", status="paid", received_at=None)
    d = decide(order, now=NOW)
    assert d.action == "wait" and d.issue_after is None
    assert {r["code"] for r in d.reasons} == {"wait_for_received", "wait_for_shipped"}


def test_unpaid_order_waits_for_payment() -> None:
    d = decide(gen_order(status="created", paid_at=None, received_at=None), now=NOW)
    assert d.action == "wait" and d.rules_fired[0] == "wait-for-payment"
    assert d.reasons[0]["code"] == "wait_for_paid"


@pytest.mark.parametrize("status", ["cancelled", "closed"])
def test_cancelled_and_closed_are_skipped(status: str) -> None:
    d = decide(gen_order(status=status, received_at=None), now=NOW)
    assert d.action == "skip" and d.reasons == [
        {"code": "order_cancelled", "message": "the order was cancelled or closed", "rule": "skip-cancelled"}
    ]


def test_fully_refunded_is_skipped_partially_refunded_is_issued() -> None:
    full = gen_order(
        refunds=[{"refund_id": "r", "amount": "247.90", "status": "success", "kind": "return_refund"}]
    )
    assert decide(full, now=NOW).reasons[0]["code"] == "fully_refunded"
    part = gen_order(refunds=[{"refund_id": "r", "amount": "59.90", "status": "success", "line_id": "2"}])
    assert decide(part, now=NOW).action == "issue"


def test_a_refund_in_progress_waits_for_the_next_update() -> None:
    pending = gen_order(refunds=[{"refund_id": "r", "amount": "59.90", "status": "pending", "line_id": "2"}])
    d = decide(pending, now=NOW)
    assert d.action == "wait" and d.issue_after is None
    assert [r["code"] for r in d.reasons] == ["refund_pending"]


def test_not_requested_is_skipped_by_default() -> None:
    d = decide(gen_order(invoice_request=None), now=NOW)
    assert (
        d.action == "skip" and d.reasons[0]["code"] == "not_requested" and d.rules_fired == ["invoice-face"]
    )


def test_opt_in_rule_invoices_every_paid_order() -> None:
    doc = load_ruleset_file(rules_dir() / "default.yaml")
    opted = copy.deepcopy(doc)
    for rule in opted["rules"]:
        if rule["id"] == "invoice-every-paid-order":
            rule["enabled"] = True
    d = decide(gen_order(invoice_request=None), ruleset=opted, now=NOW)
    assert d.action == "issue" and d.options["kind"] == "normal"
    assert "invoice-every-paid-order" in d.rules_fired
    assert (
        decide(gen_order(invoice_request=None, status="cancelled"), ruleset=opted, now=NOW).action == "skip"
    )


def test_enterprise_with_valid_tax_id_issued_at_shipment() -> None:
    order = gen_order(
        status="shipped", received_at=None, shipped_at="2026-11-14T10:00:00+08:00", invoice_request=ENTERPRISE
    )
    d = decide(order, now=NOW)
    assert d.action == "issue" and d.required == ["tax_id"]
    assert "enterprise-at-shipment" in d.rules_fired


@pytest.mark.parametrize(
    ("tax_id", "code"),
    [(None, "tax_id_missing"), ("91110000600037341M", "tax_id_invalid"), ("ABC", "tax_id_invalid")],
)
def test_enterprise_without_valid_tax_id_is_held(tax_id: str | None, code: str) -> None:
    request = dict(ENTERPRISE)
    if tax_id is None:
        request.pop("tax_id")
    else:
        request["tax_id"] = tax_id
    d = decide(gen_order(invoice_request=request), now=NOW)
    assert d.action == "hold" and [r["code"] for r in d.reasons] == [code]


def test_special_invoice_to_a_person_is_held() -> None:
    d = decide(
        gen_order(invoice_request={"kind": "special", "title_type": "personal", "title": "张三"}), now=NOW
    )
    assert d.action == "hold" and d.reasons[0]["code"] == "special_to_personal" and d.required == ["tax_id"]


def test_cancelled_beats_hold() -> None:
    d = decide(
        gen_order(
            status="cancelled", invoice_request={"kind": "special", "title_type": "personal", "title": "张三"}
        ),
        now=NOW,
    )
    assert d.action == "skip"


def test_gift_order_keeps_gift_as_discount_line() -> None:
    lines = gen_order()["lines"] + [
        {"line_id": "3", "name": "杯垫", "quantity": "1", "unit_price": "15.00", "is_gift": True}
    ]
    d = decide(gen_order(lines=lines), now=NOW)
    assert d.action == "issue" and d.options["gift_mode"] == "discount_line"


def test_default_is_compiled_once() -> None:
    assert default_ruleset() is default_ruleset()
