"""Blue issuance through both adapters against the sandbox (native and Nuonuo wires)."""

from __future__ import annotations

import time
from datetime import datetime
from decimal import Decimal

import pytest
from tax_helpers import ENTERPRISE_BUYER, WORKED_INVOICE, draft_invoice, issue_request, wait_issued

from app.engine.clock import BEIJING
from app.integrations.tax.base import (
    CreditExhausted,
    IdempotencyConflict,
    IssueRequest,
    IssueStatus,
    NotFound,
    PermanentGatewayError,
)


def test_issue_then_query_gives_a_20_digit_number(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    accepted = gateway.issue(issue_request("tmall-3141592653589793-blue-1"))
    assert accepted.provider_serial and not accepted.duplicate
    result = wait_issued(gateway, "tmall-3141592653589793-blue-1")
    assert result.status == IssueStatus.ISSUED
    assert result.provider_serial == accepted.provider_serial
    number = result.number
    assert number is not None and len(number) == 20 and number.isdigit()
    assert number[:2] == datetime.now(BEIJING).strftime("%y")
    assert number[2:4] == "11"  # the seller 91110000600037341L registered in 北京
    assert (result.total_amount, result.total_tax, result.total) == (
        Decimal("221.17"), Decimal("26.73"), Decimal("247.90"))
    assert result.issued_at is not None and result.issued_at.tzinfo is not None
    assert result.pdf_url and result.pdf_url.endswith(f"{number}.pdf")


def test_numbers_are_unique_and_follow_the_seller_province(start_sandbox) -> None:
    box = start_sandbox("native")
    gateway = box.gateway()
    shanghai = dict(WORKED_INVOICE["seller"], tax_id="91310000MA1K000000")
    legacy_zhejiang = dict(WORKED_INVOICE["seller"], tax_id="339902999999789113")  # Nuonuo sandbox seller
    gateway.issue(IssueRequest.from_draft_invoice("p-bj", draft_invoice()))
    gateway.issue(IssueRequest.from_draft_invoice("p-sh", draft_invoice(seller=shanghai)))
    gateway.issue(IssueRequest.from_draft_invoice("p-zj", draft_invoice(seller=legacy_zhejiang)))
    numbers = {serial: wait_issued(gateway, serial).number for serial in ("p-bj", "p-sh", "p-zj")}
    assert [numbers[s][2:4] for s in ("p-bj", "p-sh", "p-zj")] == ["11", "31", "33"]
    assert len(set(numbers.values())) == 3


def test_same_serial_twice_is_one_invoice(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    request = issue_request("dup-1")
    first = gateway.issue(request)
    second = gateway.issue(request)
    assert second.duplicate and second.provider_serial == first.provider_serial
    number = wait_issued(gateway, "dup-1").number
    third = gateway.issue(request)  # after issuance: still the same invoice, never a second
    assert third.duplicate and wait_issued(gateway, "dup-1").number == number
    state = any_sandbox.admin("state")
    assert state["invoices"] == {"blue.issued": 1}
    assert state["counters"]["duplicates_refused"] == 2


def test_same_serial_with_other_data_is_refused(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    gateway.issue(issue_request("dup-2"))
    other = draft_invoice(lines=WORKED_INVOICE["lines"][4:], remark="another order")
    with pytest.raises(IdempotencyConflict) as caught:
        gateway.issue(IssueRequest.from_draft_invoice("dup-2", other))
    if any_sandbox.wire == "nuonuo":
        assert caught.value.code == "E9106"
    assert sum(any_sandbox.admin("state")["invoices"].values()) == 1
    assert any_sandbox.counters()["conflicts"] == 1


def test_accepted_then_pending_then_issued(start_sandbox) -> None:
    for wire in ("native", "nuonuo"):
        box = start_sandbox(wire, issue_delay_ms=400)
        gateway = box.gateway()
        gateway.issue(issue_request("async-1"))
        pending = gateway.query("async-1")
        assert pending.status == IssueStatus.PENDING and pending.number is None
        if wire == "nuonuo":
            assert pending.extra["nuonuo_status"] == "20"
        time.sleep(0.45)
        issued = gateway.query("async-1")
        assert issued.status == IssueStatus.ISSUED and issued.number


def test_unknown_serial_is_not_found(any_sandbox) -> None:
    with pytest.raises(NotFound):
        any_sandbox.gateway().query("never-sent")


def _line(**changes):
    line = dict(WORKED_INVOICE["lines"][4])
    line.update(changes)
    return line


REJECTIONS = {
    # name: (draft overrides, native code, nuonuo code)
    "tax_tolerance": ({"lines": [_line(amount="8.70", tax="1.30", gross="10.00")]}, "TAX_TOLERANCE", "E9131"),
    "amount_plus_tax_not_gross": ({"lines": [_line(gross="10.01")]}, "AMOUNT_MISMATCH", "E9130"),
    "discount_not_after_discounted": (
        {"lines": [WORKED_INVOICE["lines"][0], WORKED_INVOICE["lines"][4], WORKED_INVOICE["lines"][1]]},
        "DISCOUNT_ADJACENCY", "E9105"),
    "discount_line_alone": ({"lines": [WORKED_INVOICE["lines"][1]]}, "DISCOUNT_ADJACENCY", "E9105"),
    "discount_other_goods": (
        {"lines": [WORKED_INVOICE["lines"][0], dict(WORKED_INVOICE["lines"][1], name="别的商品")]},
        "DISCOUNT_MISMATCH", "E9108"),
    "malformed_tax_code": ({"lines": [_line(tax_code="10605029900")]}, "TAX_CODE", "E9138"),
    "unknown_tax_code": ({"lines": [_line(tax_code="9999999999999999999")]}, "TAX_CODE", "E9138"),
    "special_to_personal": ({"kind": "special"}, "SPECIAL_BUYER", "E4000"),
    "special_without_tax_id": (
        {"kind": "special", "buyer": {"title_type": "enterprise", "name": "某公司"}}, "SPECIAL_BUYER", "E4000"),
    "too_many_lines": ({"lines": [_line(seq=i + 1) for i in range(2001)]}, "TOO_MANY_LINES", "E4000"),
    "remark_too_long": ({"remark": "备" * 201}, "REMARK_TOO_LONG", "E4000"),
}


@pytest.mark.parametrize("case", sorted(REJECTIONS))
def test_provider_rejections(any_sandbox, case: str) -> None:
    overrides, native_code, nuonuo_code = REJECTIONS[case]
    gateway = any_sandbox.gateway()
    with pytest.raises(PermanentGatewayError) as caught:
        gateway.issue(IssueRequest.from_draft_invoice(f"bad-{case}"[:20], draft_invoice(**overrides)))
    assert caught.value.code == (native_code if any_sandbox.wire == "native" else nuonuo_code)
    assert caught.value.reason
    with pytest.raises(NotFound):  # nothing was stored
        gateway.query(f"bad-{case}"[:20])


def test_special_invoice_to_enterprise_is_fine(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    gateway.issue(IssueRequest.from_draft_invoice("special-1", draft_invoice(kind="special", buyer=ENTERPRISE_BUYER)))
    assert wait_issued(gateway, "special-1").status == IssueStatus.ISSUED


def test_monthly_credit_limit(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    any_sandbox.admin("credit", {"limit": "500.00"})
    assert gateway.remaining_credit() == Decimal("500.00")
    gateway.issue(issue_request("credit-1"))  # 247.90
    assert gateway.remaining_credit() == Decimal("252.10")
    gateway.issue(issue_request("credit-2"))  # 495.80 used
    with pytest.raises(CreditExhausted):
        gateway.issue(issue_request("credit-3"))
    assert gateway.remaining_credit() == Decimal("4.20")
    any_sandbox.admin("credit", {"limit": "1000.00"})  # 临时调增
    gateway.issue(issue_request("credit-3"))
    assert wait_issued(gateway, "credit-3").status == IssueStatus.ISSUED


def test_cancel_pending_releases_credit(start_sandbox) -> None:
    box = start_sandbox("native", issue_delay_ms=60_000)
    gateway = box.gateway()
    before = gateway.remaining_credit()
    gateway.issue(issue_request("cancel-1"))
    assert gateway.remaining_credit() == before - Decimal("247.90")
    gateway.cancel("cancel-1")
    gateway.cancel("cancel-1")  # repeating is harmless
    result = gateway.query("cancel-1")
    assert result.status == IssueStatus.FAILED and result.error_code == "CANCELLED" and result.permanent
    assert gateway.remaining_credit() == before


def test_cancel_after_issue_is_refused(sandbox) -> None:
    gateway = sandbox.gateway()
    gateway.issue(issue_request("cancel-2"))
    wait_issued(gateway, "cancel-2")
    with pytest.raises(PermanentGatewayError) as caught:
        gateway.cancel("cancel-2")
    assert caught.value.code == "NOT_CANCELLABLE"


def test_nuonuo_has_no_cancel(start_sandbox) -> None:
    with pytest.raises(PermanentGatewayError) as caught:
        start_sandbox("nuonuo").gateway().cancel("x")
    assert caught.value.code == "UNSUPPORTED"


def test_restart_keeps_invoices_and_idempotency(start_sandbox, tmp_path) -> None:
    db = tmp_path / "restart.sqlite3"
    first = start_sandbox("native", db_path=db)
    gateway = first.gateway()
    gateway.issue(issue_request("restart-1"))
    number = wait_issued(gateway, "restart-1").number
    first.stop()
    second = start_sandbox("native", db_path=db)
    again = second.gateway()
    assert again.issue(issue_request("restart-1")).duplicate
    assert again.query("restart-1").number == number
    again.issue(issue_request("restart-2"))
    assert wait_issued(again, "restart-2").number != number
    assert second.admin("state")["invoices"] == {"blue.issued": 2}
