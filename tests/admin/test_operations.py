"""The operations console (/admin/ops/): what it shows and what each lever changes."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import redis
import time_machine
from rq import Queue, SimpleWorker, Worker
from rq.job import Job, JobStatus
from sqlalchemy import select

from app.admin import charts
from app.engine.clock import utcnow
from app.jobs import monitor, queues
from app.jobs.worker import mirror_failure
from app.models import (
    AdminAuditLog,
    GatewayStatus,
    Invoice,
    InvoiceEvent,
    InvoiceRequest,
    JobFailure,
    Order,
    OutboxMessage,
)
from app.services import operations_overview as overview
from app.services.issuing_control import scope_of
from tests.factories import gen_merchant, gen_order_doc, gen_seller, gen_shop

URL = "/admin/ops/"
_seq = itertools.count(1)


def explode(ids: list[int]) -> None:
    """A job that fails, run by a real RQ worker in the tests below."""
    raise RuntimeError(f"provider said no to {ids}")


# ----------------------------------------------------------------------------------- builders


def make_request(session, status: str = "received", *, reason: str | None = None,
                 updated_at: datetime | None = None) -> InvoiceRequest:
    shop = gen_shop(session)
    doc = gen_order_doc(shop_code=shop.shop_code)
    order = Order(platform=shop.platform, shop_code=shop.shop_code, order_no=doc["order_id"], shop_id=shop.id,
                  status="received", document=doc, document_hash=f"hash-{next(_seq)}")
    session.add(order)
    session.flush()
    request = InvoiceRequest(order_pk=order.id, title_type="personal", title="个人", status=status,
                             status_reason=reason, updated_at=updated_at or utcnow())
    session.add(request)
    session.flush()
    return request


def make_invoice(session, status: str, *, request: InvoiceRequest | None = None, color: str = "blue",
                 total: str = "113.00", issued_at: datetime | None = None, updated_at: datetime | None = None,
                 failure_reason: str | None = None, seller_entity_id: int | None = None) -> Invoice:
    request = request or make_request(session, "issuing")
    total_d = Decimal(total)
    tax = (total_d * Decimal("0.13") / Decimal("1.13")).quantize(Decimal("0.01"))
    invoice = Invoice(
        request_id=request.id, order_pk=request.order_pk, color=color, kind="normal", status=status,
        serial_no=f"KP{next(_seq):018d}", buyer={"title_type": "personal", "name": "个人"},
        seller={"name": "测试商户有限公司", "tax_id": "91110000600037341L"},
        total_amount=total_d - tax, total_tax=tax, total=total_d, issued_at=issued_at,
        failure_reason=failure_reason, updated_at=updated_at or utcnow(), seller_entity_id=seller_entity_id,
    )
    session.add(invoice)
    session.flush()
    return invoice


def fresh(session) -> None:
    """See what the request committed: end the test session's snapshot, forget loaded rows."""
    session.rollback()
    session.expire_all()


def audit_rows(session, action: str) -> list[AdminAuditLog]:
    fresh(session)
    return list(session.scalars(select(AdminAuditLog).where(AdminAuditLog.action == action)))


@pytest.fixture
def ops(client, login, redis_url):
    """Logged in as operations, UI in English (the Chinese catalogs are compiled separately)."""
    user = login("operations")
    assert client.get(URL + "?lang=en").status_code == 200
    return user


# ---------------------------------------------------------------------------------- access


@pytest.mark.parametrize(("role", "status"), [("operations", 200), ("admin", 200), ("cs_agent", 403),
                                              ("auditor", 403), ("merchant", 403), ("tax_specialist", 403)])
def test_roles(client, login, redis_url, role, status):
    login(role)
    assert client.get(URL).status_code == status


def test_anonymous_is_sent_to_login(client, redis_url):
    response = client.get(URL)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    response = client.post(URL + "resume")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_other_roles_cannot_pull_levers(client, login, db_session, redis_url):
    db_session.add(GatewayStatus(scope="default", paused=True, pause_code="auth_expired", pause_reason="x",
                                 paused_at=utcnow()))
    db_session.commit()
    login("cs_agent")
    assert client.post(URL + "resume").status_code == 403
    fresh(db_session)
    assert db_session.scalar(select(GatewayStatus)).paused is True


def test_levers_are_post_only(client, ops):
    assert client.get(URL + "resume").status_code == 405
    assert client.get(URL + "failures/1/retry").status_code == 405


def test_levers_need_the_csrf_token(app, client, ops, db_session):
    db_session.add(GatewayStatus(scope="default", paused=True, pause_code="auth_expired", pause_reason="x",
                                 paused_at=utcnow()))
    db_session.commit()
    app.config["WTF_CSRF_ENABLED"] = True
    page = client.get(URL)
    assert client.post(URL + "resume").status_code == 400
    fresh(db_session)
    assert db_session.scalar(select(GatewayStatus)).paused is True
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    assert client.post(URL + "resume", data={"csrf_token": token}).status_code == 302
    fresh(db_session)
    assert db_session.scalar(select(GatewayStatus)).paused is False


