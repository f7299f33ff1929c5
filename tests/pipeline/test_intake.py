"""Order intake: validated one by one, upserted idempotently, queued through the outbox."""

from __future__ import annotations

import copy

from sqlalchemy import func, select

from app.engine.intake import ingest, source_version
from app.models import InvoiceEvent, InvoiceRequest, Order, OutboxMessage
from tests.factories import gen_order_doc, gen_shop


def _count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_bad_orders_rejected_one_by_one_rest_accepted(db_session):
    shop = gen_shop(db_session, shop_code="s1")
    good = gen_order_doc("s1", "A1")
    bad = gen_order_doc("s1", "A2")
    bad["lines"][0]["unit_price"] = "12.3.4"
    unknown_field = gen_order_doc("s1", "A3", colour="red")
    other_shop = gen_order_doc("nope", "A4")
    result = ingest(db_session, [good, bad, "not an object", unknown_field, other_shop])
    db_session.commit()
    assert [a["key"] for a in result.accepted] == ["tmall:s1:A1"]
    by_index = {r["index"]: r for r in result.rejected}
    assert set(by_index) == {1, 2, 3, 4}
    assert by_index[1]["errors"][0]["path"] == "lines[0].unit_price"
    assert any(e["path"] == "colour" for e in by_index[3]["errors"])
    assert by_index[4]["errors"][0]["code"] == "unknown_shop"
    assert _count(db_session, Order) == 1
    assert shop.id == db_session.scalar(select(Order.shop_id))


def test_same_order_twice_is_idempotent(db_session):
    gen_shop(db_session, shop_code="s1")
    doc = gen_order_doc("s1", "B1")
    first = ingest(db_session, [doc])
    db_session.commit()
    again = ingest(db_session, [copy.deepcopy(doc)])
    db_session.commit()
    assert first.accepted[0]["outcome"] == "created"
    assert again.accepted[0]["outcome"] == "unchanged"
    assert _count(db_session, Order) == 1
    assert _count(db_session, InvoiceRequest) == 1
    assert _count(db_session, OutboxMessage) == 1  # one decision queued, not two


def test_newer_version_updates_older_never_overwrites(db_session):
    gen_shop(db_session, shop_code="s1")
    paid = gen_order_doc("s1", "C1", status="paid")
    paid.pop("received_at")
    received = gen_order_doc("s1", "C1", status="received")
    assert source_version(paid) < source_version(received)
    ingest(db_session, [received])
    db_session.commit()
    stale = ingest(db_session, [paid])
    db_session.commit()
    assert stale.accepted[0]["outcome"] == "stale"
    assert db_session.scalar(select(Order.status)) == "received"
    kinds = db_session.scalars(select(InvoiceEvent.kind)).all()
    assert "order_stale_ignored" in kinds


def test_update_of_undecided_order_requeues_decision(db_session):
    gen_shop(db_session, shop_code="s1")
    doc = gen_order_doc("s1", "D1", status="shipped")
    doc.pop("received_at")
    ingest(db_session, [doc])
    db_session.commit()
    db_session.execute(OutboxMessage.__table__.update().values(dispatched_at=func.now()))
    db_session.commit()
    newer = gen_order_doc("s1", "D1", status="received")
    newer["lines"][0]["quantity"] = "3"
    result = ingest(db_session, [newer])
    db_session.commit()
    assert result.accepted[0]["outcome"] == "updated"
    order = db_session.scalar(select(Order))
    assert str(order.lines[0].quantity) == "3"
    assert _count(db_session, OutboxMessage) == 2


def test_api_orders_roles_and_batch(client, login, db_session):
    gen_shop(db_session, shop_code="s-api")
    db_session.commit()
    assert client.post("/api/v1/orders", json=gen_order_doc("s-api")).status_code == 401
    login("auditor")
    assert client.post("/api/v1/orders", json=gen_order_doc("s-api")).status_code == 403


def test_api_orders_batch_mixed(client, login, db_session):
    gen_shop(db_session, shop_code="s-api2")
    db_session.commit()
    login("operations")
    bad = gen_order_doc("s-api2", "X2")
    bad["lines"] = []
    response = client.post("/api/v1/orders", json={"orders": [gen_order_doc("s-api2", "X1"), bad]})
    assert response.status_code == 200
    body = response.get_json()
    assert body["counts"] == {"accepted": 1, "rejected": 1}
    assert body["rejected"][0]["errors"][0]["path"] == "lines"
    all_bad = client.post("/api/v1/orders", json={"orders": [bad]})
    assert all_bad.status_code == 422
    not_json = client.post("/api/v1/orders", data="{", content_type="application/json")
    assert not_json.status_code == 400 and not_json.get_json()["errors"][0]["code"] == "invalid_json"


def test_api_csrf_for_cookie_sessions_not_for_tokens(app, client, login, db_session):
    from app.auth import issue_api_token
    from tests.factories import gen_user

    gen_shop(db_session, shop_code="s-csrf")
    db_session.commit()
    login("operations")
    app.config["WTF_CSRF_ENABLED"] = True
    refused = client.post("/api/v1/orders", json=gen_order_doc("s-csrf", "K1"))
    assert refused.status_code == 400 and refused.get_json()["errors"][0]["path"] == "headers.X-CSRFToken"
    user = gen_user(db_session, "operations")
    token = issue_api_token(user)
    db_session.commit()
    fresh = app.test_client()  # no cookie: the bearer token alone authenticates, no CSRF needed
    accepted = fresh.post("/api/v1/orders", json=gen_order_doc("s-csrf", "K2"),
                          headers={"Authorization": f"Bearer {token}"})
    assert accepted.status_code == 200 and accepted.get_json()["counts"]["accepted"] == 1
