from __future__ import annotations

from decimal import Decimal as D

import pytest

from app.engine.compose import compose_draft
from app.engine.money import separate
from app.errors import ValidationFailed

from .helpers import BOOK, CRAFT, SELLER, assert_sound, example, line, order

WORKED = example("worked-order.json")


def compose(doc: dict, options: dict | None = None, **kw) -> dict:
    draft = compose_draft(doc, SELLER, options, **kw)
    assert_sound(draft)
    return draft


def lines_of(draft: dict, index: int = 0) -> list[dict]:
    return draft["invoices"][index]["lines"]


def total(draft: dict) -> D:
    return sum((D(inv["total"]) for inv in draft["invoices"]), D(0))


def reason_codes(draft: dict) -> set[str]:
    return {r["code"] for r in draft["decision"]["reasons"]}


def warning_codes(draft: dict) -> set[str]:
    return {w["code"] for w in draft.get("warnings", [])}


@pytest.mark.parametrize(("mode", "expected"), [("discount_line", "worked-draft-discount-line.json"),
                                                 ("net_price", "worked-draft-net-price.json")])
def test_worked_example_reproduces_the_contract_drafts(mode: str, expected: str) -> None:
    want = example(expected)
    draft = compose(WORKED, {"discount_mode": mode}, decision=want["decision"])
    assert draft["decision"]["action"] == want["decision"]["action"]
    assert [r["code"] for r in draft["decision"]["reasons"]] == [r["code"] for r in want["decision"]["reasons"]]
    assert len(draft["invoices"]) == 1
    got, exp = draft["invoices"][0], want["invoices"][0]
    for key in ("kind", "color", "buyer", "seller", "remark", "total_amount", "total_tax", "total", "total_in_words"):
        assert got[key] == exp[key], key
    assert len(got["lines"]) == len(exp["lines"])
    for mine, theirs in zip(got["lines"], exp["lines"], strict=True):
        for key in ("seq", "kind", "source_line_id", "name", "tax_code", "amount", "tax_rate", "tax", "gross",
                    "quantity", "unit_price", "unit"):
            assert mine.get(key) == theirs.get(key), (mine["seq"], key)
        assert mine["display_name"] == f"*{mine['short_name']}*{mine['name']}"


def test_line_discount_and_order_discount_share_merge_into_one_discount_line() -> None:
    doc = order([line("1", "100.00", discount="10.00"), line("2", "50.00", code=BOOK)], order_discount="14.00")
    draft = compose(doc)
    ls = lines_of(draft)
    assert [ln["kind"] for ln in ls] == ["discounted", "discount", "discounted", "discount"]
    # order discount over 90.00 : 50.00 → 9.00 / 5.00; line 1's 折扣行 = 10.00 + 9.00
    assert ls[1]["gross"] == "-19.00" and ls[3]["gross"] == "-5.00"
    assert ls[1]["name"] == ls[0]["name"] and ls[1]["tax_code"] == ls[0]["tax_code"]
    assert total(draft) == D("126.00")
    net = compose(doc, {"discount_mode": "net_price"})
    assert [ln["gross"] for ln in lines_of(net)] == ["81.00", "45.00"]


def test_platform_discount_included_by_default_and_excluded_on_request() -> None:
    doc = order([line("1", "100.00", platform_discount="5.00")], platform_discount="10.00")
    included = compose(doc)
    assert total(included) == D("100.00") and len(lines_of(included)) == 1
    excluded = compose(doc, {"platform_discount": "exclude"})
    assert total(excluded) == D("85.00")
    assert lines_of(excluded)[1]["gross"] == "-15.00"


def test_stored_value_is_never_invoiced_and_is_shared_with_shipping() -> None:
    doc = order([line("1", "90.00")], shipping_fee="10.00", stored_value_paid="20.00")
    draft = compose(doc)
    ls = lines_of(draft)
    assert total(draft) == D("80.00")
    assert ls[1]["gross"] == "-18.00"  # 20.00 over 90 : 10
    assert ls[2]["source_line_id"] == "shipping" and ls[2]["gross"] == "8.00"
    assert "stored_value_deducted" in warning_codes(draft)


