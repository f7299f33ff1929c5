"""A merchant-scoped user (merchant, cs_agent) sees and acts on its own merchant's rows only: the
admin's lists, details (they answered 500 on PostgreSQL: ``integer = character varying``) and
export, the operator actions and the rules dry-run on stored orders."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app.errors import Refused
from app.models import Invoice, InvoiceRequest, Merchant, Order, SellerEntity, Shop, SkuTaxMapping, User
from app.services import operator_actions
from app.services.rule_dry_run import stored_order
from app.services.unit_of_work import unit_of_work
from tests.factories import gen_merchant_rows

SCOPED_VIEWS = ("merchants", "sellers", "shops", "sku_mappings", "orders", "requests", "invoices")
CS_AGENT_VIEWS = ("orders", "requests", "invoices")


def _marker(session, endpoint: str, row_id: int) -> str:
    """Text the row's list and details pages show, and no other row's."""
    if endpoint in ("merchants", "sellers", "shops"):
        model = {"merchants": Merchant, "sellers": SellerEntity, "shops": Shop}[endpoint]
        return session.get(model, row_id).name
    if endpoint == "sku_mappings":
        return session.get(SkuTaxMapping, row_id).match_value
    if endpoint == "orders":
        return session.get(Order, row_id).order_no
    if endpoint == "requests":
        return session.get(InvoiceRequest, row_id).title
    return session.get(Invoice, row_id).serial_no


@pytest.fixture
def rows(db_session) -> dict[str, Any]:
    mine = gen_merchant_rows(db_session, "商户甲有限公司")
    theirs = gen_merchant_rows(db_session, "商户乙有限公司")
    db_session.commit()
    markers = {side: {e: _marker(db_session, e, ids[e]) for e in SCOPED_VIEWS}
               for side, ids in (("mine", mine), ("theirs", theirs))}
    return {"mine": mine, "theirs": theirs, "markers": markers}


@pytest.mark.parametrize("role", ["merchant", "cs_agent"])
def test_scoped_details_pages(client, login, rows, role):
    login(role, merchant_id=rows["mine"]["merchants"])
    for endpoint in SCOPED_VIEWS:
        own = client.get(f"/admin/{endpoint}/details/?id={rows['mine'][endpoint]}")
        if role == "cs_agent" and endpoint not in CS_AGENT_VIEWS:
            assert own.status_code == 403, endpoint
            continue
        assert own.status_code == 200, (endpoint, own.status_code, own.text[-500:])
        assert rows["markers"]["mine"][endpoint] in own.text, endpoint
        # Another merchant's row: as if it did not exist (Flask-Admin's redirect to the list).
        other = client.get(f"/admin/{endpoint}/details/?id={rows['theirs'][endpoint]}")
        assert other.status_code == 302, (endpoint, other.status_code)
        assert rows["markers"]["theirs"][endpoint] not in other.text
        for junk in ("abc", "1" * 30, "-1", "٣"):
            assert client.get(f"/admin/{endpoint}/details/?id={junk}").status_code == 302, (endpoint, junk)


@pytest.mark.parametrize("role", ["merchant", "cs_agent"])
def test_scoped_lists_and_export(client, login, rows, role, monkeypatch):
    from app.admin.base import SecureModelView

    login(role, merchant_id=rows["mine"]["merchants"])
    # No scoped view exports today; should one, its export must be scoped too.
    monkeypatch.setattr(SecureModelView, "can_export", True)
    for endpoint in (CS_AGENT_VIEWS if role == "cs_agent" else SCOPED_VIEWS):
        for url in (f"/admin/{endpoint}/", f"/admin/{endpoint}/export/csv/"):
            page = client.get(url)
            assert page.status_code == 200, (url, page.status_code)
            assert rows["markers"]["mine"][endpoint] in page.text, url
            assert rows["markers"]["theirs"][endpoint] not in page.text, url


def test_global_roles_see_every_merchant(client, login, rows):
    login("operations")
    for endpoint in CS_AGENT_VIEWS:
        page = client.get(f"/admin/{endpoint}/").text
        assert rows["markers"]["mine"][endpoint] in page and rows["markers"]["theirs"][endpoint] in page
        assert client.get(f"/admin/{endpoint}/details/?id={rows['theirs'][endpoint]}").status_code == 200


def test_scoped_user_without_a_merchant_sees_nothing(client, login, rows):
    login("cs_agent")
    for endpoint in CS_AGENT_VIEWS:
        page = client.get(f"/admin/{endpoint}/").text
        assert not any(rows["markers"][side][endpoint] in page for side in ("mine", "theirs"))


def test_operator_actions_refuse_another_merchants_rows(db_session, settings, rows):
    mine, theirs = rows["mine"], rows["theirs"]
    actions = [
        lambda work, ids: operator_actions.retry_failed(work, ids["invoices"], "cs", merchant_id=mine["merchants"]),
        lambda work, ids: operator_actions.query_invoice(work, ids["invoices"], settings,
                                                         merchant_id=mine["merchants"]),
        lambda work, ids: operator_actions.redecide(work, ids["requests"], "cs", merchant_id=mine["merchants"]),
        lambda work, ids: operator_actions.skip_held(work, ids["requests"], "cs", merchant_id=mine["merchants"]),
    ]
    for act in actions:
        with pytest.raises(Refused) as refused, unit_of_work() as work:
            act(work, theirs)
        assert refused.value.code == "not_found"
    db_session.rollback()  # a fresh transaction: see what the units of work committed
    assert db_session.get(Invoice, theirs["invoices"]).status == "failed"
    assert db_session.get(InvoiceRequest, theirs["requests"]).status == "held"
    with unit_of_work() as work:
        operator_actions.skip_held(work, mine["requests"], "cs", merchant_id=mine["merchants"])
        operator_actions.retry_failed(work, mine["invoices"], "cs", merchant_id=mine["merchants"])
    db_session.rollback()  # a fresh transaction: see what the units of work committed
    assert db_session.get(InvoiceRequest, mine["requests"]).status == "skipped"


def test_dry_run_finds_only_the_scoped_merchants_stored_orders(db_session, rows):
    mine, theirs = rows["mine"], rows["theirs"]
    theirs_order = db_session.get(Order, theirs["orders"])
    for raw in (str(theirs["orders"]), theirs_order.key):
        assert stored_order(db_session, raw, merchant_id=mine["merchants"]) is None
        assert stored_order(db_session, raw).id == theirs["orders"]
    assert stored_order(db_session, str(mine["orders"]), merchant_id=mine["merchants"]).id == mine["orders"]
    assert stored_order(db_session, "9" * 30) is None


def test_admin_user_form_requires_a_merchant_for_scoped_roles(client, login, db_session, rows):
    login("admin")
    form = {"username": "cs-no-merchant", "roles": "cs_agent", "new_password": "correct-horse-battery",
            "active": "y"}
    page = client.post("/admin/users/new/", data=form, follow_redirects=True)
    assert page.status_code == 200
    assert "need a merchant" in page.text or "必须指定所属商户" in page.text
    db_session.rollback()
    assert db_session.scalar(select(User).where(User.username == "cs-no-merchant")) is None
    form.update(username="cs-with-merchant", merchant=str(rows["mine"]["merchants"]))
    client.post("/admin/users/new/", data=form)
    db_session.rollback()
    created = db_session.scalar(select(User).where(User.username == "cs-with-merchant"))
    assert created is not None and created.merchant_id == rows["mine"]["merchants"]
