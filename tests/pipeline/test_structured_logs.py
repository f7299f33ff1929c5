"""Issue 15 item 4: a small run's logs are JSON lines with the required keys, the worker's
lines for the jobs an API call caused carry that call's request id, and no buyer data or
secret used in the run appears anywhere in them."""

from __future__ import annotations

import io
import json
import logging

from sqlalchemy import select

from app import db, logging_setup
from app.jobs import outbox
from app.jobs.worker import build_worker
from app.models import Invoice, InvoiceRequest
from app.services.accounts import issue_api_token
from tests.factories import gen_order_doc, gen_user

REQUIRED = {"level", "time_utc", "time_beijing", "logger", "message", "request_id", "job_id"}
BUYER = {
    "title": "蓝鲸测绘科技有限公司",
    "tax_id": "91330106MA2B3C4D5D",
    "email": "lanjing.finance@example.org",
    "mobile": "13987654321",
    "phone": "0571-88886666",
    "address": "杭州市西湖区文三路九十九号",
}
REQUEST_ID = "e2e-request-0001"


def test_a_runs_logs_are_json_with_the_request_id_and_no_buyer_data(app, db_session, shop, sandbox, settings):
    stream = io.StringIO()
    handler = logging_setup.configure("json", "DEBUG", stream=stream)  # after the app factory's
    try:
        user = gen_user(db_session, "operations")
        token = issue_api_token(user)
        db_session.commit()
        docs = []
        for n in range(3):
            doc = gen_order_doc("pipe-shop", f"LOG-{n}")
            doc["buyer"] = {"nick": "lanjing_buyer", "email": BUYER["email"], "mobile": BUYER["mobile"]}
            doc["invoice_request"] = {"kind": "normal", "title_type": "enterprise", "title": BUYER["title"],
                                      "tax_id": BUYER["tax_id"], "email": BUYER["email"],
                                      "mobile": BUYER["mobile"], "phone": BUYER["phone"],
                                      "address": BUYER["address"]}
            docs.append(doc)
        response = app.test_client().post("/api/v1/orders", json={"orders": docs}, headers={
            "Authorization": f"Bearer {token}", "X-Request-Id": REQUEST_ID})
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-Id"] == REQUEST_ID

        outbox.dispatch_pending()
        worker = build_worker(settings, ["issue", "decide"])
        for _ in range(3):  # decide (it issues what it composed), then whatever it queued
            worker.work(burst=True)
            outbox.dispatch_pending()
        logging.getLogger("kaipiao.test").info("run over")
    finally:
        logging.getLogger().removeHandler(handler)

    with db.transaction() as session:
        statuses = session.scalars(select(InvoiceRequest.status)).all()
        assert statuses and set(statuses) == {"issued"}, statuses
        assert session.scalars(select(Invoice.status)).all()

    text = stream.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]  # (a) every line is one JSON object
    assert lines
    for line in lines:
        assert REQUIRED <= line.keys(), line
    # (b) the worker's lines for the jobs the API call caused carry its request id and the job id
    job_lines = [line for line in lines if line["job_id"]]
    assert {line["request_id"] for line in job_lines} == {REQUEST_ID}, job_lines
    started = {line["job_id"]: line["message"] for line in job_lines if line["message"].endswith(" started")}
    assert any("decide_requests" in m for m in started.values()), started
    provider_calls = [line for line in lines if "/v1/invoices" in line["message"]]  # the decide job issues
    assert provider_calls and all(line["request_id"] == REQUEST_ID for line in provider_calls), provider_calls
    # (c) no buyer data and no secret anywhere in the output
    secrets = [*BUYER.values(), token, "sandbox-secret", settings.secret_key, settings.encryption_key]
    leaked = [value for value in secrets if value in text]
    assert not leaked, leaked
