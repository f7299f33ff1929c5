"""POST /api/v1/preview and the merchant preview page (contracts/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

from app.engine.contract import validate_draft
from tests.factories import gen_order_doc, gen_shop

SELLER = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}
DATA = Path(__file__).resolve().parents[1] / "engine" / "data"


def _worked_order() -> dict:
    return json.loads((DATA / "worked-order.json").read_text(encoding="utf-8"))


def test_stateless_preview_reproduces_the_worked_example(client):
    response = client.post("/api/v1/preview", json={"order": _worked_order(), "seller": SELLER})
    assert response.status_code == 200, response.text
    draft = response.get_json()
    assert validate_draft(draft) == []
    [invoice] = draft["invoices"]
    assert invoice["total"] == "247.90" and invoice["total_in_words"] == "贰佰肆拾柒圆玖角整"
    assert [line["kind"] for line in invoice["lines"]] == ["discounted", "discount", "discounted", "discount", "normal"]
    assert draft["rules_version"].startswith("default@")


def test_options_override_and_errors_have_one_shape(client):
    net = client.post("/api/v1/preview", json={"order": _worked_order(), "seller": SELLER,
                                                "options": {"discount_mode": "net_price"}}).get_json()
    assert net["invoices"][0]["total_amount"] == "221.18"
    bad = _worked_order()
    bad["lines"][0]["unit_price"] = "9.9.9"
    response = client.post("/api/v1/preview", json={"order": bad, "seller": SELLER})
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert {"path": "order.lines[0].unit_price", "code": errors[0]["code"], "message": errors[0]["message"]} in errors
    missing_seller = client.post("/api/v1/preview", json={"order": _worked_order()})
    assert missing_seller.status_code == 422
    assert missing_seller.get_json()["errors"][0]["path"] == "seller"
    unknown = client.post("/api/v1/preview", json={"order": _worked_order(), "sellr": SELLER})
    assert unknown.status_code == 422 and unknown.get_json()["errors"][0]["path"] == "sellr"
    assert client.get("/api/v1/nope").get_json()["errors"][0]["code"] == "not_found"


def test_configured_shop_uses_merchant_data_only_for_allowed_users(client, login, db_session):
    shop = gen_shop(db_session, shop_code="conf-shop", options={"discount_mode": "net_price"})
    db_session.commit()
    order = gen_order_doc("conf-shop", "C100")
    anonymous = client.post("/api/v1/preview", json={"order": order})
    assert anonymous.status_code == 422  # no stored seller data for an anonymous caller
    login("merchant", merchant_id=shop.merchant_id)
    mine = client.post("/api/v1/preview", json={"order": order}, headers={"X-CSRFToken": "unused-in-tests"})
    assert mine.status_code == 200, mine.text
    draft = mine.get_json()
    assert draft["invoices"][0]["seller"]["tax_id"] == "91110000600037341L"
    assert all(line["kind"] == "normal" for line in draft["invoices"][0]["lines"])  # the shop's net_price


def test_openapi_documents_the_endpoints(client):
    doc = client.get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.1")
    assert {"/api/v1/preview", "/api/v1/orders"} <= set(doc["paths"])
    schema = client.get("/api/v1/schemas/order.json").get_json()
    assert schema["$id"] == "kaipiao/order/v1"


def test_preview_page_shows_face_and_pdf(client, login):
    login("merchant")
    form = {"order": json.dumps(_worked_order(), ensure_ascii=False), "seller": json.dumps(SELLER)}
    page = client.post("/preview", data=form)
    assert page.status_code == 200 and "贰佰肆拾柒圆玖角整" in page.text and "*工艺品*手工陶瓷杯" in page.text
    pdf = client.post("/preview/pdf", data=form)
    assert pdf.status_code == 200 and pdf.data.startswith(b"%PDF")
    assert client.post("/preview", data={"order": "{"}).status_code == 422
