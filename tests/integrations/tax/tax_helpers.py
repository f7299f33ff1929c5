"""Helpers for the tax gateway tests (imported by conftest and the test modules)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from app.integrations.tax.base import IssueRequest, IssueResult, IssueStatus, TaxGateway
from app.integrations.tax.nuonuo import NuonuoGateway
from app.integrations.tax.sandbox import SandboxGateway

APP_KEY = "test-app"
APP_SECRET = "test-secret-not-for-production"
SELLER_TAX_ID = "91110000600037341L"  # province 11 (北京) in USCC chars 3–4
ENTERPRISE_BUYER = {"title_type": "enterprise", "name": "上海某公司", "tax_id": "91310000MA1K000000"}

# contracts/examples/worked-draft-discount-line.json invoices[0] (personal buyer, two discount pairs).
WORKED_INVOICE: dict[str, Any] = {
    "kind": "normal", "color": "blue",
    "buyer": {"title_type": "personal", "name": "个人"},
    "seller": {"name": "杭州青禾电子商务有限公司", "tax_id": SELLER_TAX_ID},
    "remark": "订单号:3141592653589793",
    "lines": [
        {"seq": 1, "kind": "discounted", "name": "手工陶瓷杯", "tax_code": "1060502990000000000",
         "amount": "175.22", "tax_rate": "0.13", "tax": "22.78", "gross": "198.00", "unit": "个",
         "quantity": "2", "unit_price": "87.61000000"},
        {"seq": 2, "kind": "discount", "name": "手工陶瓷杯", "tax_code": "1060502990000000000",
         "amount": "-13.58", "tax_rate": "0.13", "tax": "-1.77", "gross": "-15.35"},
        {"seq": 3, "kind": "discounted", "name": "Python编程", "tax_code": "1060201010000000000",
         "amount": "54.95", "tax_rate": "0.09", "tax": "4.95", "gross": "59.90", "unit": "本",
         "quantity": "1", "unit_price": "54.95000000"},
        {"seq": 4, "kind": "discount", "name": "Python编程", "tax_code": "1060201010000000000",
         "amount": "-4.27", "tax_rate": "0.09", "tax": "-0.38", "gross": "-4.65"},
        {"seq": 5, "kind": "normal", "name": "运费", "tax_code": "1060502990000000000",
         "amount": "8.85", "tax_rate": "0.13", "tax": "1.15", "gross": "10.00"},
    ],
    "total_amount": "221.17", "total_tax": "26.73", "total": "247.90", "total_in_words": "贰佰肆拾柒圆玖角整",
}


def draft_invoice(**overrides: Any) -> dict[str, Any]:
    invoice = copy.deepcopy(WORKED_INVOICE)
    invoice.update(copy.deepcopy(overrides))
    return invoice


def issue_request(serial_no: str, **overrides: Any) -> IssueRequest:
    return IssueRequest.from_draft_invoice(serial_no, draft_invoice(**overrides))


@dataclass
class Sandbox:
    url: str
    wire: str
    db_path: Path
    stop: Callable[[], None]

    def admin(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        if payload is None and path in ("state", "faults", "credit"):
            response = requests.get(f"{self.url}/admin/{path}", timeout=5)
        else:
            response = requests.post(f"{self.url}/admin/{path}", json=payload or {}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def faults(self, **patch: Any) -> dict[str, Any]:
        return self.admin("faults", patch)

    def counters(self) -> dict[str, int]:
        return self.admin("state")["counters"]

    def gateway(self, *, read_timeout: float = 5.0, seller_tax_id: str | None = None) -> TaxGateway:
        """A gateway onto the sandbox; ``seller_tax_id``: the account of that seller (native:
        without one, the credit asked is the whole sandbox's; Nuonuo: SELLER_TAX_ID's)."""
        if self.wire == "native":
            return SandboxGateway(self.url, APP_KEY, APP_SECRET, connect_timeout=2, read_timeout=read_timeout,
                                  seller_tax_id=seller_tax_id)
        return NuonuoGateway(app_key=APP_KEY, app_secret=APP_SECRET, user_tax=seller_tax_id or SELLER_TAX_ID,
                             services_url=f"{self.url}/open/v1/services", token_url=f"{self.url}/accessToken",
                             clerk="测试", connect_timeout=2, read_timeout=read_timeout)


def wait_issued(gateway: TaxGateway, serial_no: str, timeout: float = 5.0) -> IssueResult:
    deadline = time.monotonic() + timeout
    while True:
        result = gateway.query(serial_no)
        if result.status != IssueStatus.PENDING or time.monotonic() > deadline:
            return result
        time.sleep(0.05)
