"""Batched transitions (a batched UnitOfWork): one guarded UPDATE per row, races caught, and
the payload sent under a serial is the same whether built fresh or from the database."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app import db
from app.errors import InvalidTransition, Problem
from app.integrations.tax.base import IssueRequest
from app.jobs import queues
from app.models import Invoice, InvoiceEvent, InvoiceRequest
from app.services import decide, issue
from app.services.intake import ingest
from app.services.issue import invoice_document
from app.services.issuing_control import pause_status
from app.services.transitions import PendingMoves, move_request
from app.services.unit_of_work import UnitOfWork, unit_of_work
from tests.factories import gen_order_doc


def S():
    return queues.current_settings()


def _ingest(order_id: str) -> int:
    doc = gen_order_doc("pipe-shop", order_id)
    for key in [k for k, v in doc.items() if v is None]:
        del doc[key]
    with unit_of_work() as work:
        result = ingest(work, [doc])
    return result.accepted[0]["request_id"]


def test_moves_of_one_row_are_one_update_with_every_event(shop):
    request_id = _ingest("B1")
    with unit_of_work(batched=True) as work:
        session = work.session
        request = session.get(InvoiceRequest, request_id)
        version = request.state_version
        move_request(work, request, "deciding", expect="received")
        move_request(work, request, "held", expect="deciding", reason="needs a look")
        # Nothing written yet: the row still says received.
        assert session.execute(select(InvoiceRequest.status).where(
            InvoiceRequest.id == request_id)).scalar() == "received"
    with db.transaction() as session:
        request = session.get(InvoiceRequest, request_id)
        assert (request.status, request.state_version, request.status_reason) == ("held", version + 2, "needs a look")
        story = [(e.from_state, e.to_state) for e in session.scalars(
            select(InvoiceEvent).where(InvoiceEvent.request_id == request_id).order_by(InvoiceEvent.id))]
    assert story[-2:] == [("received", "deciding"), ("deciding", "held")]


def test_a_row_changed_since_loading_fails_the_batch_and_writes_nothing(shop):
    request_id = _ingest("B2")
    session = db.SessionFactory()
    try:
        request = session.get(InvoiceRequest, request_id)
        session.commit()  # the object stays loaded (expire_on_commit=False), as read
        with unit_of_work() as other:  # another worker gets there first
            move_request(other, request_id, "deciding", expect="received")
        events_before = _event_count(request_id)
        work = UnitOfWork(session, batched=True)
        move_request(work, request, "deciding", expect="received")  # checked against what was loaded
        with pytest.raises(InvalidTransition):
            work.flush()
        session.rollback()
    finally:
        session.close()
    assert _event_count(request_id) == events_before


def test_a_wrong_transition_is_refused_at_once(shop):
    request_id = _ingest("B3")
    with unit_of_work(batched=True) as work:
        request = work.session.get(InvoiceRequest, request_id)
        with pytest.raises(InvalidTransition):
            move_request(work, request, "issued", expect="received")


def test_what_a_unit_of_work_holds_is_written_by_the_commit(shop):
    """The one way batching could be misused, committing the session without flushing the unit
    of work, loses nothing: the commit writes what it holds (and a race fails the commit)."""
    request_id = _ingest("B8")
    session = db.SessionFactory()
    try:
        work = UnitOfWork(session, batched=True)
        move_request(work, session.get(InvoiceRequest, request_id), "deciding", expect="received")
        assert _event_count(request_id) == 1  # held: only order_received is in the log
        session.commit()
    finally:
        session.close()
    assert _event_count(request_id) == 2
    with db.transaction() as check:
        assert check.get(InvoiceRequest, request_id).status == "deciding"


def test_decide_falls_back_one_by_one_when_the_batch_races(shop, sandbox, monkeypatch):
    ids = [_ingest(f"B4{n}") for n in range(3)]
    real = PendingMoves.write
    calls = {"n": 0}

    def flaky(self, session):  # the first batched write loses a race
        calls["n"] += 1
        if calls["n"] == 1 and self.moves:
            raise InvalidTransition(Problem("status", "invalid_transition", "simulated race"))
        return real(self, session)

    monkeypatch.setattr(PendingMoves, "write", flaky)
    outcome = decide.decide_requests(ids, S())
    assert outcome.counts["issuing"] == 3 and outcome.counts["issue_poll_issued"] == 3
    with db.transaction() as session:
        assert {r.status for r in session.scalars(select(InvoiceRequest).where(InvoiceRequest.id.in_(ids)))} == {
            "issued"}
        assert session.query(Invoice).count() == 3
    assert len(sandbox.invoices()) == 3


def test_the_payload_of_a_serial_does_not_depend_on_where_it_was_built(shop, sandbox):
    request_id = _ingest("B5")
    decide.decide_requests([request_id], S(), issue_now=False)
    with db.transaction() as session:
        invoice = session.scalar(select(Invoice).where(Invoice.request_id == request_id))
        stored = IssueRequest.from_draft_invoice(invoice.serial_no, invoice_document(invoice))
        [part] = _fresh_parts(session, request_id)
    fresh = IssueRequest.from_draft_invoice(invoice.serial_no, part)
    assert fresh.to_dict() == stored.to_dict()
    assert any("." in line.get("unit_price", "") or line.get("quantity") for line in stored.to_dict()["lines"])


def _fresh_parts(session, request_id: int) -> list[dict]:
    from app.engine.contract import parse_order
    from app.models import Shop
    from app.rules import decide
    from app.services.context import compose_for, ruleset_for

    request = session.get(InvoiceRequest, request_id)
    shop = session.get(Shop, request.order.shop_id)
    decision = decide(request.order.document, ruleset=ruleset_for(session, shop))
    return compose_for(session, parse_order(request.order.document, validate=False), shop, decision)["invoices"]


def _event_count(request_id: int) -> int:
    with db.transaction() as session:
        return session.query(InvoiceEvent).filter(InvoiceEvent.request_id == request_id).count()


def test_one_rate_limited_batch_call_is_one_failure_not_an_outage(shop, sandbox):
    ids = [_ingest(f"B6{n}") for n in range(8)]  # more than OUTAGE_THRESHOLD invoices, one call
    decide.decide_requests(ids, S(), issue_now=False)
    with db.transaction() as session:
        invoice_ids = list(session.scalars(select(Invoice.id).where(Invoice.request_id.in_(ids))))
    sandbox.faults(calls={"issue": {"mode": "rate_limit", "count": 1}})
    outcome = issue.issue_invoices(invoice_ids, S())
    assert outcome.counts == {"retry": 8}
    with db.transaction() as session:
        assert pause_status(session) is None
        assert {i.status for i in session.scalars(select(Invoice))} == {"ready"}


def test_an_order_updated_while_it_is_decided_is_decided_again_from_the_new_data(shop, sandbox):
    request_id = _ingest("B7")
    deciding = db.SessionFactory()
    try:
        request = deciding.get(InvoiceRequest, request_id)  # a worker read the old title
        deciding.commit()
        newer = gen_order_doc("pipe-shop", "B7", invoice_request={
            "kind": "normal", "title_type": "enterprise", "title": "北京新抬头科技有限公司", "tax_id": "91110000600037341L"})
        newer["extensions"] = {"source_updated_at": "2099-01-01T00:00:00Z"}
        for key in [k for k, v in newer.items() if v is None]:
            del newer[key]
        with unit_of_work() as work:
            result = ingest(work, [newer])
        assert not result.rejected, result.rejected
        assert result.accepted[0]["outcome"] == "updated"
        stale = UnitOfWork(deciding, batched=True)
        move_request(stale, request, "deciding", expect="received")
        with pytest.raises(InvalidTransition):
            stale.flush()
        deciding.rollback()
    finally:
        deciding.close()
    decide.decide_requests([request_id], S())
    with db.transaction() as session:
        [invoice] = session.scalars(select(Invoice).where(Invoice.request_id == request_id)).all()
        assert invoice.buyer["name"] == "北京新抬头科技有限公司" and invoice.status == "issued"