# ---------------------------------------------------------------------------- what it shows


def test_queue_depths_workers_and_outbox(client, ops, db_session):
    conn = queues.connection()
    decide = queues.queue("decide")
    decide.enqueue("app.jobs.tasks.decide_requests", [1])
    decide.enqueue("app.jobs.tasks.decide_requests", [2])
    queues.queue("render").enqueue("app.jobs.tasks.tick")
    worker = Worker([decide], connection=conn, name="ops-test-worker")
    worker.register_birth()
    worker.heartbeat()
    # Outbox rows not dispatched (e.g. written while Redis was down), the oldest 10 minutes ago.
    for minutes in (10, 1):
        db_session.add(OutboxMessage(queue="issue", func="issue_invoices", args=[minutes],
                                     job_id=f"issue:{minutes}", created_at=utcnow() - timedelta(minutes=minutes)))
    db_session.add(OutboxMessage(queue="issue", func="issue_invoices", args=[3], job_id="issue:done",
                                 dispatched_at=utcnow()))
    db_session.commit()
    try:
        page = client.get(URL)
    finally:
        worker.register_death()
    assert page.status_code == 200
    html = page.text
    depths = dict(re.findall(r'data-queue="(\w+)">\s*<td><code>\w+</code></td>\s*<td class="num queued">(\d+)<', html))
    assert depths == {"issue": "0", "decide": "2", "deliver": "0", "render": "1", "sync": "0", "periodic": "0"}
    assert "ops-test-worker" in html and "decide" in html
    outbox_card = html[html.index('id="outbox"'):html.index('id="credit"')]
    assert '<div class="big">2</div>' in outbox_card
    assert "10 minutes" in outbox_card
    assert "Redis unreachable" not in html


def test_invoices_and_requests_by_state(client, ops, db_session):
    old = utcnow() - timedelta(hours=3)
    make_request(db_session, "held", reason="缺少税收分类编码", updated_at=old)
    make_request(db_session, "held")
    make_invoice(db_session, "issued", issued_at=utcnow())
    make_invoice(db_session, "issued", issued_at=utcnow())
    make_invoice(db_session, "ready", updated_at=old)
    db_session.commit()
    html = client.get(URL).text
    invoice_counts = dict(re.findall(r'class="invoice-state" data-status="(\w+)">.*?class="num count">(\d+)<', html))
    request_counts = dict(re.findall(r'class="request-state" data-status="(\w+)">.*?class="num count">(\d+)<', html))
    assert invoice_counts == {"issued": "2", "ready": "1"}
    assert request_counts == {"held": "2", "issuing": "3"}
    ready_row = re.search(r'data-status="ready">(.*?)</tr>', html).group(1)
    assert "3 hours" in ready_row


def test_state_ages(db_session, redis_url):
    now = utcnow()
    make_request(db_session, "held", updated_at=now - timedelta(hours=5))
    make_request(db_session, "held", updated_at=now - timedelta(minutes=5))
    db_session.commit()
    rows = {r.status: r for r in overview.states_with_age(db_session, InvoiceRequest, now)}
    assert rows["held"].count == 2
    assert abs(rows["held"].oldest_age - timedelta(hours=5)) < timedelta(seconds=1)


# ------------------------------------------------------------------------------- job failures


def _fail_a_job(session, queue_name: str = "decide", ids: list[int] | None = None) -> Job:
    conn = queues.connection()
    job = queues.queue(queue_name).enqueue(explode, ids or [7, 8])
    SimpleWorker([queues.queue(queue_name)], connection=conn, exception_handlers=[mirror_failure]).work(
        burst=True, with_scheduler=False)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    return job


def test_failed_job_is_listed_and_requeued(client, ops, db_session):
    job = _fail_a_job(db_session)
    failure = db_session.scalar(select(JobFailure).where(JobFailure.job_id == job.id))
    assert failure is not None  # mirrored by the worker's exception handler
    html = client.get(URL).text
    row = re.search(rf'class="failure-row" data-id="{failure.id}">(.*?)</tr>', html, re.S).group(1)
    assert "provider said no to [7, 8]" in row and "RuntimeError" in row and ">yes<" in row
    assert "rq-failed-row" not in html  # mirrored, so not listed twice

    response = client.post(URL + f"failures/{failure.id}/retry", follow_redirects=True)
    assert response.status_code == 200 and f"Job {job.id} requeued." in response.text
    assert Job.fetch(job.id, connection=queues.connection()).get_status() == JobStatus.QUEUED
    assert queues.queue("decide").count == 1
    fresh(db_session)
    failure = db_session.get(JobFailure, failure.id)
    assert failure.resolved_at is not None and failure.resolution == "requeued"
    assert failure.resolved_by == ops.username
    [entry] = audit_rows(db_session, "ops.retry_job")
    assert entry.target == f"JobFailure:{failure.id}" and entry.username == ops.username


