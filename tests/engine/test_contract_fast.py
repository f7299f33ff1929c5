"""The fastjsonschema shortcut in the order contract never accepts what jsonschema rejects.

Valid orders are mutated (wrong types, missing and extra fields, bad formats, values past
their limits, tuples for arrays) and both schema paths judge them. The only disagreement
allowed is the shortcut being stricter about a trailing newline (its patterns end in
``\\Z``, jsonschema's ``$`` lets one through) — the jsonschema path then decides, so the
problems reported are always exactly those of the jsonschema path.
"""

from __future__ import annotations

import copy
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.engine import contract
from app.engine.contract import (
    ORDER_SCHEMA_PATH,
    _fast_order_ok,
    _schema_problems,
    order_validator,
    validate_order,
)

from .helpers import example

FULL: dict[str, Any] = {
    "platform": "jd", "shop_id": "s1", "order_id": "O-1", "status": "completed",
    "created_at": "2026-11-10T23:59:59+08:00", "paid_at": "2026-11-11T00:01:02.123+08:00",
    "shipped_at": "2026-11-12T08:00:00Z", "received_at": "2026-11-14 10:20:00+08:00",
    "currency": "CNY",
    "buyer": {"nick": "tb_buyer", "email": "b@example.com", "mobile": "13800000000"},
    "invoice_request": {
        "kind": "special", "title_type": "enterprise", "title": "杭州青禾电子商务有限公司",
        "tax_id": "91110000600037341L", "natural_person": False, "id_number": "", "address": "杭州市西湖区",
        "phone": "0571-88888888", "bank": "工商银行", "account": "1202020209000000000", "email": "f@example.com",
        "mobile": "13900000000", "requested_at": "2026-11-11T00:02:00+08:00", "platform_request_id": "R1",
    },
    "lines": [
        {"line_id": "1", "sku": "CUP", "name": "手工陶瓷杯", "category": "杯", "spec": "350ml", "unit": "个",
         "quantity": "2", "unit_price": "99.00", "discount": "5.00", "platform_discount": "1.00",
         "is_gift": False, "tax_code": "1060502990000000000", "tax_rate": "0.13", "tax_treatment": "taxable"},
        {"line_id": "2", "name": "赠品", "quantity": "1.5", "unit_price": "0", "is_gift": True},
    ],
    "shipping_fee": "10.00", "order_discount": "20.00", "platform_discount": "0.50",
    "stored_value_paid": "1.00", "paid_amount": "160.00", "invoice_amount": "160.00",
    "refunds": [{"refund_id": "r1", "line_id": "1", "quantity": "1", "amount": "40.00", "kind": "return_refund",
                 "status": "success", "created_at": "2026-11-15T09:00:00+08:00"}],
    "remark": "请开发票", "extensions": {"source_updated_at": "2026-11-15T09:00:00+08:00", "x": [1, {"y": None}]},
}

# strings near the contract's edges: formats, decimal patterns, enums, lengths
EDGE_STRINGS = [
    "", " ", "0", "-0", "-1.00", "1.", ".5", "1.234", "12.3.4", "99.00\n", "99.00 ", " 99.00", "１２", "1e3",
    "0.13", "0.13000", "13%", "1" * 13, "1" * 14, "1" * 19, "1" * 20, "1" * 12 + ".12345678", "1.123456789",
    "2026-11-11T00:01:02+08:00", "2026-11-11T00:01:02", "2026-11-11T00:01:02+0800", "2026-11-11 00:01:02+08:00",
    "2026-11-11t00:01:02z", "2026-02-30T00:00:00+08:00", "2026-13-01T00:00:00Z", "2026-11-11T24:00:00Z",
    "2026-11-11T00:01:02.1234567890+08:00", "2026-11-11T00:01:02.123456789+08:00", "2026-11-11T00:01:02+08:00\n",
    "2026-11-11", "CNY", "USD", "taobao", "tmall", "closed", "success", "normal", "special", "personal", "taxable",
    "zero_rated", "return_refund",
]
LENGTHS = [0, 1, 19, 20, 21, 26, 27, 32, 33, 50, 51, 64, 65, 80, 81, 100, 101, 200, 201, 254, 255, 500, 501]

