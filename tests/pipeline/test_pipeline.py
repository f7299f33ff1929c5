"""From a stored order to an issued invoice, exactly once, whatever fails on the way."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from app import db
from app.engine import lifecycle, pipeline
from app.engine.clock import utcnow
from app.engine.intake import ingest
from app.errors import InvalidTransition
from app.jobs import outbox, queues
from app.models import GatewayStatus, Invoice, InvoiceEvent, InvoiceRequest, OutboxMessage
from tests.factories import gen_order_doc


def _ingest(order_id: str = "P1", **overrides) -> int:
    doc = gen_order_doc("pipe-shop", order_id, **overrides)
    for key in [k for k, v in doc.items() if v is None]:
        del doc[key]
    with db.transaction() as session:
        result = ingest(session, [doc])
    assert not result.rejected, result.rejected
    return result.accepted[0]["request_id"]


def _request(request_id: int) -> InvoiceRequest:
    with db.transaction() as session:
        return session.get(InvoiceRequest, request_id)


def _invoices(request_id: int) -> list[Invoice]:
    with db.transaction() as session:
        return session.scalars(select(Invoice).where(Invoice.request_id == request_id).order_by(Invoice.id)).all()


def _decide_and_issue(request_id: int) -> list[Invoice]:
    pipeline.decide_requests([request_id], issue_now=False)
    invoices = _invoices(request_id)
    pipeline.issue_invoices([i.id for i in invoices])
    return _invoices(request_id)


def test_happy_path_issues_a_20_digit_number(shop, sandbox):
    request_id = _ingest()
    outcome = pipeline.decide_requests([request_id], issue_now=False)
    assert outcome.counts == {"issuing": 1}
    request = _request(request_id)
    assert request.rules_version and request.rules_fired and request.decision["action"] == "issue"
    [invoice] = _invoices(request_id)
    assert invoice.status == "ready" and invoice.serial_no
    assert str(invoice.total) == "247.90"
    pipeline.issue_invoices([invoice.id])
    [invoice] = _invoices(request_id)
    assert invoice.status == "issued"
    assert len(invoice.number) == 20 and invoice.number.isdigit()
    assert invoice.number[:2] == f"{utcnow().year % 100:02d}" and invoice.number[2:4] == "11"
    assert _request(request_id).status == "issued"
    with db.transaction() as session:
        story = [e.to_state for e in session.scalars(select(InvoiceEvent).where(InvoiceEvent.request_id == request_id)
                                                     .order_by(InvoiceEvent.id)) if e.to_state]
    assert story[0] == "received" and story[-1] == "issued"
    assert {"deciding", "issuing", "pending"} <= set(story)


def test_running_the_same_job_twice_issues_once(shop, sandbox):
    request_id = _ingest()
    pipeline.decide_requests([request_id], issue_now=False)
    pipeline.decide_requests([request_id], issue_now=False)  # RQ may run a job twice
    invoices = _invoices(request_id)
    assert len(invoices) == 1
    pipeline.issue_invoices([invoices[0].id])
    second = pipeline.issue_invoices([invoices[0].id])
    assert second.counts == {"skipped": 1}
    assert len(sandbox.invoices()) == 1


def test_concurrent_decisions_compose_once(shop, sandbox):
    request_id = _ingest()
    barrier = threading.Barrier(4)

    def decide() -> None:
        barrier.wait()
        pipeline.decide_requests([request_id], issue_now=False)

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_invoices(request_id)) == 1


def test_unknown_outcome_is_queried_never_resent(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "unknown", "count": 1}})  # processed, then a 500
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "unknown"
    pipeline.poll_invoices([invoice.id])
    [invoice] = _invoices(request_id)
    assert invoice.status == "issued"
    assert len(sandbox.invoices()) == 1


def test_timeout_then_query_finds_it(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "timeout", "count": 1}})  # processed, answered too late
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "unknown"
    pipeline.poll_invoices([invoice.id])
    assert _invoices(request_id)[0].status == "issued"
    assert len(sandbox.invoices()) == 1


def test_provider_never_got_it_same_serial_sent_again(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "error_5xx", "count": 1}})  # 503 before processing
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "unknown"
    serial = invoice.serial_no
    pipeline.poll_invoices([invoice.id])  # not found → ready, same serial queued again
    [invoice] = _invoices(request_id)
    assert invoice.status == "ready" and invoice.serial_no == serial
    pipeline.issue_invoices([invoice.id])
    assert _invoices(request_id)[0].status == "issued"
    assert [row[0] for row in sandbox.invoices()] == [serial]


def test_rate_limited_goes_back_with_backoff(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "rate_limit", "count": 1}})
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "ready" and invoice.attempts == 1 and invoice.next_attempt_at > utcnow()
    assert pipeline.issue_invoices([invoice.id]).counts == {"skipped": 1}  # not due yet
    with db.transaction() as session:  # time passes: the backoff is over
        row = session.get(Invoice, invoice.id)
        row.queued_at, row.next_attempt_at = utcnow() - timedelta(seconds=10), utcnow() - timedelta(seconds=1)
    tick = pipeline.tick()
    assert tick.counts["retry_queued"] == 1
    pipeline.issue_invoices([invoice.id])
    assert _invoices(request_id)[0].status == "issued"


def test_permanent_failure_is_named(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "failed" and invoice.failure_reason
    request = _request(request_id)
    assert request.status == "failed" and invoice.serial_no in request.status_reason
    with db.transaction() as session:
        pipeline.retry_failed(session, invoice.id, actor="ops")
    pipeline.issue_invoices([invoice.id])
    assert _invoices(request_id)[0].status in ("issued", "failed")


def test_login_expired_pauses_and_resume_drains_in_order(shop, sandbox):
    first, second = _ingest("A1"), _ingest("A2")
    sandbox.post("/admin/expire-login")
    pipeline.decide_requests([first, second], issue_now=False)
    ids = [i.id for r in (first, second) for i in _invoices(r)]
    outcome = pipeline.issue_invoices(ids)
    assert outcome.counts.get("paused") == 2
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus))
        assert status.paused and status.pause_code == "auth_expired"
    assert {i.status for r in (first, second) for i in _invoices(r)} == {"ready"}
    assert pipeline.issue_invoices(ids).counts == {"paused": 1}  # nothing leaves while paused
    sandbox.post("/admin/renew-login")
    with db.transaction() as session:
        assert pipeline.resume(session, actor="ops")
    assert queues.queue("issue").count >= 1  # the backlog went back to the issue queue
    pipeline.issue_invoices(ids)
    issued = [i for r in (first, second) for i in _invoices(r)]
    assert [i.status for i in issued] == ["issued", "issued"]
    assert issued[0].number < issued[1].number  # the backlog drained in order


def test_outage_pauses_and_probe_resumes(shop, sandbox, monkeypatch):
    monkeypatch.setattr(pipeline, "OUTAGE_THRESHOLD", 2)
    ids = [_ingest(f"O{n}") for n in range(3)]
    pipeline.decide_requests(ids, issue_now=False)
    invoice_ids = [i.id for r in ids for i in _invoices(r)]
    sandbox.faults(calls={"issue": {"mode": "rate_limit"}})
    pipeline.issue_invoices(invoice_ids)  # one batch call failed: not yet an outage
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus))
        assert not status.paused and status.failure_streak == 1
        for invoice in session.scalars(select(Invoice)):
            invoice.next_attempt_at = None
    pipeline.issue_invoices(invoice_ids)  # a second failed call in a row, from another job
    with db.transaction() as session:
        assert session.scalar(select(GatewayStatus)).pause_code == "outage"
    sandbox.faults(reset=True)
    pipeline.tick()  # probes the provider, resumes, queues the backlog
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus))
        assert not status.paused and status.failure_streak == 0
    with db.transaction() as session:
        for invoice in session.scalars(select(Invoice)):
            invoice.next_attempt_at = None
    pipeline.issue_invoices(invoice_ids)
    assert {i.status for r in ids for i in _invoices(r)} == {"issued"}


def test_worker_killed_mid_call_is_recovered_by_query(shop, sandbox, monkeypatch):
    request_id = _ingest()
    pipeline.decide_requests([request_id], issue_now=False)
    [invoice] = _invoices(request_id)
    with db.transaction() as session:  # the state a SIGKILL after the commit leaves behind
        lifecycle.move_invoice(session, invoice.id, "issuing", expect="ready")
    monkeypatch.setattr(pipeline.TIMING, "stuck_issuing", timedelta(seconds=0))
    counts = pipeline.tick().counts
    assert counts["stuck_recovered"] == 1
    assert _invoices(request_id)[0].status == "unknown"
    pipeline.poll_invoices([invoice.id])  # the provider never got it → ready with the same serial
    pipeline.issue_invoices([invoice.id])
    assert _invoices(request_id)[0].status == "issued"
    assert len(sandbox.invoices()) == 1


def test_transition_from_wrong_state_changes_nothing(shop, sandbox):
    request_id = _ingest()
    with db.transaction() as session, pytest.raises(InvalidTransition, match="cannot go to issued"):
        lifecycle.move_request(session, request_id, "issued")
    assert _request(request_id).status == "received"
    with db.transaction() as session:
        events = session.scalar(select(func.count()).select_from(InvoiceEvent)
                                .where(InvoiceEvent.request_id == request_id))
    assert events == 1  # only the arrival


def test_redis_down_at_commit_only_delays(shop, sandbox, settings, monkeypatch):
    import redis

    def down():
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(queues, "connection", down)
    request_id = _ingest()  # commits; the after-commit push fails quietly
    with db.transaction() as session:
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.func == "decide_requests"))
        assert row.dispatched_at is None
        row.created_at = utcnow() - timedelta(minutes=1)
    monkeypatch.undo()
    queues.configure(settings)
    assert pipeline.tick().counts["outbox_dispatched"] >= 1
    with db.transaction() as session:
        assert session.scalar(select(OutboxMessage.dispatched_at).where(OutboxMessage.func == "decide_requests"))
    assert queues.queue("decide").count >= 1
    assert _request(request_id).status == "received"


def test_the_decide_job_issues_what_it_composed(shop, sandbox):
    request_id = _ingest("N1")
    outcome = pipeline.decide_requests([request_id])
    assert outcome.counts.get("issuing") == 1 and outcome.counts.get("issue_accepted") == 1
    assert _request(request_id).status == "issued"
    with db.transaction() as session:  # nothing left for a separate issue job
        assert not session.scalar(select(func.count()).select_from(OutboxMessage)
                                  .where(OutboxMessage.func == "issue_invoices"))


def test_a_real_worker_runs_the_jobs(shop, sandbox, settings):
    """The outbox reaches RQ and an RQ worker (burst) decides and issues."""
    from rq import SimpleWorker

    request_id = _ingest()
    outbox.dispatch_pending()
    worker = SimpleWorker([queues.queue(n) for n in ("issue", "decide")], connection=queues.connection())
    worker.work(burst=True)
    worker.work(burst=True)  # the issue job was queued by the decision
    assert _request(request_id).status == "issued"


def test_a_published_rule_change_decides_the_next_order_without_restart(shop, sandbox):
    from app.rules import load_ruleset_file, rules_dir
    from app.services.rule_versions import get_or_create_rule_set, publish, save_draft

    first = _ingest("R1")
    pipeline.decide_requests([first], issue_now=False)
    assert _request(first).status == "issuing"
    document = load_ruleset_file(rules_dir() / "default.yaml")
    document["rules"].insert(0, {"id": "hold-everything", "priority": 1, "then": [
        {"action": "hold", "code": "manual_review", "reason": "every order is reviewed this week"}]})
    with db.transaction() as session:
        rule_set = get_or_create_rule_set(session, "review-week", merchant_id=shop.merchant_id)
        draft = save_draft(session, rule_set, document, author="tax", comment="review week")
        publish(session, rule_set, draft.number, author="tax", comment="go")
    second = _ingest("R2")
    pipeline.decide_requests([second], issue_now=False)
    request = _request(second)
    assert request.status == "held" and "reviewed" in request.status_reason
    assert request.rules_version.startswith("review-week@v") and "hold-everything" in request.rules_fired
    assert _request(first).rules_version != request.rules_version  # the earlier decision keeps its version


def test_deadline_alarms_are_raised_once_per_level(shop, sandbox):
    from app.engine.deadlines import check_deadlines

    request_id = _ingest("D1", status="paid", received_at=None, shipped_at=None,
                         invoice_request={"kind": "normal", "title_type": "personal", "title": "个人",
                                          "requested_at": utcnow().isoformat()})
    pipeline.decide_requests([request_id], issue_now=False)
    request = _request(request_id)
    assert request.status == "waiting" and request.deadline_at is not None
    window = request.deadline_at - request.requested_at
    assert check_deadlines(now=request.requested_at + window * 0.4) == {}
    assert check_deadlines(now=request.requested_at + window * 0.6) == {"50%": 1}
    assert check_deadlines(now=request.requested_at + window * 0.6) == {}  # once
    assert check_deadlines(now=request.deadline_at + timedelta(minutes=1)) == {"passed": 1}


def test_remaining_credit_is_recorded(shop, sandbox):
    assert pipeline.refresh_credit()
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus))
        assert status.credit_remaining is not None and status.credit_checked_at is not None
        assert status.credit_remaining > 0 and not status.paused
