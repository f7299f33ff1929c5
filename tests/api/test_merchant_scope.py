"""Merchant-scoped roles (merchant, cs_agent) write and read only their own merchant's orders:
the API refuses another merchant's shop with 403 naming the path, and writes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from app.models import InvoiceEvent, InvoiceRequest, Order
from app.services.accounts import issue_api_token
from tests.factories import gen_merchant, gen_order_doc, gen_shop, gen_user

SELLER = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}


@pytest.fixture
def two_merchants(app, db_session) -> dict[str, Any]:
    mine, theirs = gen_merchant(db_session, "我的商户"), gen_merchant(db_session, "别人的商户")
    gen_shop(db_session, mine, shop_code="mine-shop")
    gen_shop(db_session, theirs, shop_code="their-shop")
    agent = gen_user(db_session, "cs_agent", merchant_id=mine.id)
    ops = gen_user(db_session, "operations")
    tokens = {"cs_agent": issue_api_token(agent), "operations": issue_api_token(ops)}
    db_session.commit()
    return {"mine": mine, "theirs": theirs, "tokens": tokens}


def _post(app, token: str, body: Any, path: str = "/api/v1/orders"):
    return app.test_client().post(path, json=body, headers={"Authorization": f"Bearer {token}"})


def _counts(db_session) -> tuple[int, int, int]:
    db_session.rollback()
    return tuple(db_session.scalar(select(func.count()).select_from(m))  # type: ignore[return-value]
                 for m in (Order, InvoiceRequest, InvoiceEvent))


def test_cs_agent_cannot_repost_another_merchants_order(app, db_session, two_merchants):
    """The audit's reproduction: the same order id with a new buyer title, re-posted by a cs_agent
    of another merchant, used to be accepted (and issued)."""
    tokens = two_merchants["tokens"]
    original = gen_order_doc("their-shop", "THEIRS-1")
    assert _post(app, tokens["operations"], original).status_code == 200
    before = _counts(db_session)
    stored = db_session.scalar(select(Order).where(Order.order_no == "THEIRS-1"))
    digest = stored.document_hash

    forged = gen_order_doc("their-shop", "THEIRS-1", received_at="2026-11-15T10:20:00+08:00")
    forged["invoice_request"] = {"kind": "normal", "title_type": "enterprise", "title": "冒名公司",
                                 "tax_id": "91330106MA2B3C4D5D"}
    response = _post(app, tokens["cs_agent"], forged)

    assert response.status_code == 403, response.text
    assert response.json["errors"] == [{"path": "shop_id", "code": "forbidden", "message": response.json["errors"][0]["message"]}]
    assert "their-shop" in response.json["errors"][0]["message"]
    assert _counts(db_session) == before
    db_session.expire_all()
    assert db_session.scalar(select(Order.document_hash).where(Order.order_no == "THEIRS-1")) == digest
    assert db_session.scalar(select(InvoiceRequest.title).where(InvoiceRequest.order_pk == stored.id)) == "个人"


def test_cs_agent_writes_its_own_merchants_orders(app, db_session, two_merchants):
    response = _post(app, two_merchants["tokens"]["cs_agent"], gen_order_doc("mine-shop", "MINE-1"))
    assert response.status_code == 200, response.text
    assert response.json["counts"] == {"accepted": 1, "rejected": 0}


def test_a_batch_naming_another_merchants_shop_writes_nothing(app, db_session, two_merchants):
    before = _counts(db_session)
    batch = {"orders": [gen_order_doc("mine-shop", "MINE-2"), gen_order_doc("their-shop", "THEIRS-2"),
                        gen_order_doc("nowhere-shop", "NOWHERE-1")]}
    response = _post(app, two_merchants["tokens"]["cs_agent"], batch)
    assert response.status_code == 403, response.text
    # An unknown shop and another merchant's shop get the same answer: nothing to learn about others.
    assert [(e["path"], e["code"]) for e in response.json["errors"]] == [
        ("orders[1].shop_id", "forbidden"), ("orders[2].shop_id", "forbidden")]
    assert response.json["errors"][0]["message"].replace("their-shop", "nowhere-shop") == response.json["errors"][1]["message"]
    assert _counts(db_session) == before


def test_cs_agent_without_a_merchant_writes_nothing(app, db_session, two_merchants):
    stray = gen_user(db_session, "cs_agent")
    token = issue_api_token(stray)
    db_session.commit()
    assert _post(app, token, gen_order_doc("mine-shop", "STRAY-1")).status_code == 403
    assert _counts(db_session) == (0, 0, 0)


def test_global_roles_write_any_merchants_orders(app, db_session, two_merchants):
    for code in ("mine-shop", "their-shop"):
        assert _post(app, two_merchants["tokens"]["operations"], gen_order_doc(code)).status_code == 200


def test_preview_refuses_another_merchants_stored_shop(app, db_session, two_merchants):
    """A merchant-scoped caller never gets another merchant's seller data or rules; anonymous
    callers still get the stateless preview."""
    tokens = two_merchants["tokens"]
    theirs = {"order": gen_order_doc("their-shop", "P-1")}
    response = _post(app, tokens["cs_agent"], theirs, "/api/v1/preview")
    assert response.status_code == 403, response.text
    assert response.json["errors"][0]["path"] == "order.shop_id"
    mine = _post(app, tokens["cs_agent"], {"order": gen_order_doc("mine-shop", "P-2")}, "/api/v1/preview")
    assert mine.status_code == 200, mine.text
    assert _post(app, tokens["operations"], theirs, "/api/v1/preview").status_code == 200
    anonymous = app.test_client().post("/api/v1/preview", json={**theirs, "seller": SELLER})
    assert anonymous.status_code == 200, anonymous.text