def test_failed_job_gone_from_redis_is_recreated_through_the_outbox(client, ops, db_session):
    failure = JobFailure(job_id="issue_invoices-batch-1-2", queue="issue", func="app.jobs.tasks.issue_invoices",
                         args=[[41, 42]], exc_type="TimeoutError", message="boom")
    db_session.add(failure)
    db_session.commit()  # no such job in RQ (flushed, expired)
    response = client.post(URL + f"failures/{failure.id}/retry", follow_redirects=True)
    assert "re-created through the outbox" in response.text
    fresh(db_session)
    rows = db_session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
    assert [(r.queue, r.func, r.args) for r in rows] == [("issue", "issue_invoices", [41]),
                                                         ("issue", "issue_invoices", [42])]
    assert db_session.get(JobFailure, failure.id).resolution == "recreated"
    assert len(audit_rows(db_session, "ops.retry_job")) == 1


def test_periodic_failure_cannot_be_recreated(client, ops, db_session):
    failure = JobFailure(job_id="gone", queue="periodic", func="app.jobs.tasks.tick", args=[],
                         exc_type="OperationalError", message="db down")
    db_session.add(failure)
    db_session.commit()
    response = client.post(URL + f"failures/{failure.id}/retry", follow_redirects=True)
    assert response.status_code == 200 and "mark it resolved instead" in response.text
    fresh(db_session)
    assert db_session.get(JobFailure, failure.id).resolved_at is None
    assert audit_rows(db_session, "ops.retry_job") == []


def test_mark_resolved(client, ops, db_session):
    failure = JobFailure(job_id="j1", queue="decide", func="app.jobs.tasks.decide_requests", args=[[1]],
                         exc_type="ValueError", message="bad")
    db_session.add(failure)
    db_session.commit()
    client.post(URL + f"failures/{failure.id}/resolve")
    fresh(db_session)
    failure = db_session.get(JobFailure, failure.id)
    assert failure.resolved_at is not None and failure.resolved_by == ops.username
    assert failure.resolution == "resolved"
    assert [a.target for a in audit_rows(db_session, "ops.resolve_job")] == [f"JobFailure:{failure.id}"]
    assert f'data-id="{failure.id}"' not in client.get(URL).text  # resolved: no longer listed
    again = client.post(URL + f"failures/{failure.id}/resolve", follow_redirects=True)
    assert "already resolved" in again.text
    assert len(audit_rows(db_session, "ops.resolve_job")) == 1


def test_rq_only_failure_is_requeued(client, ops, db_session, monkeypatch):
    # The database was down when it failed: no job_failure row, only RQ's failed registry.
    monkeypatch.setattr("app.jobs.worker.db.transaction", _broken_transaction)
    job = _fail_a_job(db_session, "deliver", [5])
    monkeypatch.undo()
    assert db_session.scalar(select(JobFailure)) is None
    html = client.get(URL).text
    assert "rq-failed-row" in html and job.id in html and "provider said no to [5]" in html
    client.post(URL + "rq/requeue", data={"job_id": job.id})
    assert Job.fetch(job.id, connection=queues.connection()).get_status() == JobStatus.QUEUED
    assert [a.target for a in audit_rows(db_session, "ops.requeue_job")] == [f"rq:{job.id}"]
    # Requeueing twice is refused cleanly (it is no longer in the failed registry).
    again = client.post(URL + "rq/requeue", data={"job_id": job.id}, follow_redirects=True)
    assert again.status_code == 200 and "is not in RQ" in again.text


def _broken_transaction():
    raise RuntimeError("database unreachable")


# ------------------------------------------------------------------------ invoices and requests


def test_unknown_outcome_query_now(client, ops, db_session):
    stuck = make_invoice(db_session, "unknown", updated_at=utcnow() - timedelta(minutes=10))
    stuck_issuing = make_invoice(db_session, "issuing", updated_at=utcnow() - timedelta(minutes=5))
    recent = make_invoice(db_session, "unknown")
    issuing_now = make_invoice(db_session, "issuing")
    db_session.commit()
    html = client.get(URL).text
    listed = re.findall(r'class="stale-row" data-id="(\d+)"', html)
    assert listed == [str(stuck.id), str(stuck_issuing.id)]  # oldest first

    response = client.post(URL + f"invoices/{stuck.id}/query", follow_redirects=True)
    assert f"Query for invoice {stuck.serial_no} queued." in response.text
    fresh(db_session)
    [row] = db_session.scalars(select(OutboxMessage)).all()
    assert (row.queue, row.func, row.args) == ("issue", "poll_invoices", [stuck.id])
    assert [a.target for a in audit_rows(db_session, "ops.query_invoice")] == [f"Invoice:{stuck.id}"]
    assert str(recent.id) not in listed

    # An invoice a worker may be sending right now is not queried; a stuck one is.
    refused = client.post(URL + f"invoices/{issuing_now.id}/query", follow_redirects=True)
    assert refused.status_code == 200 and "only unknown, pending or stuck issuing" in refused.text
    client.post(URL + f"invoices/{stuck_issuing.id}/query")
    fresh(db_session)
    polls = [m.args for m in db_session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))]
    assert polls == [[stuck.id], [stuck_issuing.id]]


