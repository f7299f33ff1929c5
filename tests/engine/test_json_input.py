"""Hostile input refused with a path at the edge (app.engine.json_input) and by the contract:
each case was found by fuzzing and used to crash or stall something downstream."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.engine.compose import compose_draft
from app.engine.contract import ORDER_LIMIT, parse_order
from app.engine.json_input import MAX_DEPTH, load_json, structure_problems
from app.errors import ValidationFailed
from app.rules import decide
from tests.factories import gen_order_doc


def _problems(call) -> list[tuple[str, str]]:
    with pytest.raises(ValidationFailed) as caught:
        call()
    return [(p.path, p.code) for p in caught.value.problems]


@pytest.mark.parametrize("text, expected", [
    ("[" * 5000 + "]" * 5000, [("body", "too_deep")]),
    ('{"a": ' * 40 + "1" + "}" * 40, [("body" + ".a" * MAX_DEPTH, "too_deep")]),
    ('{"order": {"lines": [{"name": "\\ud800"}]}}', [("body.order.lines[0].name", "invalid_text")]),
    ('{"sku": "a\\u0000b"}', [("body.sku", "invalid_text")]),
    ('{"bad\\udfffkey": 1}', [("body", "invalid_text")]),
    ('{"x": NaN, "y": -Infinity}', [("body.x", "invalid_number"), ("body.y", "invalid_number")]),
    ('{"a": ', [("body", "invalid_json")]),
    (b"\xff\xfe{}", [("body", "not_utf8")]),
])
def test_unreadable_json_is_refused_with_a_path(text, expected):
    assert _problems(lambda: load_json(text, "body")) == expected


def test_ordinary_text_passes_untouched():
    text = '{"name": "手工陶瓷杯\\t(蓝)\\n", "emoji": "\\ud83c\\udf75", "n": 1.5}'
    assert load_json(text, "body") == {"name": "手工陶瓷杯\t(蓝)\n", "emoji": "🍵", "n": 1.5}


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                    max_leaves=30))
def test_the_fast_check_agrees_with_the_slow_one(value):
    """Whatever the document, ``structure_problems`` finds a problem exactly when some string
    has one (its fast path and its path-naming slow path agree)."""
    strings: list[str] = []

    def walk(item):
        if isinstance(item, str):
            strings.append(item)
        elif isinstance(item, dict):
            strings.extend(item)
            for child in item.values():
                walk(child)
        elif isinstance(item, list):
            for child in item:
                walk(child)

    walk(value)
    bad = any(any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in s)
              for s in strings)
    assert bool(structure_problems(value)) == bad


def test_absurd_amounts_are_refused_per_line_and_per_order():
    doc = gen_order_doc("s1", "BIG")
    doc["lines"][0].update(quantity="999999999999.99999999", unit_price="9999999999999.99")
    assert _problems(lambda: parse_order(doc)) == [("lines[0].quantity", "too_large"), ("lines", "too_large")]
    many = gen_order_doc("s1", "MANY")
    many["lines"] = [dict(many["lines"][0], line_id=str(i), quantity="1", unit_price="9000000000.00")
                     for i in range(2)]
    many.pop("paid_amount")
    assert _problems(lambda: parse_order(many)) == [("lines", "too_large")]
    at_limit = gen_order_doc("s1", "EDGE")
    at_limit["lines"] = [dict(at_limit["lines"][0], quantity="1", unit_price=str(ORDER_LIMIT))]
    at_limit.update(shipping_fee="0", order_discount="0", paid_amount=str(ORDER_LIMIT))
    parse_order(at_limit)


@pytest.mark.parametrize("field, value, path", [
    ("received_at", "0001-01-01T00:00:00+08:00", "received_at"),
    ("paid_at", "9999-12-31T23:59:59-14:00", "paid_at"),
    ("paid_at", "1969-12-31T23:59:59+00:00", "paid_at"),
])
def test_times_outside_1970_to_2099_are_refused(field, value, path):
    assert _problems(lambda: parse_order(gen_order_doc("s1", "T", **{field: value}))) == [(path, "out_of_range")]


def test_control_characters_and_huge_extensions_are_refused():
    doc = gen_order_doc("s1", "NUL")
    doc["lines"][0]["name"] = "杯\x00子"
    doc["lines"][1]["sku"] = "SKU\x00"
    assert _problems(lambda: parse_order(doc)) == [("lines[0].name", "invalid_text"), ("lines[1].sku", "invalid_text")]
    blob = gen_order_doc("s1", "BLOB", extensions={"raw": "x" * (10 * 1024 * 1024)})
    assert _problems(lambda: parse_order(blob)) == [("extensions", "too_large")]


def test_quotes_and_backslashes_in_order_ids_decide_like_any_other():
    for order_id in ('A"1', "A\\1", "A'1", 'x\\"}]'):
        decision = decide(parse_order(gen_order_doc("s1", order_id)))
        assert decision.action == "issue", order_id


def test_a_max_amount_beyond_any_number_is_refused_by_name():
    order = parse_order(gen_order_doc("s1", "MAX"))
    decision = decide(order)
    seller = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}
    for bad in ("1e400", "-5", "abc", "NaN"):
        problems = _problems(lambda bad=bad: compose_draft(order, seller, {"max_amount": bad}, decision.as_dict()))
        assert problems[0][0] == "options.max_amount", bad
    draft = compose_draft(order, seller, {"max_amount": "100"}, decision.as_dict())
    assert len(draft["invoices"]) > 1 and all(Decimal(i["total"]) <= 100 for i in draft["invoices"])


def test_documents_round_trip_json():
    doc = gen_order_doc("s1", "RT")
    assert load_json(json.dumps(doc, ensure_ascii=False).encode(), "body") == doc