leaf_values = st.one_of(
    st.sampled_from(EDGE_STRINGS), st.sampled_from(EDGE_STRINGS),  # weighted: the edges matter most
    st.none(), st.booleans(), st.integers(-10**15, 10**15), st.floats(allow_nan=False),
    st.sampled_from(EDGE_STRINGS), st.sampled_from(LENGTHS).map(lambda n: "x" * n),
    st.sampled_from(LENGTHS).map(lambda n: "汉" * n), st.text(max_size=8),
    st.sampled_from([[], {}, [{}], {"a": 1}]),
).map(copy.deepcopy)  # fresh containers: later mutations must not edit a shared example


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Every (container path, key) in the document, the root included as ()."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _nodes(v, (*path, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for part in path:
        doc = doc[part]
    return doc


@st.composite
def mutated_orders(draw) -> Any:
    doc = copy.deepcopy(draw(st.sampled_from([FULL, example("worked-order.json")])))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_nodes(doc)))
        target = _get(doc, path)
        op = draw(st.sampled_from(["replace", "delete", "extra", "tuple", "empty", "duplicate"]))
        if op == "replace" and path:
            _get(doc, path[:-1])[path[-1]] = draw(leaf_values)
        elif op == "delete" and path and isinstance(_get(doc, path[:-1]), dict):
            del _get(doc, path[:-1])[path[-1]]
        elif op == "extra" and isinstance(target, dict):
            target[draw(st.sampled_from(["colour", "Lines", "line_id", "amount", "kind", "1"]))] = draw(leaf_values)
        elif op == "tuple" and path and isinstance(target, list):
            _get(doc, path[:-1])[path[-1]] = tuple(target)
        elif op == "empty" and isinstance(target, list | dict):
            target.clear()
        elif op == "duplicate" and isinstance(target, list) and target:
            target.append(copy.deepcopy(target[0]))
    return doc


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _jsonschema_ok(doc: Any) -> bool:
    return not _schema_problems(order_validator(), ORDER_SCHEMA_PATH, doc)


@given(mutated_orders())
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_fast_path_agrees_with_jsonschema(doc) -> None:
    fast = _fast_order_ok(doc)
    slow = _jsonschema_ok(doc)
    if fast:
        assert slow, "fastjsonschema accepted an order jsonschema rejects"
    elif slow:
        # the one known difference: jsonschema's "$" accepts a trailing newline, "\Z" does not
        assert any(s.endswith("\n") for s in _strings(doc)), "fast path rejected an order jsonschema accepts"
    with mock.patch.object(contract, "_fast_order_ok", return_value=False):
        expected = validate_order(doc)
    assert validate_order(doc) == expected


def test_fast_path_accepts_the_valid_examples() -> None:
    assert _fast_order_ok(copy.deepcopy(FULL))
    assert _fast_order_ok(example("worked-order.json"))
    assert validate_order(copy.deepcopy(FULL)) == []


def test_fast_path_uses_the_contracts_date_time() -> None:
    for bad in ("2026-02-30T00:00:00+08:00", "2026-11-11T00:01:02+0800", "2026-11-11T00:01:02",
                "2026-11-11T00:01:02.1234567890+08:00"):
        doc = copy.deepcopy(FULL)
        doc["paid_at"] = bad
        assert not _fast_order_ok(doc), bad
        assert not _jsonschema_ok(doc), bad


def test_tuples_are_not_arrays() -> None:
    doc = copy.deepcopy(FULL)
    doc["lines"] = tuple(doc["lines"])
    assert not _fast_order_ok(doc) and not _jsonschema_ok(doc)
    doc = copy.deepcopy(FULL)
    doc["refunds"] = tuple(doc["refunds"])
    assert not _fast_order_ok(doc) and not _jsonschema_ok(doc)


def _schema_nodes(node: Any, path: tuple = ()) -> list[tuple[tuple, dict]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for k, v in node.items():
            out += _schema_nodes(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _schema_nodes(v, (*path, i))
    return out


def test_the_fast_paths_assumptions_about_the_schema_still_hold() -> None:
    """_fast_order_ok adds the one check fastjsonschema lacks (it takes tuples as arrays) for
    "lines" and "refunds" only, and the two libraries agree on the other types used. A schema
    that adds an array or uses numbers must revisit that check (and this test)."""
    schema = contract._schema(ORDER_SCHEMA_PATH)
    types: set[str] = set()
    arrays = []
    for path, node in _schema_nodes(schema):
        declared = node.get("type")
        if isinstance(declared, str | list) and path[-1:] != ("properties",):
            types.update([declared] if isinstance(declared, str) else declared)
            if "array" in (declared if isinstance(declared, list) else [declared]):
                arrays.append(path)
    assert types == {"object", "string", "array", "boolean", "null"}
    assert sorted(arrays) == [("properties", "lines"), ("properties", "refunds")]
    assert not any("format" in node and node["format"] != "date-time" for _, node in _schema_nodes(schema))