def test_held_request_decide_again(client, ops, db_session):
    held = make_request(db_session, "held", reason="SKU CUP-CERAMIC 没有税收分类编码")
    db_session.commit()
    html = client.get(URL).text
    row = re.search(rf'class="held-row" data-id="{held.id}">(.*?)</tr>', html, re.S).group(1)
    assert "SKU CUP-CERAMIC 没有税收分类编码" in row

    response = client.post(URL + f"requests/{held.id}/redecide", follow_redirects=True)
    assert f"Request {held.id} will be decided again." in response.text
    fresh(db_session)
    [row] = db_session.scalars(select(OutboxMessage)).all()
    assert (row.queue, row.func, row.args) == ("decide", "decide_requests", [held.id])
    events = db_session.scalars(select(InvoiceEvent.kind).where(InvoiceEvent.request_id == held.id)).all()
    assert "redecide_requested" in events
    assert [a.target for a in audit_rows(db_session, "ops.redecide")] == [f"InvoiceRequest:{held.id}"]


def test_held_request_skip(client, ops, db_session):
    held = make_request(db_session, "held", reason="抬头可疑")
    db_session.commit()
    client.post(URL + f"requests/{held.id}/skip")
    fresh(db_session)
    held = db_session.get(InvoiceRequest, held.id)
    assert held.status == "skipped" and held.status_reason == f"skipped by {ops.username}"
    assert [a.target for a in audit_rows(db_session, "ops.skip_request")] == [f"InvoiceRequest:{held.id}"]
    # Skipping again is refused with a message, not a 500, and changes nothing.
    again = client.post(URL + f"requests/{held.id}/skip", follow_redirects=True)
    assert again.status_code == 200 and "only held requests are skipped" in again.text
    assert len(audit_rows(db_session, "ops.skip_request")) == 1


def test_invalid_transition_is_flashed(client, ops, db_session):
    issuing = make_request(db_session, "issuing")
    db_session.commit()
    response = client.post(URL + f"requests/{issuing.id}/redecide", follow_redirects=True)
    assert response.status_code == 200
    assert "only held, skipped, failed or waiting requests are decided again" in response.text
    assert db_session.scalars(select(OutboxMessage)).all() == []
    assert audit_rows(db_session, "ops.redecide") == []
    missing = client.post(URL + "requests/999999/redecide", follow_redirects=True)
    assert missing.status_code == 200 and "does not exist" in missing.text


def test_failed_invoice_retry(client, ops, db_session):
    request = make_request(db_session, "failed")
    failed = make_invoice(db_session, "failed", request=request, failure_reason="E1001: 购方税号不存在")
    issued = make_invoice(db_session, "issued", issued_at=utcnow())
    db_session.commit()
    html = client.get(URL).text
    assert re.findall(r'class="failed-invoice-row" data-id="(\d+)"', html) == [str(failed.id)]
    assert "E1001: 购方税号不存在" in html

    response = client.post(URL + f"invoices/{failed.id}/retry", follow_redirects=True)
    assert f"Retry of invoice {failed.serial_no} queued." in response.text
    fresh(db_session)
    invoice = db_session.get(Invoice, failed.id)
    # Marked for a retry at the provider; the issue job makes the call, not the web request.
    assert invoice.status == "retry_ready" and invoice.failure_reason is None
    assert db_session.get(InvoiceRequest, request.id).status == "issuing"
    [row] = db_session.scalars(select(OutboxMessage)).all()
    assert (row.func, row.args) == ("issue_invoices", [failed.id])
    assert [a.target for a in audit_rows(db_session, "ops.retry_invoice")] == [f"Invoice:{failed.id}"]

    refused = client.post(URL + f"invoices/{issued.id}/retry", follow_redirects=True)
    assert refused.status_code == 200 and "only failed invoices are retried" in refused.text
    assert db_session.get(Invoice, issued.id).status == "issued"


# ------------------------------------------------------------------------------------ pause


PAUSE_REASON = "税务局登录已失效，需要人脸认证 / tax-bureau login expired: face authentication needed"


