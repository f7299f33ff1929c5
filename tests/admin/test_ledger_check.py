"""The auditors' ledger check page (/admin/ledger_check/): the same check as kaipiao verify-log."""

from __future__ import annotations

import re

from sqlalchemy import select, text

from app import ledger
from app.services import ledger_sealing
from app.services.unit_of_work import UnitOfWork
from tests.tampering import tamper

URL = "/admin/ledger_check/"


def _sealed_events(db_session, settings, n: int = 3) -> None:
    work = UnitOfWork(db_session)
    for i in range(n):
        work.record("transition", from_state="received", to_state=f"s{i}")
    db_session.commit()
    ledger_sealing.seal_backlog(settings=settings)


def test_only_auditors_open_it(client, login):
    login("operations")
    assert client.get(URL).status_code == 403
    assert client.post(URL + "run").status_code == 403


def test_auditor_runs_the_check_and_sees_the_first_bad_row(client, login, db_session, settings, owner_url):
    login("auditor")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    page = client.get(URL).text
    assert "No check has run yet." in page
    _sealed_events(db_session, settings)
    response = client.post(URL + "run")
    assert response.status_code == 302
    page = client.get(URL).text
    assert "all ledgers verified" in page and "Last check" in page
    assert 'data-section="invoice_event"' in page and "Tampered" not in page

    target = db_session.execute(select(ledger.INVOICE_EVENTS.table.c.id)
                                .where(ledger.INVOICE_EVENTS.table.c.chain_seq == 2)).scalar_one()
    with tamper(owner_url, "invoice_event") as conn:
        conn.execute(text("UPDATE invoice_event SET actor = 'mallory' WHERE chain_seq = 2"))
    client.post(URL + "run")
    page = client.get(URL).text
    assert "tampering detected" in page
    row = re.search(r'<tr class="table-danger" data-section="invoice_event">(.*?)</tr>', page, re.S)
    assert row is not None
    assert f'<span class="bad-row">{target}</span>' in row.group(1)
    assert "the row was edited" in row.group(1)


def test_the_page_speaks_chinese_first(client, login):
    login("auditor")
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "zh-CN"
    page = client.get(URL).text
    assert "账本校验" in page and "立即校验" in page
