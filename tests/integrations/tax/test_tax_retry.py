"""开票重试: a request the provider holds as failed is retried under the same serial, through
both adapters and both wires; one invoice per serial, ever."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import requests
from tax_helpers import APP_KEY, APP_SECRET, SELLER_TAX_ID, issue_request, wait_issued

from app.integrations.tax import nuonuo_protocol as nn
from app.integrations.tax.base import (
    CreditExhausted,
    IssueStatus,
    NotFound,
    NotRetryable,
    OutcomeUnknown,
    PermanentGatewayError,
    RetryUnsupported,
    TaxGateway,
)
from app.integrations.tax.nuonuo import order_no_for
from app.integrations.tax.sandbox import SandboxGateway
from app.integrations.tax.signing import (
    H_APP_KEY,
    H_NONCE,
    H_SIGNATURE,
    H_TIMESTAMP,
    native_sign,
    nuonuo_sign,
)
from sandbox.tax import service as sandbox_service


def _failed(box, serial: str, **overrides) -> None:
    """Issue ``serial`` and let the provider fail it (the injected bureau failure)."""
    box.faults(calls={"issue": {"mode": "fail_later", "count": 1}})
    gateway = box.gateway()
    gateway.issue(issue_request(serial, **overrides))
    assert wait_issued(gateway, serial).status == IssueStatus.FAILED


def test_a_failed_invoice_is_retried_under_the_same_serial(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    _failed(any_sandbox, "re-1")
    before = gateway.query("re-1")
    retried = gateway.retry("re-1")
    assert retried.serial_no == "re-1" and retried.provider_serial == before.provider_serial
    assert not retried.duplicate
    result = wait_issued(gateway, "re-1")
    assert result.status == IssueStatus.ISSUED and len(result.number) == 20
    assert result.provider_serial == before.provider_serial
    state = any_sandbox.admin("state")
    assert state["invoices"] == {"blue.issued": 1}  # the same row: one invoice for the serial
    assert state["counters"]["retried"] == 1
    # Retrying it again is refused: it is issued, there is nothing to retry.
    with pytest.raises(NotRetryable):
        gateway.retry("re-1")
    assert wait_issued(gateway, "re-1").number == result.number
    assert any_sandbox.admin("state")["invoices"] == {"blue.issued": 1}


def test_a_retry_can_fail_again_and_be_retried_again(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    _failed(any_sandbox, "re-2")
    any_sandbox.faults(calls={"retry": {"mode": "fail_later", "count": 1}})
    gateway.retry("re-2")
    failed = wait_issued(gateway, "re-2")
    assert failed.status == IssueStatus.FAILED and failed.error_reason
    gateway.retry("re-2")
    assert wait_issued(gateway, "re-2").status == IssueStatus.ISSUED
    state = any_sandbox.admin("state")
    assert state["invoices"] == {"blue.issued": 1} and state["counters"]["retried"] == 2


def test_what_cannot_be_retried_is_refused(any_sandbox) -> None:
    gateway = any_sandbox.gateway()
    with pytest.raises(NotFound):
        gateway.retry("re-never")
    any_sandbox.faults(issue_delay_ms=60_000)
    gateway.issue(issue_request("re-pending"))
    with pytest.raises(NotRetryable):  # still issuing: nothing to retry
        gateway.retry("re-pending")
    any_sandbox.faults(issue_delay_ms=0)
    gateway.issue(issue_request("re-issued"))
    assert wait_issued(gateway, "re-issued").status == IssueStatus.ISSUED
    with pytest.raises(NotRetryable) as caught:
        gateway.retry("re-issued")
    if any_sandbox.wire == "nuonuo":  # the adapter asked first and sent no reInvoice
        assert caught.value.code == nn.E_NOT_RETRYABLE and "not failed" in caught.value.reason
    else:
        assert "发票已生成" in caught.value.reason
    state = any_sandbox.admin("state")
    assert state["invoices"] == {"blue.pending": 1, "blue.issued": 1}
    assert "retried" not in state["counters"]


def test_a_submission_refused_for_its_data_leaves_nothing_to_retry(any_sandbox) -> None:
    """The provider stores nothing when it refuses the data: a retry finds no such serial
    (NotFound), so the caller sends the same serial again, with the data as it is then."""
    gateway = any_sandbox.gateway()
    bad = issue_request("re-bad").lines[0].to_dict() | {"tax_code": "9060502990000000000"}
    lines = [bad, *[line.to_dict() for line in issue_request("re-bad").lines[1:]]]
    with pytest.raises(PermanentGatewayError):
        gateway.issue(issue_request("re-bad", lines=lines))
    with pytest.raises(NotFound):
        gateway.retry("re-bad")
    gateway.issue(issue_request("re-bad"))
    assert wait_issued(gateway, "re-bad").status == IssueStatus.ISSUED
    assert any_sandbox.admin("state")["invoices"] == {"blue.issued": 1}


def test_a_lost_retry_answer_is_queried_and_a_blind_second_retry_is_refused(any_sandbox) -> None:
    _failed(any_sandbox, "re-3")
    any_sandbox.faults(calls={"retry": {"mode": "timeout", "count": 1}}, timeout_sleep_ms=700)
    gateway = any_sandbox.gateway(read_timeout=0.3)
    with pytest.raises(OutcomeUnknown) as caught:
        gateway.retry("re-3")
    assert caught.value.serial_no == "re-3"
    assert wait_issued(gateway, "re-3").status == IssueStatus.ISSUED  # the query tells: it was processed
    with pytest.raises(NotRetryable):  # a second retry would change nothing
        gateway.retry("re-3")
    state = any_sandbox.admin("state")
    assert state["invoices"] == {"blue.issued": 1} and state["counters"]["retried"] == 1


def test_retries_per_serial_and_day_are_capped(any_sandbox, monkeypatch) -> None:
    monkeypatch.setattr(sandbox_service, "MAX_RETRIES_PER_DAY", 2)
    gateway = any_sandbox.gateway()
    _failed(any_sandbox, "re-4")
    any_sandbox.faults(calls={"retry": {"mode": "fail_later"}})  # every retry fails again
    for _ in range(2):
        gateway.retry("re-4")
        assert wait_issued(gateway, "re-4").status == IssueStatus.FAILED
    with pytest.raises(PermanentGatewayError) as caught:
        gateway.retry("re-4")
    assert caught.value.code == ("E9613" if any_sandbox.wire == "nuonuo" else "RETRY_LIMIT")
    assert any_sandbox.admin("state")["counters"]["retried"] == 2


def test_a_retry_takes_the_credit_the_failure_gave_back(sandbox) -> None:
    gateway = sandbox.gateway()
    _failed(sandbox, "re-5")
    assert sandbox.admin("credit")["used"] == "0.00"  # the failure gave its credit back
    sandbox.admin("credit", {"limit": "100.00"})
    with pytest.raises(CreditExhausted):
        gateway.retry("re-5")
    sandbox.admin("credit", {"limit": "1000.00"})
    gateway.retry("re-5")
    assert wait_issued(gateway, "re-5").status == IssueStatus.ISSUED
    assert sandbox.admin("credit")["used"] == "247.90"


def test_a_failed_red_invoice_is_retried(sandbox) -> None:
    from app.integrations.tax.base import RedReason, RedRequest

    gateway = sandbox.gateway()
    gateway.issue(issue_request("re-blue"))
    blue = wait_issued(gateway, "re-blue").number
    sandbox.faults(calls={"red": {"mode": "fail_later", "count": 1}})
    gateway.red_letter(RedRequest(serial_no="re-red", blue_number=blue, reason=RedReason.WRONG))
    assert wait_issued(gateway, "re-red").status == IssueStatus.FAILED
    gateway.retry("re-red")
    assert wait_issued(gateway, "re-red").status == IssueStatus.ISSUED
    assert sandbox.admin("state")["invoices"] == {"blue.issued": 1, "red.issued": 1}


def test_a_provider_without_retry_says_so_and_sends_nothing(sandbox) -> None:
    class NoRetry(SandboxGateway):
        retry = TaxGateway.retry  # the interface's default

    gateway = NoRetry(sandbox.url, APP_KEY, APP_SECRET)
    _failed(sandbox, "re-6")
    with pytest.raises(RetryUnsupported):
        gateway.retry("re-6")
    # retry_many gives the error per serial, and stops sending once the provider pauses.
    sandbox.admin("expire-login")
    answers = sandbox.gateway().retry_many(["re-6", "re-never"])
    assert [type(a).__name__ for a in answers] == ["AuthExpired", "AuthExpired"]
    assert sandbox.counters()["login_expired_refusals"] == 1
    assert "retried" not in sandbox.counters()


# -------------------------------------------------------------------------------- the wires


def _native_post(url: str, path: str, *, secret: str = APP_SECRET) -> requests.Response:
    body, timestamp, nonce = b"{}", str(int(time.time())), uuid.uuid4().hex
    headers = {H_APP_KEY: APP_KEY, H_TIMESTAMP: timestamp, H_NONCE: nonce,
               H_SIGNATURE: native_sign(secret, "POST", path, timestamp, nonce, body),
               "Content-Type": "application/json"}
    return requests.post(url + path, data=body, headers=headers, timeout=5)


def test_native_retry_is_signed(sandbox) -> None:
    _failed(sandbox, "re-7")
    wrong = _native_post(sandbox.url, "/v1/invoices/re-7/retry", secret="not-the-secret")
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "BAD_SIGNATURE"
    # The path is signed: a signature for another serial's retry does not fit this one.
    timestamp, nonce = str(int(time.time())), uuid.uuid4().hex
    other = requests.post(sandbox.url + "/v1/invoices/re-7/retry", data=b"{}", timeout=5, headers={
        H_APP_KEY: APP_KEY, H_TIMESTAMP: timestamp, H_NONCE: nonce,
        H_SIGNATURE: native_sign(APP_SECRET, "POST", "/v1/invoices/re-8/retry", timestamp, nonce, b"{}")})
    assert other.status_code == 401
    assert sandbox.gateway().query("re-7").status == IssueStatus.FAILED
    ok = _native_post(sandbox.url, "/v1/invoices/re-7/retry")
    assert ok.status_code == 202
    assert ok.json() == {"serial_no": "re-7", "provider_serial": ok.json()["provider_serial"], "status": "pending",
                         "duplicate": False}
    again = _native_post(sandbox.url, "/v1/invoices/re-7/retry")
    assert again.status_code == 409 and again.json()["error"]["code"] == "NOT_RETRYABLE"
    missing = _native_post(sandbox.url, "/v1/invoices/re-none/retry")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"
    assert sandbox.counters()["signature_rejected"] == 2


def _nuonuo_post(url: str, method: str, content: dict, *, secret: str = APP_SECRET) -> requests.Response:
    token = requests.post(url + "/accessToken", data={"client_id": APP_KEY, "client_secret": APP_SECRET,
                                                      "grant_type": "client_credentials"}, timeout=5).json()
    body = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    params = {"senid": uuid.uuid4().hex, "nonce": "12345678", "timestamp": str(int(time.time())), "appkey": APP_KEY}
    sign = nuonuo_sign(secret, "/open/v1/services", APP_KEY, params["senid"], params["nonce"], params["timestamp"],
                       body)
    headers = {"X-Nuonuo-Sign": sign, "accessToken": token["access_token"], "userTax": SELLER_TAX_ID,
               "method": method, "Content-Type": "application/json"}
    return requests.post(url + "/open/v1/services", params=params, data=body.encode(), headers=headers, timeout=5)


def test_nuonuo_reinvoice_is_signed_and_names_the_invoice_by_serial_or_order(start_sandbox) -> None:
    box = start_sandbox("nuonuo")
    _failed(box, "re-9")
    order_no = order_no_for("re-9")
    [item] = _nuonuo_post(box.url, nn.M_QUERY, {"orderNos": [order_no]}).json()["result"]
    assert item["status"] == "24"  # the injected bureau failure: 开票成功签章失败, retryable
    wrong = _nuonuo_post(box.url, nn.M_RETRY, {"fpqqlsh": item["serialNo"]}, secret="not-the-secret")
    assert wrong.status_code == 401 and wrong.json()["code"] == "E9997"
    mismatch = _nuonuo_post(box.url, nn.M_RETRY, {"fpqqlsh": item["serialNo"], "orderNo": "OTHER1"})
    assert mismatch.json()["code"] == "E4000"
    unknown = _nuonuo_post(box.url, nn.M_RETRY, {"fpqqlsh": "99999999999999999999"})
    assert unknown.json()["code"] == "E4000" and "不存在" in unknown.json()["describe"]
    ok = _nuonuo_post(box.url, nn.M_RETRY, {"fpqqlsh": item["serialNo"], "orderNo": order_no})
    assert ok.json() == {"code": "E0000", "describe": "开票重试提交成功",
                         "result": {"invoiceSerialNum": item["serialNo"]}}
    [item] = _nuonuo_post(box.url, nn.M_QUERY, {"orderNos": [order_no]}).json()["result"]
    assert item["status"] == "2" and len(item["allElectronicInvoiceNumbe"]) == 20
    issued = _nuonuo_post(box.url, nn.M_RETRY, {"orderNo": order_no})  # by orderNo alone
    assert issued.json()["code"] == nn.E_NOT_RETRYABLE and "发票已生成" in issued.json()["describe"]
    counters = box.counters()
    assert counters["retried"] == 1 and counters["signature_rejected"] == 1