def test_pause_banner_and_resume(client, ops, db_session):
    assert "Issuing is paused" not in client.get(URL).text
    db_session.add(GatewayStatus(scope="default", paused=True, pause_code="auth_expired", pause_reason=PAUSE_REASON,
                                 paused_at=utcnow() - timedelta(minutes=42)))
    ready = make_invoice(db_session, "ready")
    db_session.commit()
    html = client.get(URL).text
    assert "Issuing is paused" in html and PAUSE_REASON in html and "auth_expired" in html
    assert "42 minutes" in html and "Confirm renewed / resume issuing" in html

    response = client.post(URL + "resume", follow_redirects=True)
    assert "Issuing resumed" in response.text and "Issuing is paused" not in response.text
    fresh(db_session)
    status = db_session.scalar(select(GatewayStatus))
    assert status.paused is False and status.resumed_by == ops.username
    # Resuming queues the backlog of ready invoices.
    assert [(m.func, m.args) for m in db_session.scalars(select(OutboxMessage))] == [("issue_invoices", [ready.id])]
    assert [a.target for a in audit_rows(db_session, "ops.resume")] == ["GatewayStatus:default"]

    again = client.post(URL + "resume", follow_redirects=True)
    assert "issuing is not paused" in again.text
    assert len(audit_rows(db_session, "ops.resume")) == 1


def _two_sellers(session):
    first = gen_seller(session, gen_merchant(session, "甲商户"), name="甲销售有限公司", tax_id="91110000600037341L")
    second = gen_seller(session, gen_merchant(session, "乙商户"), name="乙销售有限公司", tax_id="91310000MA1FL0000N")
    return first, second


def _banner(html: str, scope: str) -> str:
    start = html.index(f'data-scope="{scope}"')
    return html[start:html.index("</form>", start)]


def test_each_paused_seller_entity_has_its_own_banner_and_resume(client, ops, db_session):
    first, second = _two_sellers(db_session)
    db_session.add_all([
        GatewayStatus(scope=scope_of(first.id), paused=True, pause_code="credit",
                      pause_reason="monthly credit (授信额度) exhausted", paused_at=utcnow() - timedelta(hours=3)),
        GatewayStatus(scope=scope_of(second.id), paused=True, pause_code="auth_expired", pause_reason=PAUSE_REASON,
                      paused_at=utcnow() - timedelta(minutes=42))])
    first_ready = make_invoice(db_session, "ready", seller_entity_id=first.id)
    make_invoice(db_session, "ready", seller_entity_id=second.id)
    db_session.commit()
    html = client.get(URL).text
    banner = _banner(html, scope_of(first.id))
    assert "Issuing is paused for 甲销售有限公司" in banner and "91110000600037341L" in banner and "甲商户" in banner
    assert "授信额度" in banner and "3 hours" in banner and f'name="scope" value="{scope_of(first.id)}"' in banner
    banner = _banner(html, scope_of(second.id))
    assert "乙销售有限公司" in banner and PAUSE_REASON in banner and "42 minutes" in banner
    assert html.index(scope_of(first.id)) < html.index(scope_of(second.id))  # longest paused first

    response = client.post(URL + "resume", data={"scope": scope_of(first.id)}, follow_redirects=True)
    assert "Issuing resumed for 甲销售有限公司 (91110000600037341L)" in response.text
    assert "Issuing is paused for 甲销售有限公司" not in response.text and "Issuing is paused for 乙" in response.text
    fresh(db_session)
    switches = {s.scope: s for s in db_session.scalars(select(GatewayStatus))}
    assert switches[scope_of(first.id)].paused is False and switches[scope_of(first.id)].resumed_by == ops.username
    assert switches[scope_of(second.id)].paused is True
    # Only that seller's backlog is queued.
    assert [(m.func, m.args) for m in db_session.scalars(select(OutboxMessage))] == [("issue_invoices", [first_ready.id])]
    assert [a.target for a in audit_rows(db_session, "ops.resume")] == [f"GatewayStatus:{scope_of(first.id)}"]

    again = client.post(URL + "resume", data={"scope": scope_of(first.id)}, follow_redirects=True)
    assert "issuing is not paused for 甲销售有限公司" in again.text
    bogus = client.post(URL + "resume", data={"scope": "everyone"}, follow_redirects=True)
    assert "GatewayStatus everyone does not exist" in bogus.text
    assert len(audit_rows(db_session, "ops.resume")) == 1


def test_switches_of_deleted_or_unknown_sellers_do_not_break_the_page(client, ops, db_session):
    db_session.add_all([GatewayStatus(scope="seller:999", paused=True, pause_code="credit", pause_reason="x",
                                      paused_at=utcnow()),
                        GatewayStatus(scope="legacy-account", paused=True, pause_code="outage", pause_reason="y",
                                      paused_at=utcnow(), credit_remaining=Decimal("1.00"))])
    db_session.commit()
    response = client.get(URL)
    assert response.status_code == 200
    assert "Issuing is paused for Seller entity 999 (deleted)" in response.text
    assert "Issuing is paused for <code>legacy-account</code>" in response.text
    refused = client.post(URL + "resume", data={"scope": "legacy-account"}, follow_redirects=True)
    assert "GatewayStatus legacy-account does not exist" in refused.text
    resumed = client.post(URL + "resume", data={"scope": "seller:999"}, follow_redirects=True)
    assert "Issuing resumed; the backlog is queued in order." in resumed.text
    assert "Seller entity 999 (deleted)" not in resumed.text.split("Monthly credit per seller entity")[0]


