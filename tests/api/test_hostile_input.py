"""Each input an audit's fuzzing found crashing or stalling an entry point, at every entry point
that reads it (API intake and preview, the preview page and its PDF, the rules editor and
dry-run, ``kaipiao preview``): a clear error with a path, never a 500, nothing written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from app.models import InvoiceRequest, Order
from app.models.rules import RuleSet, RuleSetVersion
from app.services.rule_versions import load_shipped_defaults
from tests.factories import gen_order_doc, gen_shop

SELLER = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}
HEADERS = {"Content-Type": "application/json", "X-CSRFToken": "unused-in-tests"}

DEEP = "[" * 5000 + "]" * 5000


def _absurd() -> dict:
    doc = gen_order_doc("hx", "ABSURD")
    doc["lines"][0].update(quantity="999999999999.99999999", unit_price="9999999999999.99")
    return doc


# (name, raw JSON text of an order, the path its error must name, relative to the order)
HOSTILE_ORDERS = [
    ("deep", DEEP, None),
    ("lone surrogate", json.dumps(gen_order_doc("hx", "SUR"), ensure_ascii=False).replace('"个"', '"\\ud800"'),
     "lines[0].unit"),
    ("absurd amounts", json.dumps(_absurd()), "lines[0].quantity"),
    ("NUL in name", json.dumps(gen_order_doc("hx", "NUL"), ensure_ascii=False).replace("手工陶瓷杯", "手工\\u0000陶瓷杯"),
     "lines[0].name"),
    ("year 0001", json.dumps(gen_order_doc("hx", "Y1", received_at="0001-01-01T00:00:00+08:00")), "received_at"),
    ("year 9999", json.dumps(gen_order_doc("hx", "Y9", paid_at="9999-12-31T23:59:59-14:00")), "paid_at"),
    ("10 MB extensions", json.dumps(gen_order_doc("hx", "EXT", extensions={"blob": "x" * 3_000_000})), "extensions"),
]


def _paths(errors: list[dict]) -> list[str]:
    assert errors and all("path" in e and "message" in e for e in errors), errors
    return [e["path"] for e in errors]


def _names(errors: list[dict], path: str | None, prefix: str) -> bool:
    if path is None:  # nesting: the error names the input itself
        return any(e["code"] == "too_deep" for e in errors)
    return any(p.endswith(f"{prefix}{path}") for p in _paths(errors))


@pytest.fixture
def operator(client, login, db_session):
    gen_shop(db_session, shop_code="hx")
    db_session.commit()
    return login("operations")


@pytest.mark.parametrize("name, text, path", HOSTILE_ORDERS, ids=[c[0] for c in HOSTILE_ORDERS])
def test_api_intake_refuses_it_and_keeps_the_rest_of_the_batch(client, operator, db_session, name, text, path):
    good = json.dumps(gen_order_doc("hx", "GOOD-1"))
    body = f'{{"orders": [{good}, {text}]}}' if name != "deep" else f'{{"orders": [{good}, {DEEP}]}}'
    response = client.post("/api/v1/orders", data=body, headers=HEADERS)
    if name == "deep":  # unreadable as a whole: nothing is taken
        assert response.status_code in (400, 422), response.text
        assert _names(response.get_json()["errors"], None, "")
        assert db_session.scalar(select(func.count()).select_from(Order)) == 0
        return
    result = response.get_json()
    assert [a["key"] for a in result["accepted"]] == ["tmall:hx:GOOD-1"]
    [rejected] = result["rejected"]
    assert rejected["index"] == 1 and _names(rejected["errors"], path, "")
    db_session.rollback()
    assert db_session.scalars(select(Order.order_no)).all() == ["GOOD-1"]


@pytest.mark.parametrize("name, text, path", HOSTILE_ORDERS, ids=[c[0] for c in HOSTILE_ORDERS])
def test_api_preview_refuses_it(client, name, text, path):
    body = f'{{"order": {text}, "seller": {json.dumps(SELLER)}}}'
    response = client.post("/api/v1/preview", data=body, headers=HEADERS)
    assert response.status_code in (400, 422), response.text
    assert _names(response.get_json()["errors"], path, "order.")


@pytest.mark.parametrize("name, text, path", HOSTILE_ORDERS, ids=[c[0] for c in HOSTILE_ORDERS])
@pytest.mark.parametrize("url", ["/preview", "/preview/pdf"])
def test_preview_page_and_pdf_refuse_it(client, login, url, name, text, path):
    login("merchant")
    response = client.post(url, data={"order": text, "seller": json.dumps(SELLER)})
    assert response.status_code == 422, response.text[:500]
    assert "text/html" in response.content_type
    assert "cannot be previewed" in response.text or "无法预览" in response.text
    assert (path or "order") in response.text


def test_order_ids_with_quotes_and_backslashes_preview_and_decide(client, operator, db_session):
    from app.services.decide import decide_requests

    for order_id in ('Q"1', "B\\1"):
        order = gen_order_doc("hx", order_id)
        preview = client.post("/api/v1/preview", json={"order": order, "seller": SELLER}, headers=HEADERS)
        assert preview.status_code == 200, preview.text
        assert preview.get_json()["order_id"] == order_id
        stored = client.post("/api/v1/orders", json=order, headers=HEADERS)
        assert stored.status_code == 200, stored.text
    db_session.rollback()
    ids = db_session.scalars(select(InvoiceRequest.id)).all()
    outcome = decide_requests(ids, settings=client.application.config["KAIPIAO"], issue_now=False)
    db_session.rollback()
    assert sorted(db_session.scalars(select(InvoiceRequest.status)).all()) == ["issuing", "issuing"], outcome


def test_bodies_over_the_limit_are_413_with_the_limit_named(client, operator):
    big = b'{"orders": [' + b" " * (12_500_000) + b"]}"
    response = client.post("/api/v1/orders", data=big, headers=HEADERS)
    assert response.status_code == 413
    [error] = response.get_json()["errors"]
    assert error["code"] == "too_large" and "KAIPIAO_MAX_REQUEST_BYTES" in error["message"]
    page = client.post("/preview", data={"order": "x" * 5_000_000})
    assert page.status_code == 413 and "text/html" in page.content_type
    assert "MB" in page.text


def test_cli_preview_refuses_it_with_exit_2(runner, tmp_path):
    from app.cli.invoicing import preview_command

    for name, text, path in HOSTILE_ORDERS:
        order = tmp_path / f"{name}.json"
        order.write_text(text, encoding="utf-8")
        seller = tmp_path / "seller.json"
        seller.write_text(json.dumps(SELLER), encoding="utf-8")
        result = runner.invoke(preview_command, [str(order), "--seller", str(seller)])
        assert result.exit_code == 2, (name, result.output)
        errors = json.loads(result.output)["errors"]
        assert _names(errors, path, "order."), (name, errors)


# ------------------------------------------------------------------------------ rules editor


@pytest.fixture
def rule_set(client, login, db_session) -> RuleSet:
    load_shipped_defaults(db_session)
    db_session.commit()
    login("tax_specialist")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return db_session.scalars(select(RuleSet).where(RuleSet.merchant_id.is_(None))).one()


BILLION_LAUGHS = "\n".join(
    ['name: lol', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(ord('b') + i)}: &{chr(ord('b') + i)} [*{chr(ord('a') + i)},*{chr(ord('a') + i)},*{chr(ord('a') + i)},"
       f"*{chr(ord('a') + i)},*{chr(ord('a') + i)},*{chr(ord('a') + i)},*{chr(ord('a') + i)},*{chr(ord('a') + i)},"
       f"*{chr(ord('a') + i)}]" for i in range(8)]
    + ["rules: *i"])


@pytest.mark.parametrize("text, code", [
    (BILLION_LAUGHS, "bad_yaml"),
    ("name: x\nrules:\n" + "  - " * 1 + "[" * 3000 + "]" * 3000, "too_deep"),
    ('{"name": "x", "rules": ' + DEEP + "}", "too_deep"),
    ('{"name": "x\\ud800", "rules": []}', "invalid_text"),
    ("name: " + "x" * 300_000, "too_large"),
])
def test_rules_editor_refuses_it_quickly_and_saves_nothing(client, rule_set, db_session, text, code):
    before = db_session.scalar(select(func.count()).select_from(RuleSetVersion))
    response = client.post(f"/admin/rules/{rule_set.id}/edit", data={"document": text})
    assert response.status_code == 422, response.text[:300]
    db_session.rollback()
    assert db_session.scalar(select(func.count()).select_from(RuleSetVersion)) == before
    from app.rules.document import parse_document

    doc, problems = parse_document(text)
    assert doc is None and problems[0].code == code and problems[0].path.startswith("document")


@pytest.mark.parametrize("name, text, path", HOSTILE_ORDERS, ids=[c[0] for c in HOSTILE_ORDERS])
def test_dry_run_refuses_a_pasted_hostile_order(client, rule_set, name, text, path):
    response = client.post(f"/admin/rules/{rule_set.id}/v/2/dry-run", data={"source": "paste", "order_json": text})
    assert response.status_code == 422, response.text[:300]
    assert (path or "order") in response.text


@pytest.mark.parametrize("raw", ["1" * 30, "2147483648", "0", "١٢٣", "tmall:x:" + "\\" * 40])
def test_dry_run_with_an_id_that_names_no_row_says_so(client, rule_set, raw):
    response = client.post(f"/admin/rules/{rule_set.id}/v/2/dry-run", data={"source": "stored", "stored": raw})
    assert response.status_code == 422 and "no stored order" in response.text


def test_ids_beyond_any_row_are_404_everywhere(client, rule_set, login):
    huge = "9" * 30
    assert client.get(f"/admin/rules/{huge}/").status_code == 404
    assert client.get(f"/admin/rules/{rule_set.id}/v/{huge}/").status_code == 404
    login("operations")
    for view in ("order", "invoice", "invoice_request"):
        response = client.get(f"/admin/{view}/details/?id={huge}")
        assert response.status_code in (302, 404), (view, response.status_code)
