"""Red letter: direct and 确认单 flows, full and partial, cumulative limits — both adapters."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from tax_helpers import ENTERPRISE_BUYER, draft_invoice, wait_issued

from app.integrations.tax.base import (
    AuthExpired,
    ConfirmStatus,
    IssueRequest,
    IssueStatus,
    Party,
    PermanentGatewayError,
    RedConfirmRequest,
    RedLine,
    RedReason,
    RedRequest,
)

D = Decimal
# Net of each blue line of the worked invoice (discounted pairs netted: 红票只有正常行).
CUP = RedLine(1, "手工陶瓷杯", "1060502990000000000", D("0.13"), D("-161.64"), D("-21.01"), quantity=D("-2"))
BOOK = RedLine(3, "Python编程", "1060201010000000000", D("0.09"), D("-50.68"), D("-4.57"), quantity=D("-1"))
FREIGHT = RedLine(5, "运费", "1060502990000000000", D("0.13"), D("-8.85"), D("-1.15"))


def code(box, native: str, nuonuo: str) -> str:
    return native if box.wire == "native" else nuonuo


def blue(gateway, serial: str, **overrides) -> str:
    gateway.issue(IssueRequest.from_draft_invoice(serial, draft_invoice(**overrides)))
    result = wait_issued(gateway, serial)
    assert result.status == IssueStatus.ISSUED
    return result.number


def test_full_red_for_a_personal_buyer_is_direct(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    number = blue(gateway, "blue-f1")
    accepted = gateway.red_letter(RedRequest("red-f1", number, RedReason.RETURNED, blue_serial_no="blue-f1"))
    red = wait_issued(gateway, accepted.serial_no)
    assert red.status == IssueStatus.ISSUED and red.number and len(red.number) == 20 and red.number != number
    assert red.total == D("-247.90") and red.total_tax == D("-26.73")
    # The same red again is the same red; a new full red exceeds the blue.
    assert gateway.red_letter(RedRequest("red-f1", number, RedReason.RETURNED, blue_serial_no="blue-f1")).duplicate
    with pytest.raises(PermanentGatewayError) as caught:
        gateway.red_letter(RedRequest("red-f2", number, RedReason.RETURNED))
    assert caught.value.code == code(any_sandbox, "RED_EXCEEDS_BLUE", "E9171")
    assert any_sandbox.admin("state")["invoices"] == {"blue.issued": 1, "red.issued": 1}


def test_partial_reds_accumulate_up_to_the_blue(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    number = blue(gateway, "blue-p1")
    gateway.red_letter(RedRequest("red-p1", number, RedReason.RETURNED, lines=(FREIGHT,), blue_serial_no="blue-p1"))
    assert wait_issued(gateway, "red-p1").total == D("-10.00")
    with pytest.raises(PermanentGatewayError) as caught:  # freight already reversed
        gateway.red_letter(RedRequest("red-p2", number, RedReason.RETURNED, lines=(FREIGHT,),
                                      blue_serial_no="blue-p1"))
    assert caught.value.code == code(any_sandbox, "RED_EXCEEDS_BLUE", "E9171")
    half_cup = RedLine(1, CUP.name, CUP.tax_code, CUP.tax_rate, D("-80.82"), D("-10.51"), quantity=D("-1"))
    gateway.red_letter(RedRequest("red-p3", number, RedReason.ALLOWANCE, lines=(half_cup, BOOK),
                                  blue_serial_no="blue-p1"))
    wait_issued(gateway, "red-p3")
    too_much = RedLine(1, CUP.name, CUP.tax_code, CUP.tax_rate, D("-80.83"), D("-10.51"))
    with pytest.raises(PermanentGatewayError):
        gateway.red_letter(RedRequest("red-p4", number, RedReason.ALLOWANCE, lines=(too_much,),
                                      blue_serial_no="blue-p1"))
    rest_of_cup = RedLine(1, CUP.name, CUP.tax_code, CUP.tax_rate, D("-80.82"), D("-10.50"), quantity=D("-1"))
    gateway.red_letter(RedRequest("red-p5", number, RedReason.ALLOWANCE, lines=(rest_of_cup,),
                                  blue_serial_no="blue-p1"))
    assert wait_issued(gateway, "red-p5").status == IssueStatus.ISSUED
    reds = [gateway.query(s).total for s in ("red-p1", "red-p3", "red-p5")]
    assert sum(reds) == D("-247.90")  # exactly the blue, never more


@pytest.mark.parametrize("case", ["discount_line", "positive", "other_code", "wrong_reason_partial", "tolerance"])
def test_invalid_red_lines_are_refused(any_sandbox, case: str) -> None:
    gateway = any_sandbox.gateway()
    number = blue(gateway, f"blue-i-{case}"[:20])
    lines = {
        "discount_line": RedLine(2, CUP.name, CUP.tax_code, CUP.tax_rate, D("13.58"), D("1.77")),
        "positive": RedLine(5, FREIGHT.name, FREIGHT.tax_code, FREIGHT.tax_rate, D("8.85"), D("1.15")),
        "other_code": RedLine(5, FREIGHT.name, "1060201010000000000", FREIGHT.tax_rate, D("-8.85"), D("-1.15")),
        "wrong_reason_partial": FREIGHT,
        "tolerance": RedLine(5, FREIGHT.name, FREIGHT.tax_code, FREIGHT.tax_rate, D("-8.00"), D("-2.00")),
    }[case]
    reason = RedReason.WRONG if case == "wrong_reason_partial" else RedReason.RETURNED
    with pytest.raises(PermanentGatewayError) as caught:
        gateway.red_letter(RedRequest(f"red-i-{case}"[:20], number, reason, lines=(lines,),
                                      blue_serial_no=f"blue-i-{case}"[:20]))
    expected = "TAX_TOLERANCE" if case == "tolerance" else "RED_LINE_INVALID"
    expected_nn = "E9131" if case == "tolerance" else "E9172"
    assert caught.value.code == code(any_sandbox, expected, expected_nn)


def test_enterprise_blue_needs_a_confirmed_red_confirm(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    number = blue(gateway, "blue-e1", buyer=ENTERPRISE_BUYER)
    with pytest.raises(PermanentGatewayError) as caught:
        gateway.red_letter(RedRequest("red-e0", number, RedReason.RETURNED))
    assert caught.value.code == code(any_sandbox, "RED_CONFIRM_REQUIRED", "E9170")

    confirm = gateway.apply_red_confirm(RedConfirmRequest(
        number, RedReason.RETURNED, lines=(FREIGHT,), buyer=Party.from_dict(ENTERPRISE_BUYER),
        apply_id="APPLYE1"))
    assert confirm.status == ConfirmStatus.AWAIT_BUYER and not confirm.status.allows_red
    with pytest.raises(PermanentGatewayError) as caught:  # the buyer has not confirmed yet
        gateway.red_letter(RedRequest("red-e1", number, RedReason.RETURNED, confirm_id=confirm.confirm_id))
    assert caught.value.code == code(any_sandbox, "RED_NOT_ALLOWED", "E9173")

    any_sandbox.admin(f"red-confirms/{confirm.confirm_id}", {"action": "confirm"})
    assert gateway.query_red_confirm(confirm.confirm_id).status == ConfirmStatus.CONFIRMED
    gateway.red_letter(RedRequest("red-e1", number, RedReason.RETURNED, confirm_id=confirm.confirm_id))
    red = wait_issued(gateway, "red-e1")
    assert red.status == IssueStatus.ISSUED and red.total == D("-10.00")
    with pytest.raises(PermanentGatewayError):  # one 确认单, one red invoice
        gateway.red_letter(RedRequest("red-e2", number, RedReason.RETURNED, confirm_id=confirm.confirm_id))
    # Applying again with the same id is idempotent.
    again = gateway.apply_red_confirm(RedConfirmRequest(number, RedReason.RETURNED, lines=(FREIGHT,),
                                                        buyer=Party.from_dict(ENTERPRISE_BUYER), apply_id="APPLYE1"))
    assert again.confirm_id == confirm.confirm_id
    assert any_sandbox.admin("state")["red_confirms"] == {"04": 1}


def test_denied_confirm_blocks_the_red(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    number = blue(gateway, "blue-d1", kind="special", buyer=ENTERPRISE_BUYER)
    confirm = gateway.apply_red_confirm(RedConfirmRequest(number, RedReason.WRONG, blue_kind="special",
                                                          buyer=Party.from_dict(ENTERPRISE_BUYER)))
    any_sandbox.admin(f"red-confirms/{confirm.confirm_id}", {"action": "deny"})
    assert gateway.query_red_confirm(confirm.confirm_id).status == ConfirmStatus.DENIED_BY_BUYER
    with pytest.raises(PermanentGatewayError):
        gateway.red_letter(RedRequest("red-d1", number, RedReason.WRONG, confirm_id=confirm.confirm_id,
                                      blue_kind="special"))


def test_simulated_buyer_confirms_after_a_delay(start_sandbox) -> None:
    box = start_sandbox("native", confirm_delay_ms=200)
    gateway = box.gateway()
    number = blue(gateway, "blue-a1", buyer=ENTERPRISE_BUYER)
    confirm = gateway.apply_red_confirm(RedConfirmRequest(number, RedReason.WRONG))
    assert confirm.status == ConfirmStatus.AWAIT_BUYER
    time.sleep(0.25)
    assert gateway.query_red_confirm(confirm.confirm_id).status == ConfirmStatus.CONFIRMED
    gateway.red_letter(RedRequest("red-a1", number, RedReason.WRONG, confirm_id=confirm.confirm_id))
    assert wait_issued(gateway, "red-a1").total == D("-247.90")


def test_personal_confirm_is_not_needed(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    number = blue(gateway, "blue-n1")
    confirm = gateway.apply_red_confirm(RedConfirmRequest(number, RedReason.RETURNED, lines=(BOOK,),
                                                          buyer=Party(name="个人")))
    assert confirm.status == ConfirmStatus.NOT_NEEDED and confirm.status.allows_red
    # Open confirmations count against the blue too.
    with pytest.raises(PermanentGatewayError):
        gateway.apply_red_confirm(RedConfirmRequest(number, RedReason.RETURNED, lines=(BOOK,),
                                                    buyer=Party(name="个人")))
    gateway.red_letter(RedRequest("red-n1", number, RedReason.RETURNED, confirm_id=confirm.confirm_id))
    assert wait_issued(gateway, "red-n1").total == D("-55.25")


def test_red_is_refused_while_login_expired(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    number = blue(gateway, "blue-l1")
    any_sandbox.admin("expire-login")
    with pytest.raises(AuthExpired):
        gateway.red_letter(RedRequest("red-l1", number, RedReason.RETURNED))
    any_sandbox.admin("renew-login")
    gateway.red_letter(RedRequest("red-l1", number, RedReason.RETURNED))


def test_red_of_unknown_blue_is_refused(any_sandbox) -> None:
    with pytest.raises(PermanentGatewayError):
        any_sandbox.gateway().red_letter(RedRequest("red-x1", "26110000000000000001", RedReason.RETURNED))