def test_pause_and_resume_speak_chinese(client, login, db_session, redis_url):
    first, _ = _two_sellers(db_session)
    db_session.add(GatewayStatus(scope=scope_of(first.id), paused=True, pause_code="credit", pause_reason="x",
                                 paused_at=utcnow()))
    db_session.commit()
    login("operations")
    html = client.get(URL).text
    assert "甲销售有限公司" in html and "的开票已暂停" in html and "其他销售方主体照常开票" in html
    response = client.post(URL + "resume", data={"scope": scope_of(first.id)}, follow_redirects=True)
    assert "已恢复 甲销售有限公司 (91110000600037341L) 的开票，其积压任务已按顺序排队。" in response.text
    again = client.post(URL + "resume", data={"scope": scope_of(first.id)}, follow_redirects=True)
    assert "甲销售有限公司 的开票未暂停" in again.text


def test_failed_calls_in_a_row_are_shown_per_seller_entity(client, ops, db_session):
    first, second = _two_sellers(db_session)
    db_session.add_all([GatewayStatus(scope=scope_of(first.id), failure_streak=2),
                        GatewayStatus(scope=scope_of(second.id), failure_streak=0)])
    db_session.commit()
    html = client.get(URL).text
    warning = html[html.index(f'class="alert alert-warning failure-streak" role="status" data-scope="{scope_of(first.id)}"'):]
    assert "甲销售有限公司" in warning[:600] and "The last 2 calls to the tax provider failed" in warning[:600]
    assert f'data-scope="{scope_of(second.id)}"' not in html


# ---------------------------------------------------------------------- throughput and credit

NOW = datetime(2026, 5, 20, 10, 30, 15, tzinfo=UTC)  # 18:30:15 in Shanghai


def _seed_issued(session) -> None:
    request = make_request(session, "issued")
    for at in (NOW - timedelta(seconds=5),                 # current minute
               NOW - timedelta(seconds=10),                # current minute
               NOW - timedelta(minutes=1),                 # previous minute
               NOW - timedelta(minutes=59),                # first minute bucket (10:31 - 59 min = 09:31)
               NOW - timedelta(minutes=61),                # outside the hour, inside the current-48h window
               NOW - timedelta(hours=47, minutes=30),      # 11:00 two days ago: first hour bucket
               NOW - timedelta(hours=49)):                 # outside both
        make_invoice(session, "issued", request=request, issued_at=at)
    make_invoice(session, "ready", request=request)  # not issued: no issued_at


def test_throughput_buckets(db_session, redis_url):
    _seed_issued(db_session)
    db_session.commit()
    minutes = overview.throughput(db_session, NOW, 60, 60)
    assert len(minutes) == 60
    assert minutes[-1].start == datetime(2026, 5, 20, 10, 30, tzinfo=UTC) and minutes[-1].count == 2
    assert minutes[-2].count == 1
    assert minutes[0].start == datetime(2026, 5, 20, 9, 31, tzinfo=UTC) and minutes[0].count == 1
    assert sum(b.count for b in minutes) == 4
    hours = overview.throughput(db_session, NOW, 3600, 48)
    assert len(hours) == 48
    assert hours[0].start == datetime(2026, 5, 18, 11, tzinfo=UTC) and hours[0].count == 1
    assert hours[-1].start == datetime(2026, 5, 20, 10, tzinfo=UTC) and hours[-1].count == 3
    assert hours[-2].count == 2  # 09:31:15 and 09:29:15
    assert sum(b.count for b in hours) == 6


def _page_at(client, login, when: datetime) -> str:
    # Log in while travelling: Flask refuses a session cookie signed "in the future".
    with time_machine.travel(when, tick=False):
        login("operations")
        return client.get(URL + "?lang=en").text


def test_chart_renders_counts(client, login, redis_url, db_session):
    _seed_issued(db_session)
    db_session.commit()
    html = _page_at(client, login, NOW)
    minute_svg = html[html.index('id="chart-minute"'):html.index('id="chart-hour"')]
    hour_svg = html[html.index('id="chart-hour"'):html.index('id="invoice-states"')]
    minute_counts = [int(c) for c in re.findall(r'data-count="(\d+)"', minute_svg)]
    hour_counts = [int(c) for c in re.findall(r'data-count="(\d+)"', hour_svg)]
    assert len(minute_counts) == 60 and minute_counts[-2:] == [1, 2] and minute_counts[0] == 1
    assert sum(minute_counts) == 4
    assert len(hour_counts) == 48 and hour_counts[0] == 1 and hour_counts[-2:] == [2, 3]
    assert "<svg" in minute_svg and "18:30: 2" in minute_svg  # bar tooltips in Shanghai time
    # Self-contained: the chart is inline SVG and nothing is loaded from another host.
    assert "<script" not in minute_svg + hour_svg
    assert re.findall(r'(?:src|href)="(?:https?:)?//', html) == []


