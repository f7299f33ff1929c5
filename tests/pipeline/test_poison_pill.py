"""One order that fails for a reason of its own (bad data the checks missed, a bug) is set
aside once, with the reason, while its batch-mates proceed: never retried in a loop, never a
failed job that holds up the batch. Each stage that works in batches is shown: deciding,
claiming for issue, and recording the provider's answers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from app import db
from app.engine.clock import utcnow
from app.jobs import queues
from app.models import Invoice, InvoiceEvent, InvoiceRequest, OutboxMessage
from app.services import answers, decide, issue, recovery
from app.services.intake import ingest
from app.services.unit_of_work import unit_of_work
from tests.factories import gen_order_doc


def S():
    return queues.current_settings()


def _ingest(*order_ids: str) -> list[int]:
    with unit_of_work() as work:
        result = ingest(work, [gen_order_doc("pipe-shop", o) for o in order_ids])
    assert not result.rejected, result.rejected
    return [a["request_id"] for a in result.accepted]


def _statuses(request_ids: list[int]) -> list[str]:
    with db.transaction() as session:
        return [session.get(InvoiceRequest, i).status for i in request_ids]


def _invoice_of(request_id: int) -> Invoice:
    with db.transaction() as session:
        return session.scalars(select(Invoice).where(Invoice.request_id == request_id)).one()


def _outbox_decisions(request_id: int) -> int:
    with db.transaction() as session:
        return session.scalar(select(func.count()).select_from(OutboxMessage)
                              .where(OutboxMessage.job_id.contains(f":{request_id}")))


def test_an_order_that_cannot_be_decided_fails_alone_and_once(shop, sandbox, monkeypatch):
    ids = _ingest("OK-1", "POISON", "OK-2")
    real = decide.compose_for

    def compose_for(session, parsed, *args, **kwargs):
        if parsed.order_id == "POISON":
            raise RuntimeError("a bug that only this order's data reaches")
        return real(session, parsed, *args, **kwargs)

    monkeypatch.setattr(decide, "compose_for", compose_for)
    outcome = decide.decide_requests(ids, S())  # returns: the job succeeds, nothing for RQ to retry
    assert _statuses(ids) == ["issued", "failed", "issued"], outcome
    with db.transaction() as session:
        poison = session.get(InvoiceRequest, ids[1])
        assert "RuntimeError: a bug that only this order's data reaches" in poison.status_reason
    # The tick does not bring it back: a person (or a newer version of the order) decides again.
    queued = _outbox_decisions(ids[1])
    recovery.tick(S(), now=utcnow() + timedelta(hours=2))
    assert _outbox_decisions(ids[1]) == queued
    assert _statuses(ids) == ["issued", "failed", "issued"]


def test_an_invoice_that_cannot_be_sent_fails_alone_never_sent(shop, sandbox, monkeypatch):
    ids = _ingest("S-1", "S-BAD", "S-2")
    decide.decide_requests(ids, S(), issue_now=False)
    bad = _invoice_of(ids[1])
    real = issue.invoice_document

    def invoice_document(invoice):
        if invoice.id == bad.id:
            raise ValueError("stored line cannot be written")
        return real(invoice)

    monkeypatch.setattr(issue, "invoice_document", invoice_document)
    invoices = [_invoice_of(i).id for i in ids]
    outcome = issue.issue_invoices(invoices, S())
    assert outcome.counts.get("failed") == 1, outcome
    assert [_invoice_of(i).status for i in ids] == ["issued", "failed", "issued"]
    assert _statuses(ids) == ["issued", "failed", "issued"]
    assert "cannot be sent: ValueError" in _invoice_of(ids[1]).failure_reason
    assert bad.serial_no not in {serial for serial, _, _ in sandbox.invoices()}


def test_an_answer_that_cannot_be_recorded_sets_its_invoice_aside(shop, sandbox, monkeypatch):
    ids = _ingest("A-1", "A-BAD", "A-2")
    decide.decide_requests(ids, S(), issue_now=False)
    bad = _invoice_of(ids[1]).id
    real = answers.Recorder.mark_issued

    def mark_issued(self, invoice_id, status, result):
        if invoice_id == bad:
            raise KeyError("the provider's reply lacks a field")
        return real(self, invoice_id, status, result)

    monkeypatch.setattr(answers.Recorder, "mark_issued", mark_issued)
    before = utcnow()
    outcome = issue.issue_invoices([_invoice_of(i).id for i in ids], S())
    assert outcome.counts.get("set_aside") == 1, outcome
    assert [_invoice_of(i).status for i in ids] == ["issued", "unknown", "issued"]
    aside = _invoice_of(ids[1])
    assert aside.next_attempt_at >= before + S().timing.max_backoff - timedelta(seconds=1)
    with db.transaction() as session:
        reasons = [e.data.get("reason", "") for e in session.scalars(
            select(InvoiceEvent).where(InvoiceEvent.invoice_id == bad, InvoiceEvent.to_state == "unknown"))]
    assert any("could not be recorded: KeyError" in r for r in reasons)
    # Asked again after the back-off (a poll, never a resend): once the answer reads, it is issued.
    monkeypatch.setattr(answers.Recorder, "mark_issued", real)
    from app.services import poll

    poll.poll_invoices([bad], S())
    assert _invoice_of(ids[1]).status == "issued"
    assert len([s for s, _, _ in sandbox.invoices() if s == aside.serial_no]) == 1
