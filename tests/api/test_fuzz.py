"""Property-based fuzzing of every endpoint that reads JSON: valid orders mutated (types,
sizes, unicode, nesting, numbers) never get a 500; every error names a path; and nothing is
half-written (an order is stored whole, with its lines and request, or not at all)."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.engine.contract import validate_draft
from app.models import InvoiceRequest, Order, OrderLine
from app.models.rules import RuleSet
from app.services.rule_versions import load_shipped_defaults
from tests.factories import gen_order_doc, gen_shop

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
HEADERS = {"Content-Type": "application/json", "X-CSRFToken": "unused-in-tests"}
SELLER = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}
_ids = itertools.count(1)

# Text the system must refuse or carry: every plane, lone surrogates, controls, right-to-left,
# combining marks, very long.
TEXT = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=30),
    st.sampled_from(["\ud800", "a\udfffb", "\x00", "x\x1b[31m", "\u202e12", "e\u0301", "'\"\\", "🍵" * 40,
                     "个" * 200, "", " ", "null", "0", "-0", "1e400", "NaN"]),
    st.text(max_size=5).map(lambda s: s * 5000),
)
NUMBER_TEXT = st.one_of(
    st.integers(0, 10).flatmap(lambda places: st.decimals(allow_nan=False, allow_infinity=False,
                                                           places=places)).map(str),
    st.sampled_from(["999999999999.99999999", "9999999999999.99", "1e400", "-1", "0", "0.000000001",
                     "1E+2", "١٢", "1_000", " 1", "Infinity", "99999999999999999999999999999999999"]),
    st.integers().map(str),
)
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
                   st.floats(allow_nan=True, allow_infinity=True), TEXT, NUMBER_TEXT)
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=8)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a document (keys and list indexes)."""
    found = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += _paths(value, (*prefix, i))
    return found


def _nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated_orders(draw) -> dict:
    doc = gen_order_doc("fz", f"FZ{next(_ids)}")
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        kind = draw(st.sampled_from(["value", "number", "text", "delete", "nest", "extra", "grow"]))
        if kind == "delete":
            del parent[last]
        elif kind == "number":
            parent[last] = draw(NUMBER_TEXT)
        elif kind == "text":
            parent[last] = draw(TEXT)
        elif kind == "nest":
            parent[last] = _nest(parent[last], draw(st.sampled_from([2, 31, 40, 200])))
        elif kind == "extra":
            target = parent if isinstance(parent, dict) else doc
            target[draw(TEXT)] = draw(VALUE)
        elif kind == "grow" and isinstance(parent, list):
            parent.extend(copy.deepcopy(parent[:1]) * draw(st.sampled_from([1, 50, 400])))
        else:
            parent[last] = draw(VALUE)
        if not isinstance(doc.get("order_id"), str):
            break
    return doc


def _text(value: Any) -> str:
    # ensure_ascii: lone surrogates travel as \\ud800 escapes, as a hostile client sends them;
    # allow_nan: NaN and Infinity go out as the bare words some encoders write.
    return json.dumps(value, ensure_ascii=True, allow_nan=True)


def _check_errors(response) -> None:
    """Below 500; a refusal says what and where (an intake answer: each refused order)."""
    assert response.status_code < 500, response.text[:1000]
    if response.status_code < 400:
        return
    body = response.get_json()
    assert isinstance(body, dict), response.text[:500]
    groups = [item["errors"] for item in body["rejected"]] if "rejected" in body else [body.get("errors")]
    for errors in groups:
        assert errors, response.text[:500]
        for error in errors:
            assert isinstance(error.get("path"), str) and error.get("code") and error.get("message"), error


@pytest.fixture
def operator(client, login, db_session):
    gen_shop(db_session, shop_code="fz")
    db_session.commit()
    return login("operations")


@FUZZ
@given(st.lists(mutated_orders(), min_size=1, max_size=3))
def test_fuzzed_orders_at_intake(client, operator, db_session, docs):
    keys = [f"tmall:fz:{d['order_id']}" if isinstance(d.get("order_id"), str) else None for d in docs]
    response = client.post("/api/v1/orders", data=_text({"orders": docs}), headers=HEADERS)
    _check_errors(response)
    db_session.rollback()
    if response.status_code in (400, 413) or "accepted" not in (response.get_json() or {}):
        stored = 0
    else:
        result = response.get_json()
        for item in result["rejected"]:
            assert item["errors"] and all(isinstance(e["path"], str) for e in item["errors"])
        accepted = {a["index"] for a in result["accepted"]}
        assert accepted | {r["index"] for r in result["rejected"]} == set(range(len(docs)))
        stored = len(accepted)
        for index in accepted:  # whole: the order, each of its lines, its request
            order = db_session.scalar(select(Order).where(Order.order_no == docs[index]["order_id"],
                                                          Order.shop_code == "fz"))
            assert order is not None
            lines = db_session.scalar(select(func.count()).select_from(OrderLine).where(OrderLine.order_pk == order.id))
            assert lines == len(docs[index]["lines"])
            assert db_session.scalar(select(func.count()).select_from(InvoiceRequest)
                                     .where(InvoiceRequest.order_pk == order.id)) == 1
    mine = [k.split(":", 2)[2] for k in keys if k]
    assert db_session.scalar(select(func.count()).select_from(Order).where(Order.order_no.in_(mine))) <= stored


@FUZZ
@given(mutated_orders(), st.one_of(st.just(SELLER), VALUE), st.one_of(st.none(), VALUE))
def test_fuzzed_orders_at_preview(client, order, seller, options):
    body = {"order": order, "seller": seller, **({"options": options} if options is not None else {})}
    response = client.post("/api/v1/preview", data=_text(body), headers=HEADERS)
    _check_errors(response)
    if response.status_code == 200:
        assert validate_draft(response.get_json()) == []


@pytest.fixture
def merchant(login):
    return login("merchant")


@FUZZ
@given(mutated_orders())
def test_fuzzed_orders_on_the_preview_page(client, merchant, order):
    response = client.post("/preview", data={"order": _text(order), "seller": _text(SELLER)})
    assert response.status_code in (200, 422), response.text[:1000]


@pytest.fixture
def rule_set(login, db_session) -> RuleSet:
    load_shipped_defaults(db_session)
    db_session.commit()
    login("tax_specialist")
    return db_session.scalars(select(RuleSet)).first()


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(mutated_orders())
def test_fuzzed_orders_in_the_rules_dry_run(client, rule_set, order):
    response = client.post(f"/admin/rules/{rule_set.id}/v/2/dry-run",
                           data={"source": "paste", "order_json": _text(order)})
    assert response.status_code in (200, 422), response.text[:1000]