def test_chart_geometry_scales_to_the_peak():
    bars = [overview.Bar(datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i), c) for i, c in enumerate([0, 5, 10])]
    chart = charts.bar_chart(bars, lambda t: t.strftime("%H:%M"), tick_every=2)
    full = chart.plot_bottom - chart.plot_top
    assert [b.height for b in chart.bars] == [0, full / 2, full]
    assert [label for _, label in chart.ticks] == ["00:00", "00:02"]
    empty = charts.bar_chart([], str, tick_every=1)
    assert empty.bars == [] and empty.max_count == 0


def test_monthly_credit_in_shanghai_time(client, login, redis_url, db_session):
    request = make_request(db_session, "issued")
    # 2026-05-01 00:30 in Shanghai is still April in UTC: it counts for May.
    make_invoice(db_session, "issued", request=request, total="100.00", issued_at=datetime(2026, 4, 30, 16, 30, tzinfo=UTC))
    make_invoice(db_session, "delivered", request=request, total="250.50", issued_at=datetime(2026, 5, 19, tzinfo=UTC))
    make_invoice(db_session, "delivering", request=request, total="0.50", issued_at=datetime(2026, 5, 19, tzinfo=UTC))
    # Not counted: April in Shanghai, red, not issued, next month.
    make_invoice(db_session, "issued", request=request, total="999.00", issued_at=datetime(2026, 4, 30, 15, 59, tzinfo=UTC))
    make_invoice(db_session, "issued", request=request, color="red", total="-50.00", issued_at=datetime(2026, 5, 10, tzinfo=UTC))
    make_invoice(db_session, "reversed", request=request, total="70.00", issued_at=datetime(2026, 5, 10, tzinfo=UTC))
    make_invoice(db_session, "issued", request=request, total="80.00", issued_at=datetime(2026, 5, 31, 16, tzinfo=UTC))
    db_session.add(GatewayStatus(scope="default", credit_remaining=Decimal("12345.67"),
                                 credit_checked_at=datetime(2026, 5, 20, 2, 0, tzinfo=UTC)))
    db_session.commit()
    use = overview.credit_use(db_session, NOW)
    assert use.month == "2026-05" and use.issued_total == Decimal("351.00") and use.issued_count == 3
    assert use.credit_remaining == Decimal("12345.67")
    card = _page_at(client, login, NOW)
    card = card[card.index('id="credit"'):]
    assert "¥351.00" in card and "¥12,345.67" in card and "05-20 10:00" in card  # checked at, Shanghai time


def test_monthly_credit_per_seller_entity(client, login, redis_url, db_session):
    first, second = _two_sellers(db_session)
    request = make_request(db_session, "issued")
    in_may = datetime(2026, 5, 19, tzinfo=UTC)
    make_invoice(db_session, "issued", request=request, total="100.00", issued_at=in_may, seller_entity_id=first.id)
    make_invoice(db_session, "issued", request=request, total="250.50", issued_at=in_may, seller_entity_id=first.id)
    make_invoice(db_session, "issued", request=request, total="40.00", issued_at=in_may, seller_entity_id=second.id)
    make_invoice(db_session, "issued", request=request, total="999.00",  # April: not this month
                 issued_at=datetime(2026, 4, 30, 15, 59, tzinfo=UTC), seller_entity_id=second.id)
    db_session.add_all([
        GatewayStatus(scope=scope_of(first.id), credit_remaining=Decimal("649.50"),
                      credit_checked_at=datetime(2026, 5, 20, 2, 0, tzinfo=UTC)),
        GatewayStatus(scope=scope_of(second.id), credit_remaining=Decimal("0.00"), paused=True, pause_code="credit",
                      pause_reason="x", paused_at=NOW, credit_checked_at=datetime(2026, 5, 20, 1, 0, tzinfo=UTC))])
    db_session.commit()
    use = overview.credit_use(db_session, NOW)
    assert (use.issued_total, use.issued_count) == (Decimal("390.50"), 3)
    assert use.credit_remaining == Decimal("649.50")  # the accounts together
    assert use.credit_checked_at == datetime(2026, 5, 20, 1, 0, tzinfo=UTC)  # the oldest answer
    rows = [(r.seller.name, r.issued_total, r.issued_count, r.credit_remaining, r.paused) for r in use.sellers]
    assert rows == [("乙销售有限公司", Decimal("40.00"), 1, Decimal("0.00"), True),  # paused first
                    ("甲销售有限公司", Decimal("350.50"), 2, Decimal("649.50"), False)]
    html = _page_at(client, login, NOW)
    table = html[html.index('id="seller-credit"'):html.index('id="invoice-states"')]
    first_row = table[table.index(f'data-scope="{scope_of(first.id)}"'):]
    first_row = first_row[:first_row.index("</tr>")]
    assert "甲销售有限公司" in first_row and "¥350.50" in first_row and "¥649.50" in first_row
    assert "05-20 10:00" in first_row and "issuing" in first_row
    second_row = table[table.index(f'data-scope="{scope_of(second.id)}"'):]
    assert "¥40.00" in second_row[:second_row.index("</tr>")] and "paused" in second_row[:second_row.index("</tr>")]


