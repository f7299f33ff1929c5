"""The issuing switches, one per seller entity: their scopes, which invoices a set of paused
switches holds back, and a switch created by two workers at once."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from app import db
from app.models import GatewayStatus, Invoice
from app.services import issuing_control
from app.services.issuing_control import DEFAULT_SCOPE, scope_of, seller_id_of, sending_allowed
from app.services.unit_of_work import unit_of_work
from tests.factories import gen_merchant, gen_seller


def ready_invoice(session, seller_id: int | None) -> int:
    invoice = Invoice(status="ready", serial_no=f"KP-T-{seller_id}", seller_entity_id=seller_id,
                      buyer={"name": "个人"}, seller={"name": "x", "tax_id": "91110000600037341L"},
                      total_amount=Decimal("100.00"), total_tax=Decimal("13.00"), total=Decimal("113.00"))
    session.add(invoice)
    session.flush()
    return invoice.id


def test_scopes_name_a_seller_entity_or_the_default():
    assert (scope_of(None), scope_of(7)) == ("default", "seller:7")
    assert (seller_id_of("default"), seller_id_of("seller:7")) == (None, 7)
    for bad in ("seller:", "seller:x", "7", "Default", "seller:-1"):
        with pytest.raises(ValueError):
            seller_id_of(bad)


def test_paused_switches_hold_back_their_sellers_invoices_only(db_session):
    first = gen_seller(db_session, gen_merchant(db_session))
    second = gen_seller(db_session, gen_merchant(db_session))
    invoices = {seller: ready_invoice(db_session, seller) for seller in (None, first.id, second.id)}

    def sendable(*paused: str) -> set[int | None]:
        ids = set(db_session.scalars(select(Invoice.id).where(sending_allowed(set(paused)))))
        return {seller for seller, invoice_id in invoices.items() if invoice_id in ids}

    assert sendable() == {None, first.id, second.id}
    assert sendable(scope_of(first.id)) == {None, second.id}  # NULL sellers are not lost to NOT IN
    assert sendable(DEFAULT_SCOPE) == {first.id, second.id}
    assert sendable(DEFAULT_SCOPE, scope_of(second.id)) == {first.id}
    assert sendable(DEFAULT_SCOPE, scope_of(first.id), scope_of(second.id)) == set()


def test_a_switch_another_worker_just_created_is_used_not_inserted_twice(db_session, monkeypatch):
    """Two workers record a new seller's first pause at once: the second finds no row when it
    reads, then the first commits its row; the second must update that row, not fail."""
    with db.transaction() as session:
        session.add(GatewayStatus(scope="seller:42", failure_streak=3))
    real = issuing_control._status
    calls = iter([None])
    monkeypatch.setattr(issuing_control, "_status", lambda session, scope: next(calls, real(session, scope)))
    with unit_of_work() as work:
        issuing_control.pause(work, "credit", "monthly credit exhausted", scope="seller:42")
    with db.transaction() as session:
        [status] = session.scalars(select(GatewayStatus)).all()
    assert (status.scope, status.paused, status.pause_code, status.failure_streak) == ("seller:42", True, "credit", 3)
