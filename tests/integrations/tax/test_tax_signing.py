"""Signature vectors, request types and the gateway factory (no server)."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest
import requests
from tax_helpers import APP_KEY, APP_SECRET, SELLER_TAX_ID, draft_invoice, issue_request

from app.integrations.tax import get_gateway
from app.integrations.tax.base import IssueRequest, LineKind
from app.integrations.tax.nuonuo import NuonuoGateway, order_no_for
from app.integrations.tax.sandbox import SandboxGateway
from app.integrations.tax.signing import (
    H_APP_KEY,
    H_NONCE,
    H_SIGNATURE,
    H_TIMESTAMP,
    dump_body,
    native_sign,
    nuonuo_sign,
    nuonuo_string_to_sign,
)


def test_nuonuo_worked_vector() -> None:
    body = '{"isOfferInvoiceDetail":"1","serialNos":["24050112000001000001"]}'
    args = ("/open/v1/services", "SD63236305", "0123456789abcdef0123456789abcdef", "12345678", "1714539600", body)
    assert nuonuo_string_to_sign(*args) == (
        "a=services&l=v1&p=open&k=SD63236305&i=0123456789abcdef0123456789abcdef&n=12345678&t=1714539600"
        "&f=" + body)
    assert nuonuo_sign("SDDED2523BED4643", *args) == "8LBLA9MRG8Oxe0C+qGrv+FA+9kE="
    # One byte of difference in the body changes the signature.
    assert nuonuo_sign("SDDED2523BED4643", *args[:-1], body.replace(":", ": ", 1)) != "8LBLA9MRG8Oxe0C+qGrv+FA+9kE="


def test_native_vector_matches_independent_hmac() -> None:
    # Computed with: printf 'POST\n/v1/invoices\n1714539600\n0123456789abcdef\n{"serial_no":"S1"}' |
    #                openssl dgst -sha256 -hmac test-secret
    assert native_sign("test-secret", "post", "/v1/invoices", "1714539600", "0123456789abcdef",
                       b'{"serial_no":"S1"}') == "8c1422008cf206c7442e2c42c110367fc5c2ebd2164ba737541d5a2a2f4f9baa"


def test_from_draft_invoice_keeps_decimals() -> None:
    request = IssueRequest.from_draft_invoice("tmall-1-blue-1", draft_invoice())
    assert [line.kind for line in request.lines] == [LineKind.DISCOUNTED, LineKind.DISCOUNT, LineKind.DISCOUNTED,
                                                     LineKind.DISCOUNT, LineKind.NORMAL]
    assert request.total_amount == Decimal("221.17")
    assert request.total_tax == Decimal("26.73")
    assert request.total == Decimal("247.90")
    assert all(isinstance(line.amount, Decimal) for line in request.lines)
    body = request.to_dict()
    assert body["lines"][0]["amount"] == "175.22" and body["lines"][0]["unit_price"] == "87.61"  # normalized
    assert request.buyer.is_enterprise is False


def test_draft_rejects_floats_and_red() -> None:
    bad = draft_invoice()
    bad["lines"][0]["amount"] = 175.22
    with pytest.raises(TypeError):
        IssueRequest.from_draft_invoice("s", bad)
    with pytest.raises(ValueError):
        IssueRequest.from_draft_invoice("s", draft_invoice(color="red"))


def test_order_no_is_short_and_deterministic() -> None:
    assert order_no_for("TM3456789012345678") == "TM3456789012345678"
    long_serial = "tmall-3141592653589793-blue-1"
    derived = order_no_for(long_serial)
    assert len(derived) <= 20 and derived.isalnum()
    assert derived == order_no_for(long_serial) != order_no_for("tmall-3141592653589793-blue-2")


def test_factory_builds_each_gateway_without_default_secrets() -> None:
    class SettingsLike:
        tax_gateway = "sandbox"
        tax_gateway_url = "http://127.0.0.1:8765"

    gateway = get_gateway(SettingsLike(), app_key=APP_KEY, app_secret=APP_SECRET)
    assert isinstance(gateway, SandboxGateway) and APP_SECRET not in repr(gateway)
    nuonuo = get_gateway({"name": "nuonuo", "url": "http://127.0.0.1:1", "app_key": APP_KEY,
                          "app_secret": APP_SECRET, "user_tax": SELLER_TAX_ID})
    assert isinstance(nuonuo, NuonuoGateway)
    assert nuonuo.services_url == "http://127.0.0.1:1/open/v1/services"
    assert nuonuo.token_url == "http://127.0.0.1:1/accessToken"
    assert APP_SECRET not in repr(nuonuo)
    with pytest.raises(ValueError, match="app_secret"):
        get_gateway(SettingsLike(), app_key=APP_KEY)
    with pytest.raises(ValueError, match="user_tax"):
        get_gateway({"name": "nuonuo", "app_key": "k", "app_secret": "s"})
    with pytest.raises(ValueError, match="unknown tax gateway"):
        get_gateway({"name": "baiwang", "app_key": "k", "app_secret": "s"})


def _signed_post(url: str, path: str, body: bytes, *, secret: str = APP_SECRET, nonce: str | None = None,
                 timestamp: str | None = None) -> requests.Response:
    timestamp = timestamp or str(int(time.time()))
    nonce = nonce or uuid.uuid4().hex
    headers = {H_APP_KEY: APP_KEY, H_TIMESTAMP: timestamp, H_NONCE: nonce,
               H_SIGNATURE: native_sign(secret, "POST", path, timestamp, nonce, body),
               "Content-Type": "application/json"}
    return requests.post(url + path, data=body, headers=headers, timeout=5)


def test_bad_signature_stale_timestamp_and_replay_rejected(sandbox) -> None:
    body = dump_body(issue_request("sig-1").to_dict())
    wrong = _signed_post(sandbox.url, "/v1/invoices", body, secret="not-the-secret")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "BAD_SIGNATURE"
    stale = _signed_post(sandbox.url, "/v1/invoices", body, timestamp=str(int(time.time()) - 3600))
    assert stale.status_code == 401 and stale.json()["error"]["code"] == "STALE_TIMESTAMP"
    # A body altered after signing fails too.
    timestamp, nonce = str(int(time.time())), uuid.uuid4().hex
    headers = {H_APP_KEY: APP_KEY, H_TIMESTAMP: timestamp, H_NONCE: nonce,
               H_SIGNATURE: native_sign(APP_SECRET, "POST", "/v1/invoices", timestamp, nonce, body)}
    tampered = requests.post(sandbox.url + "/v1/invoices", data=body.replace(b"sig-1", b"sig-2"), headers=headers,
                             timeout=5)
    assert tampered.status_code == 401
    assert sandbox.admin("state")["invoices"] == {}

    nonce = uuid.uuid4().hex
    first = _signed_post(sandbox.url, "/v1/invoices", body, nonce=nonce)
    assert first.status_code == 202
    replay = _signed_post(sandbox.url, "/v1/invoices", body, nonce=nonce)
    assert replay.status_code == 401 and replay.json()["error"]["code"] == "REPLAYED_NONCE"
    counters = sandbox.counters()
    assert counters["replays_rejected"] == 1 and counters["signature_rejected"] == 3
    assert counters["accepted"] == 1


def test_nuonuo_wire_rejects_bad_sign_and_replay(start_sandbox) -> None:
    box = start_sandbox("nuonuo")
    token = requests.post(box.url + "/accessToken", data={"client_id": APP_KEY, "client_secret": APP_SECRET,
                                                          "grant_type": "client_credentials"}, timeout=5).json()
    assert token["expires_in"] == 86400
    body = '{"orderNos":["X1"],"isOfferInvoiceDetail":"0"}'
    params = {"senid": uuid.uuid4().hex, "nonce": "12345678", "timestamp": str(int(time.time())), "appkey": APP_KEY}
    sign = nuonuo_sign(APP_SECRET, "/open/v1/services", APP_KEY, params["senid"], params["nonce"],
                       params["timestamp"], body)
    headers = {"X-Nuonuo-Sign": sign, "accessToken": token["access_token"], "userTax": SELLER_TAX_ID,
               "method": "nuonuo.OpeMplatform.queryInvoiceResult", "Content-Type": "application/json"}
    ok = requests.post(box.url + "/open/v1/services", params=params, data=body.encode(), headers=headers, timeout=5)
    assert ok.status_code == 200 and ok.json() == {"code": "E0000", "describe": "获取成功", "result": []}
    replay = requests.post(box.url + "/open/v1/services", params=params, data=body.encode(), headers=headers,
                           timeout=5)
    assert replay.status_code == 401 and replay.json()["code"] != "E0000"
    bad = requests.post(box.url + "/open/v1/services", params={**params, "senid": uuid.uuid4().hex},
                        data=body.encode(), headers=headers, timeout=5)
    assert bad.status_code == 401 and "签名" in bad.json()["describe"]
    wrong_secret = requests.post(box.url + "/accessToken", data={"client_id": APP_KEY, "client_secret": "x",
                                                                 "grant_type": "client_credentials"}, timeout=5)
    assert wrong_secret.status_code == 400 and "access_token" not in wrong_secret.json()
