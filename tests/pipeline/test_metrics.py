"""GET /metrics: refused without the right token, free of buyer data, and its counts agree with
the database after a small run through the pipeline."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from app import create_app, db
from app.jobs import queues
from app.models import Invoice, InvoiceRequest, Order
from app.services import decide, issue
from app.services.intake import ingest
from app.services.unit_of_work import unit_of_work
from tests.factories import gen_order_doc

TOKEN = "metrics-token-for-tests"


@pytest.fixture
def metrics_client(settings, db_session):
    application = create_app({"TESTING": True, "DATABASE_URL": settings.database_url},
                             settings=replace(settings, metrics_token=TOKEN))
    return application.test_client()


def _scrape(client) -> str:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.data
    assert response.content_type.startswith("text/plain")
    return response.get_data(as_text=True)


def _value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_metrics_is_404_without_a_configured_token(client):
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 404


def test_metrics_refuses_a_missing_or_wrong_token(metrics_client, shop):
    _run(2)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        response = metrics_client.get("/metrics", headers=headers)
        assert response.status_code == 401
        assert b"kaipiao_" not in response.data
    assert "kaipiao_queue_depth" in _scrape(metrics_client)


def test_metrics_carry_no_buyer_data(metrics_client, shop):
    _run(3)
    text = _scrape(metrics_client)
    with db.transaction() as session:
        requests = session.scalars(select(InvoiceRequest)).all()
        buyer = {v for r in requests for v in (r.title, r.tax_id, r.email, r.mobile, r.phone) if v}
    assert buyer
    for value in buyer:
        assert value not in text


def _run(n: int, prefix: str = "M") -> None:
    docs = [gen_order_doc("pipe-shop", f"{prefix}{i}") for i in range(n)]
    docs = [{k: v for k, v in doc.items() if v is not None} for doc in docs]
    with unit_of_work() as work:
        result = ingest(work, docs)
    assert not result.rejected, result.rejected
    ids = [a["request_id"] for a in result.accepted]
    decide.decide_requests(ids, queues.current_settings(), issue_now=False)
    with db.transaction() as session:
        invoices = session.scalars(select(Invoice.id).where(Invoice.request_id.in_(ids))).all()
    issue.issue_invoices(invoices, queues.current_settings())


def test_metrics_counts_agree_with_the_database(metrics_client, shop):
    before = _scrape(metrics_client)
    _run(4, prefix="C")
    after = _scrape(metrics_client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    with db.transaction() as session:
        orders = session.scalar(select(func.count()).select_from(Order).where(Order.platform == "tmall"))
        issued = session.scalar(select(func.count()).select_from(Invoice).where(
            Invoice.status == "issued", Invoice.color == "blue"))
        failed = session.scalar(select(func.count()).select_from(Invoice).where(Invoice.status == "failed"))
        decided = session.scalar(select(func.count()).select_from(InvoiceRequest).where(
            InvoiceRequest.decision.is_not(None)))
    assert orders == 4 and issued >= 4
    seller = {"platform": "tmall", "seller": "main"}
    assert delta("kaipiao_orders_received_total", **seller) == orders
    assert delta("kaipiao_decisions_total", **seller) == decided
    assert delta("kaipiao_decisions_total", action="issue", **seller) == decided
    assert delta("kaipiao_invoices_issued_total", color="blue", **seller) == issued
    assert delta("kaipiao_invoices_failed_total") == failed
    assert delta("kaipiao_issue_latency_seconds_count", **seller) == issued
    assert delta("kaipiao_provider_call_seconds_count", provider="sandbox") >= 1
    # delivered / uploaded: defined, but a labelled counter shows once something is counted
    for gauge in ("kaipiao_queue_depth", "kaipiao_outbox_backlog", "kaipiao_ledger_unsealed_events"):
        assert re.search(rf"^{gauge}(\{{| )", after, re.M), gauge
    assert _value(after, "kaipiao_gauge_errors") == 0