def test_stored_value_paying_everything_leaves_nothing_to_invoice() -> None:
    draft = compose(order([line("1", "10.00")], stored_value_paid="10.00"))
    assert draft["decision"]["action"] == "skip" and draft["invoices"] == []


def test_invoice_amount_mismatch_holds_with_the_difference() -> None:
    doc = order([line("1", "100.00")], invoice_amount="99.50")
    draft = compose(doc)
    assert draft["decision"]["action"] == "hold"
    reason = next(r for r in draft["decision"]["reasons"] if r["code"] == "invoice_amount_mismatch")
    assert "0.50" in reason["message"]
    assert compose(order([line("1", "100.00")], invoice_amount="100.00"))["decision"]["action"] == "issue"


def test_refunds_reduce_what_is_invoiced() -> None:
    doc = order([line("1", "99.00", qty="2"), line("2", "59.90", code=BOOK)], shipping_fee="10.00",
                refunds=[{"refund_id": "r1", "line_id": "1", "quantity": "1", "amount": "99.00", "status": "success"},
                         {"refund_id": "r2", "amount": "5.00", "status": "closed"}])
    draft = compose(doc)
    ls = lines_of(draft)
    assert ls[0]["quantity"] == "1" and ls[0]["gross"] == "99.00"
    assert total(draft) == D("168.90")


def test_returned_line_leaves_the_invoice_and_order_refund_is_shared() -> None:
    doc = order([line("1", "10.00"), line("2", "30.00")], shipping_fee="10.00", refunds=[
        {"refund_id": "r1", "line_id": "1", "quantity": "1", "amount": "10.00", "status": "success"},
        {"refund_id": "r2", "amount": "4.00", "status": "success"}])
    draft = compose(doc, {"discount_mode": "net_price"})
    ls = lines_of(draft)
    assert [ln["source_line_id"] for ln in ls] == ["2", "shipping"]
    assert [ln["gross"] for ln in ls] == ["27.00", "9.00"]


def test_fully_refunded_order_is_skipped() -> None:
    doc = order([line("1", "10.00", qty="2")], refunds=[
        {"refund_id": "r1", "line_id": "1", "quantity": "2", "amount": "20.00", "status": "success"}])
    draft = compose(doc)
    assert draft["decision"]["action"] == "skip" and "fully_refunded" in reason_codes(draft)


def test_refund_larger_than_the_line_is_an_error() -> None:
    doc = order([line("1", "10.00", qty="2")], refunds=[
        {"refund_id": "r1", "line_id": "1", "quantity": "1", "amount": "25.00", "status": "success"}])
    with pytest.raises(ValidationFailed) as info:
        compose_draft(doc, SELLER)
    assert info.value.problems[0].path == "refunds[0].amount"


def test_pending_refund_waits() -> None:
    # Waiting for a refund is the rules' call (the shipped rule wait-refund-pending).
    from app.rules import decide

    doc = order([line("1", "10.00")], refunds=[{"refund_id": "r", "amount": "1.00", "status": "pending"}])
    assert compose(doc, decision=decide(doc).as_dict(full=True))["decision"]["action"] == "wait"


GIFT_ORDER = order([line("1", "90.00"), line("2", "10.00", is_gift=True)])


def test_gift_as_discount_line() -> None:
    ls = lines_of(compose(GIFT_ORDER))
    assert [(ln["kind"], ln["gross"]) for ln in ls] == [("normal", "90.00"), ("discounted", "10.00"),
                                                        ("discount", "-10.00")]


def test_gift_allocated_by_list_price() -> None:
    draft = compose(GIFT_ORDER, {"gift_mode": "allocate", "discount_mode": "net_price"})
    assert [ln["gross"] for ln in lines_of(draft)] == ["81.00", "9.00"]
    paired = compose(GIFT_ORDER, {"gift_mode": "allocate"})
    assert [ln["gross"] for ln in lines_of(paired)] == ["90.00", "-9.00", "10.00", "-1.00"]


def test_gift_omitted_and_gift_without_price() -> None:
    draft = compose(GIFT_ORDER, {"gift_mode": "omit"})
    assert [ln["source_line_id"] for ln in lines_of(draft)] == ["1"] and "gift_omitted" in warning_codes(draft)
    zero = compose(order([line("1", "5.00"), line("2", "0.00", is_gift=True)]))
    assert len(lines_of(zero)) == 1 and "gift_without_price" in warning_codes(zero)


