"""NuonuoGateway sends Nuonuo's documented shapes, byte-exact signing, and maps statuses."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
import requests
from tax_helpers import APP_SECRET, draft_invoice

from app.integrations.tax.base import IssueRequest, IssueStatus, PermanentGatewayError
from app.integrations.tax.nuonuo import NuonuoGateway, order_no_for
from app.integrations.tax.signing import nuonuo_sign


class RecordingSession(requests.Session):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        return super().send(request, **kwargs)


def test_issue_request_shape_and_signature(start_sandbox) -> None:
    box = start_sandbox("nuonuo")
    gateway = box.gateway()
    assert isinstance(gateway, NuonuoGateway)
    gateway.session = RecordingSession()
    serial = "tmall-3141592653589793-blue-1"
    gateway.issue(IssueRequest.from_draft_invoice(serial, draft_invoice()))
    token_call, issue_call = gateway.session.sent
    assert token_call.url.endswith("/accessToken")
    assert "grant_type=client_credentials" in token_call.body and APP_SECRET in token_call.body

    url = requests.utils.urlparse(issue_call.url)
    params = dict(p.split("=", 1) for p in url.query.split("&"))
    assert url.path == "/open/v1/services"
    assert re.fullmatch(r"[0-9a-f]{32}", params["senid"]) and re.fullmatch(r"[1-9][0-9]{7}", params["nonce"])
    assert params["appkey"] == gateway.app_key
    headers = issue_call.headers
    assert headers["method"] == "nuonuo.OpeMplatform.requestBillingNew"
    assert headers["userTax"] == "91110000600037341L" and headers["accessToken"]
    body = issue_call.body
    assert isinstance(body, bytes)
    # The signature covers exactly the bytes that went out.
    assert headers["X-Nuonuo-Sign"] == nuonuo_sign(APP_SECRET, "/open/v1/services", gateway.app_key,
                                                   params["senid"], params["nonce"], params["timestamp"],
                                                   body.decode("utf-8"))
    order = json.loads(body)["order"]
    assert order["orderNo"] == order_no_for(serial) and len(order["orderNo"]) <= 20
    assert (order["invoiceType"], order["invoiceLine"], order["salerTaxNum"]) == ("1", "pc", "91110000600037341L")
    assert order["naturalPersonFlag"] == "0" and order["clerk"] == "测试"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", order["invoiceDate"])
    details = order["invoiceDetail"]
    assert [d["invoiceLineProperty"] for d in details] == ["2", "1", "2", "1", "0"]
    for detail in details:
        assert {"taxExcludedAmount", "tax", "taxIncludedAmount", "taxRate", "goodsCode", "withTaxFlag"} <= set(detail)
        assert all(isinstance(v, str) for v in detail.values())  # decimals as strings, never floats
    assert details[0]["price"] == "87.61" and details[0]["num"] == "2"  # canonical: normalized decimals
    assert "price" not in details[1] and "num" not in details[1]
    assert details[1]["taxIncludedAmount"] == "-15.35"
    assert headers["accessToken"] not in repr(gateway)


def test_special_invoice_uses_bs() -> None:
    gateway = NuonuoGateway(app_key="k", app_secret="s", user_tax="91110000600037341L")
    order = gateway.build_order(IssueRequest.from_draft_invoice("S1", draft_invoice(
        kind="special", buyer={"title_type": "enterprise", "name": "上海某公司", "tax_id": "91310000MA1K000000"})))
    assert order["invoiceLine"] == "bs" and order["buyerTaxNum"] == "91310000MA1K000000"
    with pytest.raises(PermanentGatewayError) as caught:  # we only issue for the authorised seller
        NuonuoGateway(app_key="k", app_secret="s", user_tax="339902999999789113").build_order(
            IssueRequest.from_draft_invoice("S1", draft_invoice()))
    assert caught.value.code == "E9302"


@pytest.mark.parametrize(("status", "expected", "permanent"), [
    ("2", IssueStatus.ISSUED, None), ("20", IssueStatus.PENDING, None), ("21", IssueStatus.PENDING, None),
    ("22", IssueStatus.FAILED, True), ("24", IssueStatus.FAILED, False), ("3", IssueStatus.FAILED, True),
])
def test_query_status_mapping(status: str, expected: IssueStatus, permanent: bool | None) -> None:
    item = {"serialNo": "24050210000001000001", "orderNo": "TM1", "status": status, "failCause": "x",
            "invoiceTime": 1714615200000, "allElectronicInvoiceNumbe": "24332000000012345678",
            "exTaxAmount": "176.11", "taxAmount": "22.89", "orderAmount": "199.00", "pdfUrl": "u"}
    result = NuonuoGateway.result_from_item("TM1", item)
    assert result.status == expected and result.permanent is permanent
    if expected == IssueStatus.ISSUED:
        assert result.number == "24332000000012345678" and result.total == Decimal("199.00")
        assert result.issued_at is not None and result.issued_at.year == 2024


def test_unknown_status_is_not_silently_pending() -> None:
    with pytest.raises(PermanentGatewayError):
        NuonuoGateway.result_from_item("TM1", {"status": "99"})
