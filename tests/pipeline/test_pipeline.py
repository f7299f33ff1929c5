"""From a stored order to an issued invoice, exactly once, whatever fails on the way."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select, update

from app import db
from app.engine.clock import utcnow
from app.errors import InvalidTransition, Refused
from app.integrations.tax.base import TaxGateway
from app.integrations.tax.sandbox import SandboxGateway
from app.jobs import outbox, queues, tasks
from app.models import GatewayStatus, Invoice, InvoiceEvent, InvoiceRequest, OutboxMessage, Shop
from app.services import decide, issue, issuing_control, operator_actions, poll
from app.services.intake import ingest
from app.services.issuing_control import scope_of
from app.services.serials import last_generation, serial_for
from app.services.transitions import move_invoice, move_request
from app.services.unit_of_work import unit_of_work
from tests.factories import gen_order_doc


def S():
    return queues.current_settings()


def _ingest(order_id: str = "P1", **overrides) -> int:
    doc = gen_order_doc("pipe-shop", order_id, **overrides)
    for key in [k for k, v in doc.items() if v is None]:
        del doc[key]
    with unit_of_work() as work:
        result = ingest(work, [doc])
    assert not result.rejected, result.rejected
    return result.accepted[0]["request_id"]


def _request(request_id: int) -> InvoiceRequest:
    with db.transaction() as session:
        return session.get(InvoiceRequest, request_id)


def _invoices(request_id: int) -> list[Invoice]:
    with db.transaction() as session:
        return session.scalars(select(Invoice).where(Invoice.request_id == request_id).order_by(Invoice.id)).all()


def _decide_and_issue(request_id: int) -> list[Invoice]:
    decide.decide_requests([request_id], S(), issue_now=False)
    invoices = _invoices(request_id)
    issue.issue_invoices([i.id for i in invoices], S())
    return _invoices(request_id)


def test_happy_path_issues_a_20_digit_number(shop, sandbox):
    request_id = _ingest()
    outcome = decide.decide_requests([request_id], S(), issue_now=False)
    assert outcome.counts == {"issuing": 1}
    request = _request(request_id)
    assert request.rules_version and request.rules_fired and request.decision["action"] == "issue"
    [invoice] = _invoices(request_id)
    assert invoice.status == "ready" and invoice.serial_no
    assert str(invoice.total) == "247.90"
    issue.issue_invoices([invoice.id], S())
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
    decide.decide_requests([request_id], S(), issue_now=False)
    decide.decide_requests([request_id], S(), issue_now=False)  # RQ may run a job twice
    invoices = _invoices(request_id)
    assert len(invoices) == 1
    issue.issue_invoices([invoices[0].id], S())
    second = issue.issue_invoices([invoices[0].id], S())
    assert second.counts == {"skipped": 1}
    assert len(sandbox.invoices()) == 1


def test_concurrent_decisions_compose_once(shop, sandbox):
    request_id = _ingest()
    barrier = threading.Barrier(4)

    def decide_it() -> None:
        barrier.wait()
        decide.decide_requests([request_id], S(), issue_now=False)

    threads = [threading.Thread(target=decide_it) for _ in range(4)]
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
    poll.poll_invoices([invoice.id], S())
    [invoice] = _invoices(request_id)
    assert invoice.status == "issued"
    assert len(sandbox.invoices()) == 1


def test_timeout_then_query_finds_it(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "timeout", "count": 1}})  # processed, answered too late
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "unknown"
    poll.poll_invoices([invoice.id], S())
    assert _invoices(request_id)[0].status == "issued"
    assert len(sandbox.invoices()) == 1


def test_provider_never_got_it_same_serial_sent_again(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "error_5xx", "count": 1}})  # 503 before processing
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "unknown"
    serial = invoice.serial_no
    poll.poll_invoices([invoice.id], S())  # not found → ready, same serial queued again
    [invoice] = _invoices(request_id)
    assert invoice.status == "ready" and invoice.serial_no == serial
    issue.issue_invoices([invoice.id], S())
    assert _invoices(request_id)[0].status == "issued"
    assert [row[0] for row in sandbox.invoices()] == [serial]


def test_rate_limited_goes_back_with_backoff(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "rate_limit", "count": 1}})
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "ready" and invoice.attempts == 1 and invoice.next_attempt_at > utcnow()
    assert issue.issue_invoices([invoice.id], S()).counts == {"skipped": 1}  # not due yet
    with db.transaction() as session:  # time passes: the backoff is over
        row = session.get(Invoice, invoice.id)
        row.queued_at, row.next_attempt_at = utcnow() - timedelta(seconds=10), utcnow() - timedelta(seconds=1)
    tick = tasks.tick()
    assert tick["retry_queued"] == 1
    issue.issue_invoices([invoice.id], S())
    assert _invoices(request_id)[0].status == "issued"


def test_permanent_failure_is_named(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "failed" and invoice.failure_reason
    request = _request(request_id)
    assert request.status == "failed" and invoice.serial_no in request.status_reason


def _provider_counters(sandbox) -> dict[str, int]:
    return requests.get(f"{sandbox.url}/admin/state", timeout=5).json()["counters"]


def _story(invoice_id: int) -> list[tuple[str | None, dict]]:
    with db.transaction() as session:
        return [(e.to_state, e.data) for e in session.scalars(
            select(InvoiceEvent).where(InvoiceEvent.invoice_id == invoice_id).order_by(InvoiceEvent.id))]


def _retry(invoice_id: int) -> None:
    with unit_of_work() as work:
        operator_actions.retry_failed(work, invoice_id, actor="ops")


def test_retry_of_a_failed_invoice_issues_it_once(shop, sandbox, client, login):
    """重试. The defect: the same serial was sent again, the provider answered "duplicate" and
    kept it failed, so the invoice failed again. Now the operations lever only queues the job,
    which asks the provider to retry the serial: issued, one invoice at the provider."""
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}}, issue_delay_ms=200)
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "pending"  # accepted; the tax bureau fails it later
    time.sleep(0.3)
    poll.poll_invoices([invoice.id], S())
    [invoice] = _invoices(request_id)
    assert invoice.status == "failed" and "ISSUE_FAILED" in invoice.failure_reason
    assert _request(request_id).status == "failed"
    serial = invoice.serial_no

    login("operations")
    response = client.post(f"/admin/ops/invoices/{invoice.id}/retry", follow_redirects=True)
    assert response.status_code == 200
    assert sandbox.invoices() == [(serial, "failed", None)]  # the web request called no provider
    with db.transaction() as session:
        job = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(1)).one()
    assert (job.func, job.args) == ("issue_invoices", [invoice.id])
    tasks.issue_invoices(job.args)
    time.sleep(0.3)
    tasks.poll_invoices([invoice.id])  # what the tick queues for a pending invoice

    [invoice] = _invoices(request_id)
    assert invoice.status == "issued" and invoice.serial_no == serial
    assert len(invoice.number) == 20 and invoice.failure_reason is None
    assert _request(request_id).status == "issued"
    assert sandbox.invoices() == [(serial, "issued", invoice.number)]  # one invoice for the order
    counters = _provider_counters(sandbox)
    assert counters["retried"] == 1 and "duplicates_refused" not in counters
    story = _story(invoice.id)
    states = [state for state, _ in story if state]
    assert states[-5:] == ["failed", "retry_ready", "issuing", "pending", "issued"]
    assert [data.get("retry") for state, data in story if state == "issuing"] == [None, True]


def test_a_new_decision_replaces_failed_invoices_which_are_never_retried(shop, sandbox):
    """Deciding a failed request again composes it anew: its failed invoice is cancelled in
    the same transaction, so a later 重试 of it cannot issue the order a second time."""
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}}, issue_delay_ms=200)
    [failed] = _decide_and_issue(request_id)
    time.sleep(0.3)
    poll.poll_invoices([failed.id], S())
    assert _invoices(request_id)[0].status == "failed"
    with unit_of_work() as work:
        operator_actions.redecide(work, request_id, actor="ops")
    decide.decide_requests([request_id], S())
    old, new = _invoices(request_id)
    assert old.id == failed.id and old.status == "cancelled" and new.serial_no != old.serial_no
    time.sleep(0.3)
    poll.poll_invoices([new.id], S())
    assert _invoices(request_id)[1].status == "issued" and _request(request_id).status == "issued"
    with pytest.raises(Refused, match="only failed invoices are retried"), unit_of_work() as work:
        operator_actions.retry_failed(work, old.id, actor="ops")
    assert [row[1] for row in sandbox.invoices()] == ["failed", "issued"]


def test_a_request_with_an_issued_part_is_not_composed_again(shop, sandbox):
    """Two parts, one issued and one failed: deciding again would issue the first part twice,
    so the request is held and the failed part is for 重试."""
    with unit_of_work() as work:
        work.session.get(Shop, shop.id).options = {"max_amount": "200.00"}
    request_id = _ingest()
    decide.decide_requests([request_id], S(), issue_now=False)
    first, second = _invoices(request_id)
    with unit_of_work() as work:  # the state an issued part and a failed part leave behind
        move_invoice(work, first.id, "issuing", expect="ready")
        move_invoice(work, first.id, "issued", expect="issuing", number="26000000000000000001")
        move_invoice(work, second.id, "issuing", expect="ready")
        move_invoice(work, second.id, "failed", expect="issuing")
        move_request(work, request_id, "failed", expect="issuing")
    with unit_of_work() as work:
        operator_actions.redecide(work, request_id, actor="ops")
    assert decide.decide_requests([request_id], S()).counts == {"held": 1}
    assert [i.status for i in _invoices(request_id)] == ["issued", "failed"]
    assert "retry the failed part" in _request(request_id).status_reason


def test_a_lost_retry_answer_is_queried_never_retried_blind(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    [invoice] = _decide_and_issue(request_id)
    assert invoice.status == "failed"
    sandbox.faults(calls={"retry": {"mode": "unknown", "count": 1}})  # processed, then a 500
    _retry(invoice.id)
    issue.issue_invoices([invoice.id], S())
    assert _invoices(request_id)[0].status == "unknown"
    assert issue.issue_invoices([invoice.id], S()).counts == {"skipped": 1}  # nothing is sent again
    poll.poll_invoices([invoice.id], S())
    [invoice] = _invoices(request_id)
    assert invoice.status == "issued" and _request(request_id).status == "issued"
    assert sandbox.invoices() == [(invoice.serial_no, "issued", invoice.number)]
    assert _provider_counters(sandbox)["retried"] == 1


def test_a_retry_that_fails_again_is_failed_again(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}, "retry": {"mode": "fail_later", "count": 1}})
    [invoice] = _decide_and_issue(request_id)
    _retry(invoice.id)
    assert issue.issue_invoices([invoice.id], S()).counts == {"poll_failed": 1, "accepted": 1}
    [invoice] = _invoices(request_id)
    assert invoice.status == "failed" and "ISSUE_FAILED" in invoice.failure_reason
    assert _request(request_id).status == "failed"
    _retry(invoice.id)  # and again: this time the bureau issues it
    issue.issue_invoices([invoice.id], S())
    assert _invoices(request_id)[0].status == "issued"
    assert [row[1] for row in sandbox.invoices()] == ["issued"]


def test_retry_of_a_submission_the_provider_refused_sends_the_same_serial(shop, sandbox):
    """Refused for its data at submission (a permanent error on issue), the invoice was never
    accepted and the provider stores nothing: the retry learns that (NotFound) and the same
    serial is sent again. Here the provider refused a tax code it did not know yet and knows
    it by the time of the retry."""
    from app.services import context as gateways

    class RefusesTheFirstSubmission(SandboxGateway):
        first = True

        def issue_many(self, requests):
            if self.first:
                self.first = False
                requests = [replace(r, lines=tuple(replace(line, tax_code="9" * 19) for line in r.lines))
                            for r in requests]
            return super().issue_many(requests)

    gateways.use_gateway(RefusesTheFirstSubmission(sandbox.url, "sandbox-app", "sandbox-secret", read_timeout=1.0))
    try:
        request_id = _ingest()
        [invoice] = _decide_and_issue(request_id)
        assert invoice.status == "failed" and invoice.failure_reason.startswith("TAX_CODE")
        assert sandbox.invoices() == []
        serial = invoice.serial_no
        _retry(invoice.id)
        assert issue.issue_invoices([invoice.id], S()).counts == {"resend": 1}
        [invoice] = _invoices(request_id)
        assert invoice.status == "ready" and invoice.serial_no == serial
        issue.issue_invoices([invoice.id], S())  # the issue job the resend queued
    finally:
        gateways.use_gateway(None)
    [invoice] = _invoices(request_id)
    assert invoice.status == "issued" and _request(request_id).status == "issued"
    assert sandbox.invoices() == [(serial, "issued", invoice.number)]


def test_retry_at_a_provider_that_cannot_retry_uses_a_new_serial(shop, sandbox):
    """Without a provider retry, the failed serial is closed in the invoice log and the invoice
    is issued under the next serial (the query first confirmed it failed there: a failure is
    final at such a provider, so the closed serial never becomes an invoice)."""
    from app.services import context as gateways

    class NoRetry(SandboxGateway):
        retry = TaxGateway.retry  # the interface's default: RetryUnsupported

    gateways.use_gateway(NoRetry(sandbox.url, "sandbox-app", "sandbox-secret", read_timeout=1.0))
    try:
        request_id = _ingest()
        sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
        [invoice] = _decide_and_issue(request_id)
        closed = invoice.serial_no
        _retry(invoice.id)
        assert issue.issue_invoices([invoice.id], S()).counts == {"new_serial": 1}
        [invoice] = _invoices(request_id)
        assert invoice.status == "ready" and invoice.serial_no == serial_for(request_id, 1, 2) != closed
        issue.issue_invoices([invoice.id], S())
    finally:
        gateways.use_gateway(None)
    [invoice] = _invoices(request_id)
    assert invoice.status == "issued" and _request(request_id).status == "issued"
    assert sorted(sandbox.invoices()) == [(closed, "failed", None), (invoice.serial_no, "issued", invoice.number)]
    with db.transaction() as session:
        [event] = session.scalars(select(InvoiceEvent).where(InvoiceEvent.kind == "serial_closed")).all()
        assert event.invoice_id == invoice.id
        assert event.data["serial_no"] == closed and event.data["replaced_by"] == invoice.serial_no
        # A later decision of the request goes past both serials.
        assert last_generation(session, request_id) == 2


def test_retry_of_an_invoice_the_provider_holds_as_issued_asks_it(shop, sandbox):
    """Our record says failed, the provider says it is not (e.g. a failure read just before a
    retry took effect): the retry is refused, nothing is changed there, and the query by serial
    records what the provider holds."""
    request_id = _ingest()
    [invoice] = _decide_and_issue(request_id)
    number = invoice.number
    with db.transaction() as session:
        session.execute(update(Invoice).where(Invoice.id == invoice.id).values(status="failed", number=None))
    _retry(invoice.id)
    assert issue.issue_invoices([invoice.id], S()).counts == {"not_failed": 1}
    assert _invoices(request_id)[0].status == "unknown"
    poll.poll_invoices([invoice.id], S())
    [invoice] = _invoices(request_id)
    assert invoice.status == "issued" and invoice.number == number
    assert "retried" not in _provider_counters(sandbox)


def test_a_retry_waits_out_a_rate_limit_and_a_pause_in_retry_ready(shop, sandbox):
    request_id = _ingest()
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}, "retry": {"mode": "rate_limit", "count": 1}})
    [invoice] = _decide_and_issue(request_id)
    _retry(invoice.id)
    issue.issue_invoices([invoice.id], S())
    [invoice] = _invoices(request_id)
    assert invoice.status == "retry_ready" and invoice.attempts == 1 and invoice.next_attempt_at > utcnow()
    with db.transaction() as session:  # time passes: the backoff is over
        row = session.get(Invoice, invoice.id)
        row.queued_at, row.next_attempt_at = utcnow() - timedelta(seconds=10), utcnow() - timedelta(seconds=1)
    assert tasks.tick()["retry_queued"] == 1
    sandbox.post("/admin/expire-login")
    assert issue.issue_invoices([invoice.id], S()).counts == {"paused": 1}
    assert _invoices(request_id)[0].status == "retry_ready"
    sandbox.post("/admin/renew-login")
    with unit_of_work() as work:
        assert issuing_control.resume(work, actor="ops", scope=scope_of(shop.seller_entity_id))
        queued = work.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(1)).one()
    assert (queued.func, queued.args) == ("issue_invoices", [invoice.id])  # the backlog includes retries
    with db.transaction() as session:
        session.get(Invoice, invoice.id).next_attempt_at = None
    issue.issue_invoices([invoice.id], S())
    assert _invoices(request_id)[0].status == "issued"
    assert _provider_counters(sandbox)["retried"] == 1


def test_login_expired_pauses_and_resume_drains_in_order(shop, sandbox):
    first, second = _ingest("A1"), _ingest("A2")
    sandbox.post("/admin/expire-login")
    decide.decide_requests([first, second], S(), issue_now=False)
    ids = [i.id for r in (first, second) for i in _invoices(r)]
    outcome = issue.issue_invoices(ids, S())
    assert outcome.counts.get("paused") == 2
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus))
        assert status.paused and status.pause_code == "auth_expired"
    assert {i.status for r in (first, second) for i in _invoices(r)} == {"ready"}
    assert issue.issue_invoices(ids, S()).counts == {"paused": 1}  # nothing leaves while paused
    sandbox.post("/admin/renew-login")
    with unit_of_work() as work:
        assert issuing_control.resume(work, actor="ops", scope=scope_of(shop.seller_entity_id))
    assert queues.queue("issue").count >= 1  # the backlog went back to the issue queue
    issue.issue_invoices(ids, S())
    issued = [i for r in (first, second) for i in _invoices(r)]
    assert [i.status for i in issued] == ["issued", "issued"]
    assert issued[0].number < issued[1].number  # the backlog drained in order


def test_outage_pauses_and_probe_resumes(shop, sandbox, monkeypatch):
    monkeypatch.setattr(issuing_control, "OUTAGE_THRESHOLD", 2)
    ids = [_ingest(f"O{n}") for n in range(3)]
    decide.decide_requests(ids, S(), issue_now=False)
    invoice_ids = [i.id for r in ids for i in _invoices(r)]
    sandbox.faults(calls={"issue": {"mode": "rate_limit"}})
    issue.issue_invoices(invoice_ids, S())  # one batch call failed: not yet an outage
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus))
        assert not status.paused and status.failure_streak == 1
        for invoice in session.scalars(select(Invoice)):
            invoice.next_attempt_at = None
    issue.issue_invoices(invoice_ids, S())  # a second failed call in a row, from another job
    with db.transaction() as session:
        assert session.scalar(select(GatewayStatus)).pause_code == "outage"
    sandbox.faults(reset=True)
    tasks.tick()  # probes the provider, resumes, queues the backlog
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus))
        assert not status.paused and status.failure_streak == 0
    with db.transaction() as session:
        for invoice in session.scalars(select(Invoice)):
            invoice.next_attempt_at = None
    issue.issue_invoices(invoice_ids, S())
    assert {i.status for r in ids for i in _invoices(r)} == {"issued"}


def test_worker_killed_mid_call_is_recovered_by_query(shop, sandbox, monkeypatch):
    request_id = _ingest()
    decide.decide_requests([request_id], S(), issue_now=False)
    [invoice] = _invoices(request_id)
    with unit_of_work() as work:  # the state a SIGKILL after the commit leaves behind
        move_invoice(work, invoice.id, "issuing", expect="ready")
    queues.configure(replace(S(), timing=replace(S().timing, stuck_issuing=timedelta(seconds=0))))
    counts = tasks.tick()
    assert counts["stuck_recovered"] == 1
    assert _invoices(request_id)[0].status == "unknown"
    poll.poll_invoices([invoice.id], S())  # the provider never got it → ready with the same serial
    issue.issue_invoices([invoice.id], S())
    assert _invoices(request_id)[0].status == "issued"
    assert len(sandbox.invoices()) == 1


def test_transition_from_wrong_state_changes_nothing(shop, sandbox):
    request_id = _ingest()
    with unit_of_work() as work, pytest.raises(InvalidTransition, match="cannot go to issued"):
        move_request(work, request_id, "issued")
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
    assert tasks.tick()["outbox_dispatched"] >= 1
    with db.transaction() as session:
        assert session.scalar(select(OutboxMessage.dispatched_at).where(OutboxMessage.func == "decide_requests"))
    assert queues.queue("decide").count >= 1
    assert _request(request_id).status == "received"


def test_the_decide_job_issues_what_it_composed(shop, sandbox):
    request_id = _ingest("N1")
    outcome = decide.decide_requests([request_id], S())
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
    decide.decide_requests([first], S(), issue_now=False)
    assert _request(first).status == "issuing"
    document = load_ruleset_file(rules_dir() / "default.yaml")
    document["rules"].insert(0, {"id": "hold-everything", "priority": 1, "then": [
        {"action": "hold", "code": "manual_review", "reason": "every order is reviewed this week"}]})
    with db.transaction() as session:
        rule_set = get_or_create_rule_set(session, "review-week", merchant_id=shop.merchant_id)
        draft = save_draft(session, rule_set, document, author="tax", comment="review week")
        publish(session, rule_set, draft.number, author="tax", comment="go")
    second = _ingest("R2")
    decide.decide_requests([second], S(), issue_now=False)
    request = _request(second)
    assert request.status == "held" and "reviewed" in request.status_reason
    assert request.rules_version.startswith("review-week@v") and "hold-everything" in request.rules_fired
    assert _request(first).rules_version != request.rules_version  # the earlier decision keeps its version


def test_deadline_alarms_are_raised_once_per_level(shop, sandbox):
    from app.services.deadlines import check_deadlines

    request_id = _ingest("D1", status="paid", received_at=None, shipped_at=None,
                         invoice_request={"kind": "normal", "title_type": "personal", "title": "个人",
                                          "requested_at": utcnow().isoformat()})
    decide.decide_requests([request_id], S(), issue_now=False)
    request = _request(request_id)
    assert request.status == "waiting" and request.deadline_at is not None
    window = request.deadline_at - request.requested_at
    assert check_deadlines(now=request.requested_at + window * 0.4) == {}
    assert check_deadlines(now=request.requested_at + window * 0.6) == {"50%": 1}
    assert check_deadlines(now=request.requested_at + window * 0.6) == {}  # once
    assert check_deadlines(now=request.deadline_at + timedelta(minutes=1)) == {"passed": 1}


def test_remaining_credit_is_recorded(shop, sandbox):
    assert issuing_control.refresh_credit(S())
    with db.transaction() as session:
        status = session.scalar(select(GatewayStatus))
        assert status.credit_remaining is not None and status.credit_checked_at is not None
        assert status.credit_remaining > 0 and not status.paused