def test_month_bounds_at_year_end():
    start, end = overview.month_bounds(datetime(2026, 12, 31, 17, tzinfo=UTC))  # 2027-01-01 01:00 Shanghai
    assert start == datetime(2026, 12, 31, 16, tzinfo=UTC) and end == datetime(2027, 1, 31, 16, tzinfo=UTC)


# ----------------------------------------------------------------------------------- Redis down


def _redis_down():
    raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


def test_redis_down_page_still_works(client, ops, db_session, monkeypatch):
    db_session.add(OutboxMessage(queue="issue", func="issue_invoices", args=[1], job_id="issue:1",
                                 created_at=utcnow() - timedelta(minutes=3)))
    make_request(db_session, "held", reason="待人工处理")
    db_session.commit()
    monkeypatch.setattr(queues, "connection", _redis_down)
    response = client.get(URL)
    assert response.status_code == 200
    html = response.text
    assert "Redis unreachable" in html and "Connection refused" in html
    assert "a growing outbox means Redis" in html
    outbox_card = html[html.index('id="outbox"'):html.index('id="credit"')]
    assert '<div class="big">1</div>' in outbox_card and "3 minutes" in outbox_card
    assert "待人工处理" in html  # the database half of the page is intact


def test_redis_down_retry_goes_through_the_outbox(client, ops, db_session, monkeypatch):
    failure = JobFailure(job_id="decide_requests-9", queue="decide", func="app.jobs.tasks.decide_requests",
                         args=[[9]], exc_type="RuntimeError", message="x")
    db_session.add(failure)
    db_session.commit()
    monkeypatch.setattr(queues, "connection", _redis_down)
    response = client.post(URL + f"failures/{failure.id}/retry", follow_redirects=True)
    assert response.status_code == 200 and "re-created through the outbox" in response.text
    fresh(db_session)
    [row] = db_session.scalars(select(OutboxMessage)).all()
    assert (row.func, row.args, row.dispatched_at) == ("decide_requests", [9], None)  # waits for Redis
    requeue = client.post(URL + "rq/requeue", data={"job_id": "x"}, follow_redirects=True)
    assert requeue.status_code == 200 and "Redis unreachable" in requeue.text


def test_redis_snapshot_down():
    original = queues.connection
    try:
        queues.connection = _redis_down
        snapshot = monitor.redis_snapshot()
    finally:
        queues.connection = original
    assert snapshot.ok is False and "ConnectionError" in snapshot.error and snapshot.queues == []


def test_registry_counts_do_not_run_rq_cleanup(redis_url, settings):
    """Counting must not fail abandoned jobs behind the worker's back (no job_failure row)."""
    queues.configure(settings)
    conn = queues.connection()
    q = Queue("issue", connection=conn)
    job = q.enqueue("app.jobs.tasks.tick")
    # An expired entry in the started registry, as a kill -9'd worker leaves it.
    conn.zadd(q.started_job_registry.key, {f"{job.id}:exec1": 1})
    rows = {r.name: r for r in monitor.queue_rows(conn)}
    assert rows["issue"].started == 1 and rows["issue"].failed == 0
    assert conn.zcard(q.started_job_registry.key) == 1


def test_deadline_alarms_are_listed(client, login, db_session):
    shop = gen_shop(db_session)
    order = Order(platform=shop.platform, shop_code=shop.shop_code, order_no="DL1", shop_id=shop.id, status="paid",
                  document=gen_order_doc(shop.shop_code, "DL1"), document_hash="x")
    db_session.add(order)
    db_session.flush()
    now = utcnow()
    db_session.add(InvoiceRequest(order_pk=order.id, title_type="personal", kind="normal", title="个人",
                                  status="waiting", requested_at=now - timedelta(hours=70),
                                  deadline_at=now + timedelta(hours=2)))
    db_session.commit()
    login("operations")
    page = client.get("/admin/ops/").text
    assert "deadline-row" in page and "80%" in page


def test_failed_calls_in_a_row_are_shown_before_they_pause(client, ops, db_session):
    assert "calls to the tax provider failed" not in client.get(URL).text
    db_session.add(GatewayStatus(scope="default", failure_streak=3))
    db_session.commit()
    html = client.get(URL).text
    assert "The last 3 calls to the tax provider failed" in html and "at 5 in a row" in html