def test_shipping_takes_the_main_goods_code_unless_overridden() -> None:
    doc = order([line("1", "20.00", code=BOOK), line("2", "30.00", code=CRAFT)], shipping_fee="8.00")
    ship = lines_of(compose(doc))[-1]
    assert (ship["name"], ship["tax_code"], ship["tax_rate"]) == ("运费", CRAFT[0], "0.13")
    assert "quantity" not in ship
    override = {"shipping": {"tax_code": "3040409030000000000", "tax_rate": "0.06", "name": "快递费"}}
    ship = lines_of(compose(doc, override))[-1]
    assert (ship["name"], ship["display_name"], ship["tax_rate"]) == ("快递费", "*物流辅助服务*快递费", "0.06")


def enterprise(**request) -> dict:
    doc = order([line("1", "10.00")])
    doc["invoice_request"] = {"kind": "normal", "title_type": "enterprise", "title": "北京某某科技有限公司", **request}
    return doc


def test_titles() -> None:
    assert compose(enterprise(tax_id="91110000600037341L"))["decision"]["action"] == "issue"
    missing = compose(enterprise())
    assert missing["decision"]["action"] == "hold" and "tax_id_missing" in reason_codes(missing)
    checksum = compose(enterprise(tax_id="91350203M0001QAY9B"))
    assert checksum["decision"]["action"] == "hold" and "tax_id_checksum" in reason_codes(checksum)
    assert checksum["invoices"][0]["buyer"]["tax_id"] == "91350203M0001QAY9B"
    with pytest.raises(ValidationFailed) as info:
        compose_draft(enterprise(tax_id="9111000060003734"), SELLER)
    assert info.value.problems[0].path == "invoice_request.tax_id"


def test_special_invoice_rules() -> None:
    ok = compose(enterprise(tax_id="91110000600037341L", kind="special"))
    assert ok["decision"]["action"] == "issue" and ok["invoices"][0]["kind"] == "special"
    personal = order([line("1", "10.00")])
    personal["invoice_request"]["kind"] = "special"
    assert "special_to_person" in reason_codes(compose(personal))
    exempt = enterprise(tax_id="91110000600037341L", kind="special")
    exempt["lines"] = [line("1", "10.00", code=("1010115010100000000", "0"), tax_treatment="exempt")]
    draft = compose(exempt)
    assert draft["decision"]["action"] == "hold" and "special_with_untaxed_lines" in reason_codes(draft)
    assert draft["invoices"][0]["lines"][0]["tax_treatment"] == "exempt"
    forced = compose(order([line("1", "10.00")]), {"kind": "special"})
    assert "special_to_person" in reason_codes(forced)


def test_long_goods_name_is_truncated_with_a_warning() -> None:
    draft = compose(order([line("1", "10.00", name="长" * 120)]))
    assert len(lines_of(draft)[0]["name"]) == 90 and "name_truncated" in warning_codes(draft)


def test_remark_template_and_limits() -> None:
    doc = order([line("1", "10.00")])
    draft = compose(doc, {"remark_template": "订单号:{order_id} 店铺:{shop_name}", "extra_remarks": ["{platform}"]})
    assert draft["invoices"][0]["remark"] == "订单号:O1 店铺:s1 tmall"
    with pytest.raises(ValidationFailed) as info:
        compose_draft(doc, SELLER, {"remark_template": "{order_no}"})
    assert info.value.problems[0].path == "options.remark_template"
    with pytest.raises(ValidationFailed) as info:
        compose_draft(doc, SELLER, {"remark_template": "{order_id.__class__}"})
    with pytest.raises(ValidationFailed) as info:
        compose_draft(doc, SELLER, {"remark_template": "备" * 201})
    assert info.value.problems[0].path == "remark" and "200" in info.value.problems[0].message


