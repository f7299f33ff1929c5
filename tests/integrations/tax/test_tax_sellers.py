"""Every seller (tax id) is its own account at the sandbox provider, as at a real one: its own
monthly credit (授信额度) and its own tax-bureau login, through both wires."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

import pytest
import requests
from tax_helpers import SELLER_TAX_ID, issue_request, wait_issued

from app.integrations.tax.base import Accepted, AuthExpired, CreditExhausted, IssueStatus

OTHER_TAX_ID = "91310000MA1FL0000N"  # a second seller (上海)


def other(serial_no: str):
    """The worked invoice, sold by the second seller."""
    return issue_request(serial_no, seller={"name": "上海另一家有限公司", "tax_id": OTHER_TAX_ID})


def test_each_seller_has_its_own_monthly_credit(any_sandbox) -> None:
    mine, theirs = any_sandbox.gateway(seller_tax_id=SELLER_TAX_ID), any_sandbox.gateway(seller_tax_id=OTHER_TAX_ID)
    assert any_sandbox.admin("credit", {"limit": "500.00", "seller_tax_id": SELLER_TAX_ID})["limit"] == "500.00"
    mine.issue(issue_request("own-1"))
    mine.issue(issue_request("own-2"))  # 495.80 of 500.00 used
    with pytest.raises(CreditExhausted):
        mine.issue(issue_request("own-3"))
    theirs.issue(other("their-1"))  # the other seller's credit is untouched by the first one's
    assert wait_issued(theirs, "their-1").status == IssueStatus.ISSUED
    assert mine.remaining_credit() == Decimal("4.20")
    assert theirs.remaining_credit() == Decimal("10000000.00") - Decimal("247.90")
    one = requests.get(f"{any_sandbox.url}/admin/credit", params={"seller_tax_id": OTHER_TAX_ID}, timeout=5).json()
    assert (one["seller_tax_id"], one["used"], one["limit"]) == (OTHER_TAX_ID, "247.90", "10000000.00")
    every = any_sandbox.admin("credit")
    assert every["used"] == "743.70"  # every seller together
    assert every["sellers"] == {
        SELLER_TAX_ID: {"limit": "500.00", "used": "495.80", "remaining": "4.20"},
        OTHER_TAX_ID: {"limit": "10000000.00", "used": "247.90", "remaining": "9999752.10"}}


def test_a_native_batch_uses_each_items_sellers_credit(start_sandbox) -> None:
    box = start_sandbox("native", credit_limits={SELLER_TAX_ID: "300.00"})  # one 247.90 invoice fits
    answers = box.gateway().issue_many([issue_request("b-1"), issue_request("b-2"), other("b-3")])
    assert [type(a) for a in answers] == [Accepted, CreditExhausted, Accepted]
    assert box.gateway(seller_tax_id=SELLER_TAX_ID).remaining_credit() == Decimal("52.10")


def test_limits_without_a_seller_apply_to_every_seller(sandbox) -> None:
    sandbox.admin("credit", {"limit": "300.00", "seller_tax_id": SELLER_TAX_ID})
    sandbox.gateway().issue_many([issue_request("all-1"), other("all-2")])
    every = sandbox.admin("credit", {"limit": "1000.00"})  # every seller's limit, their own dropped
    assert every["limit"] == "1000.00" and every["used"] == "495.80"
    assert {t: s["limit"] for t, s in every["sellers"].items()} == {SELLER_TAX_ID: "1000.00", OTHER_TAX_ID: "1000.00"}
    every = sandbox.admin("credit", {"used": "0.00"})  # a new start for every seller's month
    assert every["used"] == "0.00" and all(s["used"] == "0.00" for s in every["sellers"].values())


def test_the_login_of_one_seller_expires_alone(any_sandbox) -> None:
    mine, theirs = any_sandbox.gateway(seller_tax_id=SELLER_TAX_ID), any_sandbox.gateway(seller_tax_id=OTHER_TAX_ID)
    state = any_sandbox.admin("expire-login", {"seller_tax_id": SELLER_TAX_ID})
    assert state == {"login_expired": False, "login_expired_sellers": [SELLER_TAX_ID]}
    with pytest.raises(AuthExpired):
        mine.issue(issue_request("lo-1"))
    theirs.issue(other("lo-2"))
    assert wait_issued(theirs, "lo-2").status == IssueStatus.ISSUED
    assert any_sandbox.admin("renew-login", {"seller_tax_id": SELLER_TAX_ID})["login_expired_sellers"] == []
    mine.issue(issue_request("lo-1"))
    assert wait_issued(mine, "lo-1").status == IssueStatus.ISSUED
    assert any_sandbox.counters()["login_expired_refusals"] == 1


def test_an_expired_seller_refuses_its_retries_and_reds_and_a_batch_it_is_in(sandbox) -> None:
    from app.integrations.tax.base import RedReason, RedRequest

    gateway = sandbox.gateway()
    gateway.issue(issue_request("x-blue"))
    number = wait_issued(gateway, "x-blue").number
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    gateway.issue(other("x-failed"))
    assert wait_issued(gateway, "x-failed").status == IssueStatus.FAILED
    sandbox.admin("expire-login", {"seller_tax_id": SELLER_TAX_ID})
    with pytest.raises(AuthExpired):
        gateway.red_letter(RedRequest("x-red", number, RedReason.WRONG))
    answers = gateway.issue_many([other("x-2"), issue_request("x-3")])  # one expired seller: the whole call
    assert all(isinstance(a, AuthExpired) for a in answers)
    gateway.retry("x-failed")  # the other seller's retry goes through
    assert wait_issued(gateway, "x-failed").status == IssueStatus.ISSUED
    sandbox.admin("expire-login", {"seller_tax_id": OTHER_TAX_ID})
    sandbox.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    sandbox.admin("renew-login", {"seller_tax_id": OTHER_TAX_ID})
    gateway.issue(other("x-4"))
    assert wait_issued(gateway, "x-4").status == IssueStatus.FAILED
    sandbox.admin("expire-login", {"seller_tax_id": OTHER_TAX_ID})
    with pytest.raises(AuthExpired):
        gateway.retry("x-4")


def test_one_seller_cannot_renew_while_every_login_is_expired(sandbox) -> None:
    sandbox.admin("expire-login")
    response = requests.post(f"{sandbox.url}/admin/renew-login", json={"seller_tax_id": SELLER_TAX_ID}, timeout=5)
    assert response.status_code == 400 and "renew without seller_tax_id" in response.text
    with pytest.raises(AuthExpired):
        sandbox.gateway().issue(other("ev-1"))
    assert sandbox.admin("renew-login") == {"login_expired": False, "login_expired_sellers": []}
    assert isinstance(sandbox.gateway().issue(other("ev-1")), Accepted)


def test_a_sellers_expired_login_survives_a_restart(start_sandbox, tmp_path) -> None:
    db = tmp_path / "login.sqlite3"
    first = start_sandbox("native", db_path=db)
    first.admin("expire-login", {"seller_tax_id": OTHER_TAX_ID})
    first.stop()
    second = start_sandbox("native", db_path=db)
    with pytest.raises(AuthExpired):
        second.gateway().issue(other("re-1"))
    assert isinstance(second.gateway().issue(issue_request("re-2")), Accepted)


def test_a_store_from_before_sellers_gets_each_sellers_use_from_its_invoices(start_sandbox, tmp_path) -> None:
    db = tmp_path / "old.sqlite3"
    first = start_sandbox("native", db_path=db)
    gateway = first.gateway()
    gateway.issue(issue_request("old-1"))
    gateway.issue(other("old-2"))
    first.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    gateway.issue(other("old-3"))
    assert wait_issued(gateway, "old-3").status == IssueStatus.FAILED  # its credit given back
    first.stop()
    conn = sqlite3.connect(db)  # the shape the store had before: one row per month
    conn.executescript("DROP TABLE seller_credit; CREATE TABLE credit (month TEXT PRIMARY KEY, used_fen INTEGER NOT NULL);"
                       "INSERT INTO credit VALUES ('2026-01', 49580);")
    conn.close()
    second = start_sandbox("native", db_path=db)
    assert second.admin("credit")["sellers"] == {
        SELLER_TAX_ID: {"limit": "10000000.00", "used": "247.90", "remaining": "9999752.10"},
        OTHER_TAX_ID: {"limit": "10000000.00", "used": "247.90", "remaining": "9999752.10"}}


def test_bad_admin_bodies_are_refused(sandbox) -> None:
    for path, body in (("expire-login", {"seller_tax_id": 42}), ("credit", {"limit": "1", "seller_tax_id": ""})):
        assert requests.post(f"{sandbox.url}/admin/{path}", json=body, timeout=5).status_code == 400
    response = requests.post(f"{sandbox.url}/admin/faults", json={"login_expired_sellers": "x"}, timeout=5)
    assert response.status_code == 400 and "login_expired_sellers" in response.text
