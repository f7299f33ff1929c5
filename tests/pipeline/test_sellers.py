"""One merchant's trouble cannot stop the others: the monthly credit (授信额度), the tax-bureau
login, the outage count and the pause switch are per seller entity (its provider account)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import select

from app import db
from app.engine.clock import utcnow
from app.errors import Refused
from app.jobs import queues, tasks
from app.models import GatewayStatus, Invoice, InvoiceEvent, Merchant, OutboxMessage, SellerEntity, Shop
from app.services import decide, issue, issuing_control, operator_actions
from app.services.intake import ingest
from app.services.issuing_control import scope_of
from app.services.unit_of_work import unit_of_work
from tests.factories import gen_order_doc

A_TAX_ID = "91110000600037341L"  # the ``shop`` fixture's seller entity (北京)
B_TAX_ID = "91310000MA1FL0000N"  # merchant B's (上海)
DEAD_URL = "http://127.0.0.1:1"  # nothing listens: every call is refused before it is sent


def S():
    return queues.current_settings()


def _credentials(url: str) -> str:
    return json.dumps({"provider": "sandbox", "url": url, "app_key": "sandbox-app", "app_secret": "sandbox-secret",
                       "read_timeout": 1.0})


@pytest.fixture
def shop_b(shop, sandbox) -> Shop:
    """A second merchant, with its own seller entity (its own provider account) and shop."""
    with db.transaction() as session:
        merchant = Merchant(name="第二个商户")
        session.add(merchant)
        session.flush()
        seller = SellerEntity(merchant_id=merchant.id, code="main", name="上海第二商户有限公司", tax_id=B_TAX_ID,
                              is_default=True, tax_credentials=_credentials(sandbox.url))
        session.add(seller)
        session.flush()
        shop = Shop(merchant_id=merchant.id, seller_entity_id=seller.id, platform="tmall", shop_code="pipe-shop-b",
                    name="第二旗舰店", options={})
        session.add(shop)
    return shop


def _ingest(shop: Shop, order_id: str) -> int:
    doc = gen_order_doc(shop.shop_code, order_id)
    for key in [k for k, v in doc.items() if v is None]:
        del doc[key]
    with unit_of_work() as work:
        result = ingest(work, [doc])
    assert not result.rejected, result.rejected
    return result.accepted[0]["request_id"]


def _invoice(request_id: int) -> Invoice:
    with db.transaction() as session:
        return session.scalars(select(Invoice).where(Invoice.request_id == request_id)).one()


def _ready(shop: Shop, *order_ids: str) -> list[int]:
    """Orders decided and composed as ``ready`` (not sent): their invoice ids, in order."""
    requests = [_ingest(shop, order_id) for order_id in order_ids]
    decide.decide_requests(requests, S(), issue_now=False)
    return [_invoice(r).id for r in requests]


def _statuses(*invoice_ids: int) -> list[str]:
    with db.transaction() as session:
        rows = {i.id: i.status for i in session.scalars(select(Invoice).where(Invoice.id.in_(invoice_ids)))}
    return [rows[i] for i in invoice_ids]


def _switch(shop: Shop) -> GatewayStatus | None:
    with db.transaction() as session:
        return session.scalar(select(GatewayStatus).where(GatewayStatus.scope == scope_of(shop.seller_entity_id)))


def _paused(shop: Shop) -> str | None:
    switch = _switch(shop)
    return switch.pause_code if switch is not None and switch.paused else None


def _queued_issues() -> list[int]:
    with db.transaction() as session:
        return [m.args[0] for m in session.scalars(select(OutboxMessage).where(OutboxMessage.func == "issue_invoices")
                                                   .order_by(OutboxMessage.id))]


def _due_now(*invoice_ids: int) -> None:
    """Time passes: the back-off of these invoices is over."""
    with db.transaction() as session:
        for invoice in session.scalars(select(Invoice).where(Invoice.id.in_(invoice_ids))):
            invoice.next_attempt_at = None


def _sent_serials(sandbox) -> set[str]:
    return {serial for serial, _, _ in sandbox.invoices()}


def test_merchant_a_exhausts_its_monthly_credit_while_merchant_b_keeps_issuing(shop, shop_b, sandbox):
    sandbox.post("/admin/credit", {"seller_tax_id": A_TAX_ID, "limit": "500.00"})  # two 247.90 invoices
    requests = [_ingest(shop, "A1"), _ingest(shop_b, "B1"), _ingest(shop, "A2"), _ingest(shop, "A3"),
                _ingest(shop_b, "B2")]
    outcome = decide.decide_requests(requests, S())  # one job composes and sends both merchants' invoices
    a1, b1, a2, a3, b2 = (_invoice(r) for r in requests)
    assert outcome.counts["issue_accepted"] == 4 and outcome.counts["issue_paused"] == 1
    assert _statuses(a1.id, a2.id, b1.id, b2.id) == ["issued"] * 4
    assert _statuses(a3.id) == ["ready"]  # refused for want of credit: back, unsent, to wait for A
    assert _paused(shop) == "credit" and _paused(shop_b) is None
    switch = _switch(shop)
    assert "授信额度" in switch.pause_reason and switch.paused_at is not None

    # A later job: B's order is composed and sent at once, A's only composed (A is paused).
    a4_request, b3_request = _ingest(shop, "A4"), _ingest(shop_b, "B3")
    decide.decide_requests([a4_request, b3_request], S())
    a4, b3 = _invoice(a4_request), _invoice(b3_request)
    assert _statuses(a4.id, b3.id) == ["ready", "issued"]
    assert a4.serial_no not in _sent_serials(sandbox)  # nothing of A left while A is paused
    assert issue.issue_invoices([a3.id, a4.id], S()).counts == {"paused": 1}
    assert _statuses(a3.id, a4.id) == ["ready", "ready"]

    # Each seller's credit is asked of its own account.
    assert issuing_control.refresh_credit(S())
    assert str(_switch(shop).credit_remaining) == "4.20"
    assert str(_switch(shop_b).credit_remaining) == "9999256.30"  # three invoices of B

    # The credit is raised (临时调增); operations resume A: its backlog drains in order.
    sandbox.post("/admin/credit", {"seller_tax_id": A_TAX_ID, "limit": "2000.00"})
    with unit_of_work() as work:
        assert operator_actions.resume_issuing(work, "ops", scope_of(shop.seller_entity_id)).tax_id == A_TAX_ID
    assert _queued_issues()[-2:] == [a3.id, a4.id]
    issue.issue_invoices([a3.id, a4.id], S())
    a3, a4 = _invoice(a3.request_id), _invoice(a4.request_id)
    assert (a3.status, a4.status) == ("issued", "issued") and a3.number < a4.number


def test_a_login_expiry_of_one_seller_pauses_only_it(shop, shop_b, sandbox):
    a_ids, b_ids = _ready(shop, "LA1", "LA2"), _ready(shop_b, "LB1", "LB2")
    sandbox.post("/admin/expire-login", {"seller_tax_id": A_TAX_ID})
    outcome = issue.issue_invoices([a_ids[0], b_ids[0], a_ids[1], b_ids[1]], S())  # one job, both sellers
    assert outcome.counts["paused"] == 2 and outcome.counts["accepted"] == 2
    assert _statuses(*a_ids, *b_ids) == ["ready", "ready", "issued", "issued"]
    assert _paused(shop) == "auth_expired" and _paused(shop_b) is None
    assert _provider_counters(sandbox)["login_expired_refusals"] == 1  # one call, nothing more sent for A
    with db.transaction() as session:
        [paused] = session.scalars(select(InvoiceEvent).where(InvoiceEvent.kind == "issuing_paused")).all()
        assert paused.data["scope"] == scope_of(shop.seller_entity_id)

    # The tick neither probes nor requeues the seller whose login expired; B's retries go on.
    with db.transaction() as session:
        for invoice in session.scalars(select(Invoice)):
            invoice.queued_at = utcnow() - timedelta(minutes=10)
    assert tasks.tick()["retry_queued"] == 0
    assert _paused(shop) == "auth_expired"
    b_late = _ready(shop_b, "LB3")
    with db.transaction() as session:
        session.get(Invoice, b_late[0]).queued_at = utcnow() - timedelta(minutes=10)
    assert tasks.tick()["retry_queued"] == 1 and _queued_issues()[-1] == b_late[0]


def test_an_outage_probe_resumes_only_the_seller_that_was_out(shop, shop_b, sandbox, monkeypatch):
    monkeypatch.setattr(issuing_control, "OUTAGE_THRESHOLD", 2)
    third = _make_shop(sandbox, "third", "91440300MA5F000007")
    for seller_shop in (shop_b, third):  # their provider accounts are unreachable
        _set_url(seller_shop, DEAD_URL)
    a_ids, b_ids, c_ids = _ready(shop, "OA1", "OA2"), _ready(shop_b, "OB1"), _ready(third, "OC1")
    issue.issue_invoices([a_ids[0], *b_ids, *c_ids], S())  # A succeeds in the same job: not B's success
    assert [_switch(s).failure_streak for s in (shop_b, third)] == [1, 1] and _switch(shop) is None
    _due_now(*b_ids, *c_ids)
    issue.issue_invoices([a_ids[1], *b_ids, *c_ids], S())  # a second failed call in a row, each
    assert _statuses(*a_ids) == ["issued", "issued"]
    assert (_paused(shop), _paused(shop_b), _paused(third)) == (None, "outage", "outage")
    assert _statuses(*b_ids, *c_ids) == ["ready", "ready"]

    _due_now(*b_ids, *c_ids)
    assert tasks.tick().get("resumed") is None  # both still out: the probes get no answer
    assert (_paused(shop_b), _paused(third)) == ("outage", "outage")
    _set_url(shop_b, sandbox.url)  # B's provider account is back, the third's is not
    before = len(_queued_issues())
    counts = tasks.tick()
    assert counts["resumed"] == 1
    assert (_paused(shop_b), _paused(third)) == (None, "outage")
    switch = _switch(shop_b)
    assert switch.failure_streak == 0 and switch.resumed_by == "system:probe" and switch.credit_remaining > 0
    assert _queued_issues()[before:] == b_ids  # B's backlog only
    issue.issue_invoices([*b_ids, *c_ids], S())
    assert _statuses(*b_ids, *c_ids) == ["issued", "ready"]


def test_resume_drains_only_that_sellers_backlog_in_order(shop, shop_b, sandbox):
    sandbox.post("/admin/expire-login")  # every seller's login
    a_ids, b_ids = _ready(shop, "RA1", "RA2", "RA3"), _ready(shop_b, "RB1", "RB2")
    issue.issue_invoices([*a_ids, *b_ids], S())
    assert (_paused(shop), _paused(shop_b)) == ("auth_expired", "auth_expired")
    sandbox.post("/admin/renew-login")
    before = len(_queued_issues())
    with unit_of_work() as work:
        operator_actions.resume_issuing(work, "ops", scope_of(shop.seller_entity_id))
    assert _queued_issues()[before:] == a_ids  # A's backlog, oldest first, and nothing of B
    assert (_paused(shop), _paused(shop_b)) == (None, "auth_expired")
    assert issue.issue_invoices([*a_ids, *b_ids], S()).counts == {"accepted": 3, "poll_issued": 3, "paused": 1}
    numbers = [_invoice_number(i) for i in a_ids]
    assert None not in numbers and numbers == sorted(numbers)
    assert _statuses(*b_ids) == ["ready", "ready"]
    with unit_of_work() as work, pytest.raises(Refused) as refused:
        operator_actions.resume_issuing(work, "ops", scope_of(shop.seller_entity_id))
    assert refused.value.code == "seller_not_paused"


# ----------------------------------------------------------------------------------- helpers


def _make_shop(sandbox, code: str, tax_id: str) -> Shop:
    with db.transaction() as session:
        merchant = Merchant(name=f"商户 {code}")
        session.add(merchant)
        session.flush()
        seller = SellerEntity(merchant_id=merchant.id, code="main", name=f"{code}有限公司", tax_id=tax_id,
                              is_default=True, tax_credentials=_credentials(sandbox.url))
        session.add(seller)
        session.flush()
        shop = Shop(merchant_id=merchant.id, seller_entity_id=seller.id, platform="tmall", shop_code=f"shop-{code}",
                    name=code, options={})
        session.add(shop)
    return shop


def _set_url(shop: Shop, url: str) -> None:
    with db.transaction() as session:
        session.get(SellerEntity, shop.seller_entity_id).tax_credentials = _credentials(url)


def _invoice_number(invoice_id: int) -> str | None:
    with db.transaction() as session:
        return session.get(Invoice, invoice_id).number


def _provider_counters(sandbox) -> dict[str, int]:
    import requests

    return requests.get(f"{sandbox.url}/admin/state", timeout=5).json()["counters"]