def test_split_by_max_lines_keeps_discount_lines_with_their_line() -> None:
    doc = order([line(str(i), "10.00", discount="1.00") for i in range(1, 6)], shipping_fee="5.00")
    draft = compose(doc, {"max_lines": 3})
    invoices = draft["invoices"]
    # five pairs of two lines + shipping: a pair never straddles, so one pair per invoice and the
    # shipping line joins the last pair
    assert [[ln["kind"] for ln in inv["lines"]] for inv in invoices] == [["discounted", "discount"]] * 4 + [
        ["discounted", "discount", "normal"]]
    for number, invoice in enumerate(invoices, start=1):
        assert [ln["seq"] for ln in invoice["lines"]] == list(range(1, len(invoice["lines"]) + 1))
        assert invoice["remark"] == f"订单号:O1 ({number}/5)"
    assert total(draft) == D("50.00")


def test_split_by_max_amount_and_by_quantity() -> None:
    doc = order([line("1", "300.00", qty="10"), line("2", "50.00")])
    draft = compose(doc, {"max_amount": "1000.00", "discount_mode": "net_price"})
    assert all(D(inv["total"]) <= D("1000.00") for inv in draft["invoices"])
    assert total(draft) == D("3050.00")
    quantities = [ln["quantity"] for inv in draft["invoices"] for ln in inv["lines"] if ln["source_line_id"] == "1"]
    assert sum(D(q) for q in quantities) == 10
    with pytest.raises(ValidationFailed) as info:
        compose_draft(order([line("1", "2000.00")]), SELLER, {"max_amount": "1000.00"})
    assert info.value.problems[0].code == "line_too_large"


def test_cumulative_tax_error_splits_long_invoices() -> None:
    # a gross whose separation leaves a large positive residual, repeated until Σ would pass 1.27
    gross = max((D(n).scaleb(-2) for n in range(1, 2000)),
                key=lambda g: (lambda a, t: a * D("0.13") - t)(*separate(g, D("0.13"))))
    amount, tax = separate(gross, D("0.13"))
    assert amount * D("0.13") - tax > D("0.005")
    doc = order([line(str(i), str(gross)) for i in range(400)])
    draft = compose(doc)
    assert len(draft["invoices"]) >= 2
    for invoice in draft["invoices"]:
        residual = sum(D(ln["amount"]) * D(ln["tax_rate"]) - D(ln["tax"]) for ln in invoice["lines"])
        assert abs(residual) <= D("1.27")


def test_without_a_decision_the_order_is_composed() -> None:
    # What to do with an order is the rules' call (tests/rules/test_default_rules.py covers the
    # shipped ones: cancelled, not requested, unpaid); composing never invoices a cancelled order.
    assert compose(order([line("1", "1.00")], status="cancelled"))["decision"]["action"] == "skip"
    paid = compose(order([line("1", "1.00")], status="paid"))
    assert paid["decision"]["action"] == "issue"


def test_given_decision_and_its_options_apply() -> None:
    decision = {"action": "issue", "reasons": [{"code": "rule", "message": "ok"}], "rules_fired": ["r1"],
                "rules_version": "v7", "options": {"discount_mode": "net_price"}}
    draft = compose(WORKED, decision=decision)
    assert draft["rules_version"] == "v7" and draft["decision"]["rules_fired"] == ["r1"]
    assert lines_of(draft)[0]["kind"] == "normal"
    held = compose(WORKED, decision={"action": "hold", "reasons": [{"code": "x", "message": "y"}]})
    assert held["decision"]["action"] == "hold" and held["invoices"]
    with pytest.raises(ValidationFailed):
        compose_draft(WORKED, SELLER, decision={"action": "maybe"})


def test_bad_options_and_seller_are_named() -> None:
    with pytest.raises(ValidationFailed) as info:
        compose_draft(WORKED, SELLER, {"max_lines": 1, "max_amount": 10.5, "gift_mode": "free", "colour": 1})
    assert {p.path for p in info.value.problems} == {
        "options.max_lines", "options.max_amount", "options.gift_mode", "options.colour"}
    with pytest.raises(ValidationFailed) as info:
        compose_draft(WORKED, None)
    assert info.value.problems[0].path == "seller"
    with pytest.raises(ValidationFailed) as info:
        compose_draft(WORKED, {"name": "x", "tax_id": "bad"})
    assert info.value.problems[0].path == "seller.tax_id"
