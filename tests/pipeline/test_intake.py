"""Order intake: validated one by one, upserted idempotently, queued through the outbox."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.models import InvoiceEvent, InvoiceRequest, Order, OutboxMessage
from app.services.intake import ingest, source_version
from app.services.unit_of_work import UnitOfWork
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
    result = ingest(UnitOfWork(db_session), [good, bad, "not an object", unknown_field, other_shop])
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
    first = ingest(UnitOfWork(db_session), [doc])
    db_session.commit()
    again = ingest(UnitOfWork(db_session), [copy.deepcopy(doc)])
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
    ingest(UnitOfWork(db_session), [received])
    db_session.commit()
    stale = ingest(UnitOfWork(db_session), [paid])
    db_session.commit()
    assert stale.accepted[0]["outcome"] == "stale"
    assert db_session.scalar(select(Order.status)) == "received"
    kinds = db_session.scalars(select(InvoiceEvent.kind)).all()
    assert "order_stale_ignored" in kinds


def test_update_of_undecided_order_requeues_decision(db_session):
    gen_shop(db_session, shop_code="s1")
    doc = gen_order_doc("s1", "D1", status="shipped")
    doc.pop("received_at")
    ingest(UnitOfWork(db_session), [doc])
    db_session.commit()
    db_session.execute(OutboxMessage.__table__.update().values(dispatched_at=func.now()))
    db_session.commit()
    newer = gen_order_doc("s1", "D1", status="received")
    newer["lines"][0]["quantity"] = "3"
    result = ingest(UnitOfWork(db_session), [newer])
    db_session.commit()
    assert result.accepted[0]["outcome"] == "updated"
    order = db_session.scalar(select(Order))
    assert order.lines[0].quantity == Decimal("3")
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
    from app.services.accounts import issue_api_token
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


# ------------------------------------------------------------------ batch upsert and its fallback


def _events(session, order_pk) -> list[str]:
    return session.scalars(select(InvoiceEvent.kind).where(InvoiceEvent.order_pk == order_pk)
                           .order_by(InvoiceEvent.id)).all()


def _decisions(session, after: int = 0) -> list[int]:
    """Request ids of the decisions queued in outbox rows after row ``after``, in order."""
    return [m.args[0] for m in session.scalars(select(OutboxMessage).where(OutboxMessage.id > after)
                                               .order_by(OutboxMessage.id))]


def _last_outbox_id(session) -> int:
    return session.scalar(select(func.coalesce(func.max(OutboxMessage.id), 0)))


def test_batch_mixing_new_updated_unchanged_stale_and_invalid(db_session):
    gen_shop(db_session, shop_code="s1")
    shipped = gen_order_doc("s1", "U1", status="shipped")
    shipped.pop("received_at")
    received = gen_order_doc("s1", "S1")
    same = gen_order_doc("s1", "N1")
    issued = gen_order_doc("s1", "I1")
    first = ingest(UnitOfWork(db_session), [shipped, received, same, issued])
    db_session.commit()
    issued_pk = first.accepted[3]["order_pk"]
    db_session.execute(InvoiceRequest.__table__.update().where(InvoiceRequest.order_pk == issued_pk)
                       .values(status="issued"))
    db_session.commit()
    mark = _last_outbox_id(db_session)

    updated = gen_order_doc("s1", "U1")
    updated["lines"][0]["quantity"] = "3"
    stale = copy.deepcopy(received)
    stale["status"] = "paid"
    stale.pop("received_at")
    bad = gen_order_doc("s1", "X1")
    bad["lines"][0]["unit_price"] = "12.3.4"
    changed_after_issue = gen_order_doc("s1", "I1", remark="please change the title")
    docs = [gen_order_doc("s1", "A1"), updated, bad, stale, copy.deepcopy(same), changed_after_issue,
            gen_order_doc("elsewhere", "E1"), gen_order_doc("s1", "B1")]
    result = ingest(UnitOfWork(db_session), docs)
    db_session.commit()

    outcomes = [(a["index"], a["key"], a["outcome"]) for a in result.accepted]
    assert outcomes == [(0, "tmall:s1:A1", "created"), (1, "tmall:s1:U1", "updated"), (3, "tmall:s1:S1", "stale"),
                        (4, "tmall:s1:N1", "unchanged"), (5, "tmall:s1:I1", "updated"), (7, "tmall:s1:B1", "created")]
    assert [(r["index"], r["errors"][0]["code"]) for r in result.rejected] == [(2, "invalid"), (6, "unknown_shop")]
    assert result.rejected[0]["errors"][0]["path"] == "lines[0].unit_price"
    for entry in result.accepted:  # every entry names its stored order and latest request
        order = db_session.get(Order, entry["order_pk"])
        assert order.key == entry["key"]
        latest = db_session.scalar(select(func.max(InvoiceRequest.id)).where(InvoiceRequest.order_pk == order.id))
        assert entry["request_id"] == latest
    by_key = {a["key"]: a for a in result.accepted}
    assert db_session.get(Order, by_key["tmall:s1:U1"]["order_pk"]).lines[0].quantity == Decimal("3")
    assert db_session.get(Order, by_key["tmall:s1:S1"]["order_pk"]).status == "received"
    assert _events(db_session, by_key["tmall:s1:A1"]["order_pk"]) == ["order_received"]
    assert _events(db_session, by_key["tmall:s1:U1"]["order_pk"]) == ["order_received", "order_updated"]
    assert _events(db_session, by_key["tmall:s1:S1"]["order_pk"]) == ["order_received", "order_stale_ignored"]
    assert _events(db_session, by_key["tmall:s1:N1"]["order_pk"]) == ["order_received"]
    assert _events(db_session, issued_pk) == ["order_received", "order_updated", "order_changed_after_issue"]
    # decisions queued for the two new orders and the undecided update, not for the issued one
    assert _decisions(db_session, mark) == [by_key[k]["request_id"] for k in ("tmall:s1:A1", "tmall:s1:U1", "tmall:s1:B1")]
    assert _count(db_session, Order) == 6


def test_same_key_twice_in_one_batch_behaves_as_one_after_the_other(db_session):
    """The same documents, once as one batch (shop b) and once one call each (shop q)."""
    for code in ("b", "q"):
        gen_shop(db_session, shop_code=code)
    db_session.commit()

    def story(shop):
        v1 = gen_order_doc(shop, "K1", status="shipped")
        v1.pop("received_at")
        v2 = gen_order_doc(shop, "K1")
        v2["lines"][1]["quantity"] = "4"
        v3 = copy.deepcopy(v2)
        v3["refunds"] = [{"refund_id": "r1", "line_id": "2", "quantity": "1", "amount": "59.90", "status": "success",
                          "created_at": "2026-11-15T10:00:00+08:00"}]
        return [v1, v2, copy.deepcopy(v1), copy.deepcopy(v2), v3, gen_order_doc(shop, "M1"), copy.deepcopy(v3)]

    batch = ingest(UnitOfWork(db_session), story("b"))
    db_session.commit()
    one_by_one = []
    for doc in story("q"):
        one_by_one += [dict(a, index=len(one_by_one)) for a in ingest(UnitOfWork(db_session), [doc]).accepted]
        db_session.commit()

    assert [a["outcome"] for a in batch.accepted] == [a["outcome"] for a in one_by_one] == [
        "created", "updated", "stale", "unchanged", "updated", "created", "unchanged"]

    def stored(shop):
        orders = db_session.scalars(select(Order).where(Order.shop_code == shop).order_by(Order.order_no)).all()
        out = []
        for order in orders:
            requests = db_session.scalars(select(InvoiceRequest).where(InvoiceRequest.order_pk == order.id)).all()
            decisions = [m for m in _decisions(db_session) if m in [r.id for r in requests]]
            out.append((order.order_no, order.status, order.source_version, order.document_hash,
                        [(ln.line_id, ln.position, ln.quantity) for ln in order.lines],
                        [(r.refund_id, r.quantity) for r in order.refunds],
                        [(r.status, r.title) for r in requests], _events(db_session, order.id), len(decisions)))
        return out

    b, q = stored("b"), stored("q")
    assert [row[1:3] + row[4:] for row in b] == [row[1:3] + row[4:] for row in q]
    assert b[0][7] == ["order_received", "order_updated", "order_stale_ignored", "order_updated"]
    assert b[0][8] == 3  # created, updated, updated: one decision queued each, as one call each would


def test_batch_falls_back_to_one_savepoint_per_order_on_conflict(db_session, monkeypatch):
    """Another process stored X between our lookup and our flush (simulated: the batch lookup
    misses it once, so the batch INSERT hits the unique key); an order the database refuses
    (FK to a shop that is not there) fails alone with a storage error."""
    from app.services import intake

    shop = gen_shop(db_session, shop_code="s1")
    existing = gen_order_doc("s1", "X1")
    ingest(UnitOfWork(db_session), [existing])
    db_session.commit()
    mark = _last_outbox_id(db_session)

    real_lookup = intake._existing_orders
    calls = []

    def lookup_missing_x_once(session, keys):
        found = real_lookup(session, keys)
        calls.append(len(found))
        if len(calls) == 1:
            found.pop(("tmall", "s1", "X1"))
        return found

    real_fill = intake._fill_order

    def refuse_bad(order, item, version):
        real_fill(order, item, version)
        if item.doc["order_id"] == "BAD":
            order.shop_id = shop.id + 10_000  # no such shop: the database refuses the row

    monkeypatch.setattr(intake, "_existing_orders", lookup_missing_x_once)
    monkeypatch.setattr(intake, "_fill_order", refuse_bad)
    invalid = gen_order_doc("s1", "V1", currency="USD")
    docs = [gen_order_doc("s1", "G1"), copy.deepcopy(existing), invalid, gen_order_doc("s1", "BAD"),
            gen_order_doc("s1", "G2")]
    result = ingest(UnitOfWork(db_session), docs)
    db_session.commit()

    assert len(calls) == 1 + 4  # the batch, then one lookup per valid order
    assert [(a["index"], a["key"], a["outcome"]) for a in result.accepted] == [
        (0, "tmall:s1:G1", "created"), (1, "tmall:s1:X1", "unchanged"), (4, "tmall:s1:G2", "created")]
    assert [r["index"] for r in result.rejected] == [2, 3]
    assert result.rejected[0]["errors"][0]["path"] == "currency"
    storage = result.rejected[1]["errors"][0]
    assert storage["code"] == "storage_error" and "IntegrityError" in storage["message"]
    assert sorted(db_session.scalars(select(Order.order_no))) == ["G1", "G2", "X1"]
    # nothing of the rolled-back batch is left behind: one event and one decision per new order
    assert _count(db_session, InvoiceRequest) == 3
    assert db_session.scalars(select(InvoiceEvent.kind).order_by(InvoiceEvent.id)).all() == ["order_received"] * 3
    assert _decisions(db_session, mark) == [a["request_id"] for a in result.accepted if a["outcome"] == "created"]


def test_order_stored_by_another_session_meanwhile_is_not_lost(db_session, monkeypatch):
    """A real race on PostgreSQL: a second session commits the same order after our lookup;
    our batch INSERT fails on the unique key and the one-by-one retry finds the stored row.
    (SQLite units of work take the write lock up front, so the race cannot happen there.)"""
    from app import db as kdb
    from app.services import intake

    if db_session.get_bind().dialect.name != "postgresql":
        pytest.skip("needs a database with concurrent writers")
    gen_shop(db_session, shop_code="s1")
    db_session.commit()
    racer = gen_order_doc("s1", "R1")
    real_lookup = intake._existing_orders

    def lookup_then_other_process_commits(session, keys):
        found = real_lookup(session, keys)
        if not getattr(lookup_then_other_process_commits, "done", False):
            lookup_then_other_process_commits.done = True
            other = kdb.SessionFactory()
            try:
                assert ingest(UnitOfWork(other), [copy.deepcopy(racer)]).accepted[0]["outcome"] == "created"
                other.commit()
            finally:
                other.close()
        return found

    monkeypatch.setattr(intake, "_existing_orders", lookup_then_other_process_commits)
    result = ingest(UnitOfWork(db_session), [gen_order_doc("s1", "R0"), racer, gen_order_doc("s1", "R2")])
    db_session.commit()
    assert [a["outcome"] for a in result.accepted] == ["created", "unchanged", "created"]
    assert result.rejected == []
    assert _count(db_session, Order) == 3
    assert _count(db_session, InvoiceRequest) == 3


def test_batch_statements_do_not_grow_with_the_batch(db_session):
    """No per-order SELECT or SAVEPOINT: 40 orders cost the statements of 2. (On PostgreSQL
    the INSERTs are batched too; SQLite's ORM inserts stay one row per statement.)"""
    from sqlalchemy import event

    gen_shop(db_session, shop_code="s1")
    ingest(UnitOfWork(db_session), [gen_order_doc("s1", f"W{i}") for i in range(3)])
    db_session.commit()
    engine = db_session.get_bind()

    def statements(docs) -> list[str]:
        seen: list[str] = []
        listener = lambda *args: seen.append(args[2].split("(")[0].split(" WHERE")[0])  # noqa: E731
        event.listen(engine, "before_cursor_execute", listener)
        try:
            result = ingest(UnitOfWork(db_session), docs)
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        db_session.commit()
        assert not result.rejected
        return seen

    small = statements([gen_order_doc("s1", f"A{i}") for i in range(2)] + [gen_order_doc("s1", "W0", remark="x")])
    large = statements([gen_order_doc("s1", f"B{i}") for i in range(40)]
                       + [gen_order_doc("s1", f"W{i}", remark="x") for i in range(1, 3)])
    if engine.dialect.name == "postgresql":
        assert large == small
    else:
        assert [s for s in large if not s.startswith("INSERT")] == [s for s in small if not s.startswith("INSERT")]
    assert sum(s.startswith("SAVEPOINT") for s in large) == 1


def test_unusable_times_are_rejected_not_fatal(db_session):
    gen_shop(db_session, shop_code="s1")
    garbage = gen_order_doc("s1", "T1", extensions={"source_updated_at": "yesterday"})
    overflow = gen_order_doc("s1", "T2", paid_at="0001-01-01T00:00:00+08:00")
    lower_z = gen_order_doc("s1", "T4", paid_at="2026-11-10t16:01:02z")  # RFC 3339 allows lower case
    result = ingest(UnitOfWork(db_session), [garbage, gen_order_doc("s1", "T3"), overflow, lower_z])
    db_session.commit()
    assert [a["key"] for a in result.accepted] == ["tmall:s1:T3", "tmall:s1:T4"]
    assert [(r["index"], r["errors"][0]["path"]) for r in result.rejected] == [
        (0, "extensions.source_updated_at"), (2, "paid_at")]
    stored = db_session.get(Order, result.accepted[1]["order_pk"])
    assert stored.paid_at == datetime(2026, 11, 10, 16, 1, 2, tzinfo=UTC)


def test_paid_and_invoice_amounts_are_shown_for_every_order(db_session, client, login):
    """实付 and 应开票金额 come from the platform when it gives them, else from the lines: the
    demo's generated orders carry neither and showed empty columns."""
    gen_shop(db_session, shop_code="s1")
    given = gen_order_doc("s1", "M1", invoice_amount="240.00")  # paid_amount 247.90 given too
    computed = gen_order_doc("s1", "M2", paid_amount=None)
    del computed["paid_amount"]
    computed["lines"][1]["platform_discount"] = "5.00"
    computed["refunds"] = [{"refund_id": "r1", "amount": "30.00", "status": "success"}]
    result = ingest(UnitOfWork(db_session), [given, computed])
    db_session.commit()
    assert not result.rejected
    orders = {o.order_no: o for o in db_session.scalars(select(Order))}
    assert (orders["M1"].paid_amount, orders["M1"].invoice_amount) == (Decimal("247.90"), Decimal("240.00"))
    # 2 × 99.00 + 59.90 − 20.00 + 10.00 = 247.90 − 5.00 platform coupon paid = 242.90;
    # to invoice: 247.90 (platform coupons are invoiced) − 30.00 refunded = 217.90
    assert (orders["M2"].paid_amount, orders["M2"].invoice_amount) == (Decimal("242.90"), Decimal("217.90"))
    login("operations")
    page = client.get("/admin/orders/").get_data(as_text=True)
    assert "242.90" in page and "217.90" in page
