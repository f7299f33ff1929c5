"""``NuonuoGateway``: the TaxGateway over Nuonuo's 诺税通 (数电) open API (apis.md §7).

Every call is ``POST {services_url}?senid=&nonce=&timestamp=&appkey=`` with headers
``X-Nuonuo-Sign``, ``accessToken``, ``userTax``, ``method``; the signed body is the very bytes
sent. The access token (client_credentials, 24 h, quota-limited) is cached and refreshed once
when the provider calls it invalid; it never appears in logs, reprs or error messages.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests

from app.engine.clock import BEIJING
from app.integrations.tax import _http, signing
from app.integrations.tax import nuonuo_protocol as nn
from app.integrations.tax.base import (
    Accepted,
    AuthExpired,
    ConfirmStatus,
    CreditExhausted,
    IdempotencyConflict,
    IssueLine,
    IssueRequest,
    IssueResult,
    IssueStatus,
    LineKind,
    NotFound,
    NotRetryable,
    OutcomeUnknown,
    Party,
    PermanentGatewayError,
    RedConfirm,
    RedConfirmRequest,
    RedLine,
    RedRequest,
    TaxGateway,
    TaxGatewayError,
    TransientGatewayError,
    dec_str,
)
from app.integrations.tax.registry import Lookup, register, timeouts

_ORDER_NO = re.compile(r"[A-Za-z0-9]{1,20}")
TOKEN_MARGIN_S = 300  # refresh a little before expiry


def order_no_for(serial_no: str) -> str:
    """Nuonuo ``orderNo`` (≤20, unique per seller) derived from our serial, deterministically so a
    resend after an unknown outcome hits the same orderNo (and E9106)."""
    if _ORDER_NO.fullmatch(serial_no):
        return serial_no
    digest = base64.b32encode(hashlib.sha256(serial_no.encode()).digest()).decode()
    return "K" + digest[:19]


class TokenStore(Protocol):
    """Where access tokens live; share one across processes (tokens are quota-limited)."""

    def load(self) -> tuple[str, float] | None: ...

    def save(self, token: str, expires_at: float) -> None: ...

    def clear(self) -> None: ...


class MemoryTokenStore:
    def __init__(self) -> None:
        self._value: tuple[str, float] | None = None

    def load(self) -> tuple[str, float] | None:
        return self._value

    def save(self, token: str, expires_at: float) -> None:
        self._value = (token, expires_at)

    def clear(self) -> None:
        self._value = None

    def __repr__(self) -> str:
        return "MemoryTokenStore(<hidden>)"


class _Duplicate(Exception):
    """E9106 from the provider (internal signal)."""


class _TokenRejected(Exception):
    """E9998 / 401 token refusal (internal signal)."""


class NuonuoGateway(TaxGateway):
    name = "nuonuo"
    # No batch issue on Nuonuo (batch_size stays 1: issue_many sends one call per invoice), but
    # queryInvoiceResult takes up to 50 orderNos: query_many uses that.
    query_batch_size = nn.MAX_QUERY

    def __init__(self, *, app_key: str, app_secret: str, user_tax: str,
                 services_url: str = "https://sdk.nuonuo.com/open/v1/services",
                 token_url: str = "https://open.nuonuo.com/accessToken",
                 clerk: str = "开票员", seller_name: str | None = None, push_mode: str = "-1",
                 connect_timeout: float = 3.0, read_timeout: float = 15.0,
                 session: requests.Session | None = None, token_store: TokenStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.app_key = app_key
        self._app_secret = app_secret
        self.user_tax = user_tax
        self.services_url = services_url
        self.token_url = token_url
        self.clerk = clerk
        self.seller_name = seller_name
        self.push_mode = push_mode
        self.timeout = (connect_timeout, read_timeout)
        self.session = session or requests.Session()
        self.tokens = token_store or MemoryTokenStore()
        self._token_lock = threading.Lock()
        self._clock = clock

    def __repr__(self) -> str:
        return f"NuonuoGateway(app_key={self.app_key!r}, user_tax={self.user_tax!r})"

    # ------------------------------------------------------------------ token

    def _token(self) -> str:
        with self._token_lock:
            cached = self.tokens.load()
            if cached and cached[1] - TOKEN_MARGIN_S > self._clock():
                return cached[0]
            response = self._post_token()
            data = _http.json_or_none(response)
            if response.status_code == 429 or response.status_code >= 500:
                raise TransientGatewayError(f"token endpoint answered {response.status_code}", code="TOKEN",
                                            retry_after=_http.retry_after(response))
            if not isinstance(data, dict) or not data.get("access_token"):
                error = (data or {}).get("error") if isinstance(data, dict) else None
                raise PermanentGatewayError("TOKEN", f"access token refused: {error or response.status_code}")
            token = str(data["access_token"])
            self.tokens.save(token, self._clock() + float(data.get("expires_in", 86400)))
            return token

    def _post_token(self) -> requests.Response:
        form = {"client_id": self.app_key, "client_secret": self._app_secret, "grant_type": "client_credentials"}
        try:
            return self.session.post(self.token_url, data=form, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            # Fetching a token changes nothing we care about: always retryable.
            raise TransientGatewayError("cannot fetch Nuonuo access token", code="TOKEN") from exc

    # ------------------------------------------------------------------ transport

    def _call(self, method: str, content: dict[str, Any], *, writes: bool = False,
              serial_no: str | None = None) -> Any:
        try:
            return self._call_once(method, content, writes=writes, serial_no=serial_no)
        except _TokenRejected:
            # Refused before processing: safe to repeat once with a fresh token.
            self.tokens.clear()
            try:
                return self._call_once(method, content, writes=writes, serial_no=serial_no)
            except _TokenRejected:
                raise TransientGatewayError("Nuonuo refused a fresh access token", code=nn.E_TOKEN) from None

    def _call_once(self, method: str, content: dict[str, Any], *, writes: bool, serial_no: str | None) -> Any:
        body = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
        senid = uuid.uuid4().hex
        nonce = str(secrets.randbelow(90_000_000) + 10_000_000)  # 8-digit positive integer
        timestamp = str(int(time.time()))
        path = urlsplit(self.services_url).path
        headers = {
            "Content-Type": "application/json",
            "X-Nuonuo-Sign": signing.nuonuo_sign(self._app_secret, path, self.app_key, senid, nonce, timestamp,
                                                 body),
            "accessToken": self._token(),
            "userTax": self.user_tax,
            "method": method,
        }
        params = {"senid": senid, "nonce": nonce, "timestamp": timestamp, "appkey": self.app_key}
        response = _http.send(self.session, "POST", self.services_url, data=body.encode("utf-8"),
                              headers=headers, params=params, timeout=self.timeout, writes=writes,
                              serial_no=serial_no)
        data = _http.json_or_none(response)
        code = str(data.get("code")) if isinstance(data, dict) else ""
        describe = str(data.get("describe") or "") if isinstance(data, dict) else ""
        if code == nn.E_TOKEN or (response.status_code == 401 and code != nn.E_SIGNATURE):
            raise _TokenRejected()
        if response.status_code == 429 or code == nn.E_RATE_LIMITED:
            raise TransientGatewayError(describe or "rate limited", code=code or "HTTP_429",
                                        retry_after=_http.retry_after(response))
        if response.status_code >= 500 or code == nn.E_INTERNAL or not code:
            label = code or f"HTTP_{response.status_code}"
            if writes:
                raise OutcomeUnknown(f"{label} {describe}".strip(), serial_no=serial_no or "", code=label)
            raise TransientGatewayError(f"{label} {describe}".strip(), code=label)
        if code == nn.OK:
            return data.get("result")
        if code == nn.E_DUPLICATE:
            raise _Duplicate(describe)
        if code == nn.E_LOGIN_EXPIRED or any(hint in describe for hint in nn.LOGIN_EXPIRED_HINTS):
            raise AuthExpired(describe or "tax-bureau login expired", code=code)
        if code == nn.E_CREDIT:
            raise CreditExhausted(code, describe)
        if code == nn.E_NOT_RETRYABLE:
            raise NotRetryable(code, describe)
        raise PermanentGatewayError(code, describe)

    # ------------------------------------------------------------------ shapes

    @staticmethod
    def _now_cn(at: datetime | None) -> str:
        moment = at.astimezone(BEIJING) if at and at.tzinfo else (at or datetime.now(BEIJING))
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    def build_order(self, request: IssueRequest) -> dict[str, Any]:
        """requestBillingNew ``order`` for a blue 数电 invoice (apis.md §7.3)."""
        if request.seller.tax_id and request.seller.tax_id != self.user_tax:
            raise PermanentGatewayError(nn.E_SELLER_MISMATCH, "seller tax id differs from the authorised userTax")
        buyer = request.buyer
        order: dict[str, Any] = {"buyerName": buyer.name}
        if buyer.tax_id:
            order["buyerTaxNum"] = buyer.tax_id
        if buyer.phone:
            order["buyerTel"] = buyer.phone
        if buyer.address:
            order["buyerAddress"] = buyer.address
        if buyer.bank or buyer.account:
            order["buyerAccount"] = " ".join(filter(None, [buyer.bank, buyer.account]))
        order["naturalPersonFlag"] = "1" if buyer.natural_person else "0"
        order["salerTaxNum"] = self.user_tax
        seller = request.seller
        if seller.phone:
            order["salerTel"] = seller.phone
        if seller.address:
            order["salerAddress"] = seller.address
        if seller.bank or seller.account:
            order["salerAccount"] = " ".join(filter(None, [seller.bank, seller.account]))
        order.update({
            "orderNo": order_no_for(request.serial_no),
            "invoiceDate": self._now_cn(request.order_time),
            "clerk": self.clerk,
            "invoiceType": "1",
            "invoiceLine": nn.INVOICE_LINE[request.kind],
            "pushMode": self.push_mode,
        })
        if request.remark:
            order["remark"] = request.remark
        order["invoiceDetail"] = [self._detail(line) for line in request.lines]
        return order

    @staticmethod
    def _detail(line: IssueLine) -> dict[str, Any]:
        detail: dict[str, Any] = {"goodsName": line.name, "goodsCode": line.tax_code, "withTaxFlag": "0"}
        # price and num go together or not at all; discount rows carry neither.
        if line.kind != LineKind.DISCOUNT and line.quantity is not None and line.unit_price is not None:
            detail["price"] = dec_str(line.unit_price)
            detail["num"] = dec_str(line.quantity)
        if line.unit:
            detail["unit"] = line.unit
        if line.spec:
            detail["specType"] = line.spec
        detail.update({
            "taxRate": dec_str(line.tax_rate),
            # Always all three, so Nuonuo never recomputes them from price × num.
            "taxExcludedAmount": dec_str(line.amount),
            "tax": dec_str(line.tax),
            "taxIncludedAmount": dec_str(line.gross),
            "invoiceLineProperty": nn.LINE_PROPERTY[line.kind],
        })
        return detail

    @staticmethod
    def _red_detail(line: RedLine) -> dict[str, Any]:
        row: dict[str, Any] = {"blueDetailIndex": str(line.blue_seq), "goodsName": line.name}
        if line.quantity is not None:
            row["num"] = dec_str(line.quantity)
        if line.unit_price is not None:
            row["taxExcludedPrice"] = dec_str(abs(line.unit_price))
        row.update({"taxExcludedAmount": dec_str(line.amount), "taxAmount": dec_str(line.tax),
                    "taxRate": dec_str(line.tax_rate), "goodsCode": line.tax_code})
        return row

    # ------------------------------------------------------------------ operations

    def issue(self, request: IssueRequest) -> Accepted:
        order = self.build_order(request)
        try:
            result = self._call(nn.M_ISSUE, {"order": order}, writes=True, serial_no=request.serial_no)
        except _Duplicate:
            return self._already_accepted(request.serial_no, request.total)
        return Accepted(serial_no=request.serial_no, provider_serial=str(result["invoiceSerialNum"]))

    def _already_accepted(self, serial_no: str, total: Decimal) -> Accepted:
        """E9106: the orderNo exists. Same request resent -> accepted; different data -> conflict."""
        item = self._query_item(serial_no)
        if item is None:
            raise PermanentGatewayError(nn.E_DUPLICATE, "orderNo reported duplicate but cannot be found")
        if item.get("orderAmount") not in (None, "") and Decimal(str(item["orderAmount"])) != total:
            raise IdempotencyConflict(nn.E_DUPLICATE,
                                      f"orderNo {order_no_for(serial_no)} already used for another invoice")
        return Accepted(serial_no=serial_no, provider_serial=str(item["serialNo"]), duplicate=True)

    def _query_item(self, serial_no: str) -> dict[str, Any] | None:
        result = self._call(nn.M_QUERY, {"orderNos": [order_no_for(serial_no)], "isOfferInvoiceDetail": "0"})
        items = [item for item in result or [] if item.get("orderNo") == order_no_for(serial_no)]
        return items[0] if items else None

    def query(self, serial_no: str) -> IssueResult:
        item = self._query_item(serial_no)
        if item is None:
            raise NotFound("NOT_FOUND", f"Nuonuo has no request with orderNo {order_no_for(serial_no)}")
        return self.result_from_item(serial_no, item)

    def query_many(self, serial_nos: Sequence[str]) -> list[IssueResult | TaxGatewayError]:
        """queryInvoiceResult with up to 50 orderNos per call; items are matched back by orderNo
        (the array comes in no promised order and leaves unknown orders out: NotFound)."""
        answers: list[IssueResult | TaxGatewayError] = []
        for start in range(0, len(serial_nos), self.query_batch_size):
            chunk = list(serial_nos[start:start + self.query_batch_size])
            order_nos = [order_no_for(serial) for serial in chunk]
            try:
                result = self._call(nn.M_QUERY, {"orderNos": list(dict.fromkeys(order_nos)),
                                                 "isOfferInvoiceDetail": "0"})
                if not isinstance(result, list):
                    raise TransientGatewayError("queryInvoiceResult answered no array", code="BAD_ANSWER")
            except TaxGatewayError as exc:
                answers.extend(_http.per_item(exc, serial) for serial in chunk)
                continue
            by_order: dict[str, dict[str, Any]] = {}
            for item in result:
                if isinstance(item, dict) and item.get("orderNo") is not None:
                    by_order.setdefault(str(item["orderNo"]), item)
            for serial, order_no in zip(chunk, order_nos, strict=True):
                item = by_order.get(order_no)
                if item is None:
                    answers.append(NotFound("NOT_FOUND", f"Nuonuo has no request with orderNo {order_no}"))
                    continue
                try:
                    answers.append(self.result_from_item(serial, item))
                except TaxGatewayError as exc:
                    answers.append(exc)
        return answers

    @staticmethod
    def result_from_item(serial_no: str, item: dict[str, Any]) -> IssueResult:
        status = str(item.get("status", ""))
        number = item.get("allElectronicInvoiceNumbe") or item.get("invoiceNo") or None

        def amount(key: str) -> Decimal | None:
            value = item.get(key)
            return Decimal(str(value)) if value not in (None, "") else None

        common: dict[str, Any] = {"serial_no": serial_no, "provider_serial": item.get("serialNo"),
                                  "extra": {"nuonuo_status": status, "status_msg": item.get("statusMsg")}}
        if status == nn.STATUS_ISSUED:
            ms = item.get("invoiceTime")
            return IssueResult(
                status=IssueStatus.ISSUED, number=number,
                issued_at=datetime.fromtimestamp(int(ms) / 1000, BEIJING) if ms else None,
                total_amount=amount("exTaxAmount"), total_tax=amount("taxAmount"), total=amount("orderAmount"),
                pdf_url=item.get("pdfUrl") or None, **common)
        if status in nn.STATUS_PENDING:
            return IssueResult(status=IssueStatus.PENDING, **common)
        if status in nn.STATUS_FAILED or status in nn.STATUS_VOIDED:
            # 24 (signature failed) is retried with reInvoice; 22 needs a person to read failCause.
            return IssueResult(status=IssueStatus.FAILED, error_code=f"NUONUO_{status}",
                               error_reason=item.get("failCause") or item.get("statusMsg"),
                               permanent=status != "24", **common)
        raise PermanentGatewayError("UNKNOWN_STATUS", f"unexpected Nuonuo status {status!r}")

    def retry(self, serial_no: str) -> Accepted:
        """reInvoice (开票重试) of a request Nuonuo holds as failed (22, 24); orderNo and 流水号
        stay the same. Asked by orderNo first (a read), so a serial Nuonuo never accepted is
        ``NotFound`` and one that is not failed ``NotRetryable`` before any write is sent, and
        ``fpqqlsh`` is Nuonuo's own 流水号 (we may never have seen it: an accept can be lost).
        The request body is our choice, to verify (nuonuo_protocol.M_RETRY)."""
        order_no = order_no_for(serial_no)
        item = self._query_item(serial_no)
        if item is None:
            raise NotFound("NOT_FOUND", f"Nuonuo has no request with orderNo {order_no}")
        status = str(item.get("status", ""))
        if status not in nn.STATUS_FAILED:
            raise NotRetryable(nn.E_NOT_RETRYABLE, f"orderNo {order_no} has Nuonuo status {status}"
                                                   f" ({item.get('statusMsg') or ''}), not failed")
        provider_serial = str(item["serialNo"])
        try:
            result = self._call(nn.M_RETRY, {"fpqqlsh": provider_serial, "orderNo": order_no}, writes=True,
                                serial_no=serial_no)
        except _Duplicate as exc:  # not an answer reInvoice should give: a person must look
            raise PermanentGatewayError(nn.E_DUPLICATE, str(exc)) from None
        if isinstance(result, dict) and result.get("invoiceSerialNum"):
            provider_serial = str(result["invoiceSerialNum"])
        return Accepted(serial_no=serial_no, provider_serial=provider_serial)

    def apply_red_confirm(self, request: RedConfirmRequest) -> RedConfirm:
        if request.buyer is None:
            raise ValueError("Nuonuo's 确认单 needs the blue invoice's buyer (name, tax id)")
        content: dict[str, Any] = {}
        if request.apply_id:
            content["billId"] = request.apply_id
        content.update({
            "blueInvoiceLine": nn.INVOICE_LINE[request.blue_kind],
            "applySource": "0",
            "blueElecInvoiceNumber": request.blue_number,
            "sellerTaxNo": self.user_tax,
            "sellerName": (request.seller.name if request.seller else None) or self.seller_name or "",
            "buyerName": request.buyer.name,
            "redReason": nn.RED_REASON[request.reason],
        })
        if request.buyer.tax_id:
            content["buyerTaxNo"] = request.buyer.tax_id
        if request.lines is not None:
            content["detail"] = [self._red_detail(line) for line in request.lines]
        bill_id = self._call(nn.M_RED_CONFIRM_SAVE, content, writes=request.apply_id is None,
                             serial_no=request.apply_id)
        return self.query_red_confirm(str(bill_id))

    def _confirm_item(self, confirm_id: str) -> dict[str, Any]:
        result = self._call(nn.M_RED_CONFIRM_QUERY, {"identity": "0", "billId": confirm_id,
                                                     "pageNo": "1", "pageSize": "10"})
        items = (result or {}).get("list") or []
        if not items:
            raise NotFound("NOT_FOUND", f"no 红字确认单 {confirm_id}")
        return items[0]

    def query_red_confirm(self, confirm_id: str) -> RedConfirm:
        item = self._confirm_item(confirm_id)
        return RedConfirm(confirm_id=str(item.get("billId") or confirm_id),
                          status=ConfirmStatus(str(item["billStatus"])), bill_no=item.get("billNo"),
                          blue_number=item.get("blueElecInvoiceNumber") or item.get("blueInvoiceNumber"))

    def red_letter(self, request: RedRequest) -> Accepted:
        order_no = order_no_for(request.serial_no)
        confirm_id = request.confirm_id
        if confirm_id is None and request.lines is not None:
            # fastInvoiceRed carries no lines: a partial red goes through a 确认单, which the
            # platform answers "01 无需确认" for non-enterprise buyers. The id derives from our
            # serial so a retry finds the same application.
            confirm = self._apply_for_partial(request, f"{order_no}R")
            if not confirm.status.allows_red:
                raise PermanentGatewayError(
                    nn.E_RED_CONFIRM_REQUIRED,
                    f"确认单 {confirm.confirm_id} status {confirm.status.value}: issue the red after it is confirmed")
            confirm_id = confirm.confirm_id
        content: dict[str, Any] = {"orderNo": order_no, "taxNum": self.user_tax, "invoiceCode": "",
                                   "invoiceNumber": "", "elecInvoiceNumber": request.blue_number}
        if confirm_id:
            item = self._confirm_item(confirm_id)
            content["billNo"] = item.get("billNo") or ""
            content["billUuid"] = item.get("billUuid") or ""
        content["invoiceLine"] = nn.INVOICE_LINE[request.blue_kind]
        content["orderTime"] = self._now_cn(request.order_time)
        try:
            result = self._call(nn.M_RED_FAST, content, writes=True, serial_no=request.serial_no)
        except _Duplicate:
            found = self._query_item(request.serial_no)
            if found is None:
                raise PermanentGatewayError(nn.E_DUPLICATE, "orderNo reported duplicate but cannot be found") from None
            item = found
            if str(item.get("invoiceType", "2")) != "2":
                raise IdempotencyConflict(nn.E_DUPLICATE, f"orderNo {order_no} belongs to a blue invoice") from None
            return Accepted(serial_no=request.serial_no, provider_serial=str(item["serialNo"]), duplicate=True)
        return Accepted(serial_no=request.serial_no, provider_serial=str(result["invoiceSerialNum"]))

    def _apply_for_partial(self, request: RedRequest, apply_id: str) -> RedConfirm:
        try:
            return self.query_red_confirm(apply_id)
        except NotFound:
            pass
        blue = self._blue_parties(request)
        return self.apply_red_confirm(RedConfirmRequest(
            blue_number=request.blue_number, reason=request.reason, lines=request.lines,
            blue_kind=request.blue_kind, buyer=blue, apply_id=apply_id))

    def _blue_parties(self, request: RedRequest) -> Party:
        if request.blue_serial_no:
            result = self._call(nn.M_QUERY, {"orderNos": [order_no_for(request.blue_serial_no)],
                                             "isOfferInvoiceDetail": "0"})
            for item in result or []:
                if item.get("payerName"):
                    return Party(name=item["payerName"], tax_id=item.get("payerTaxNo") or None)
        raise ValueError("a partial red on Nuonuo needs blue_serial_no (to read the buyer) or a confirm_id")

    def cancel(self, serial_no: str) -> None:
        raise PermanentGatewayError(
            "UNSUPPORTED", "Nuonuo cannot withdraw a submitted 数电 request; wait for it and red-letter if issued")

    def remaining_credit(self) -> Decimal:
        result = self._call(nn.M_CREDIT, {"operateType": "1"})
        return Decimal(str((result or {})["remainingCreditLine"]))


@register("nuonuo")
def _from_credentials(value: Lookup, token_store: TokenStore | None = None) -> NuonuoGateway:
    """Keys: ``user_tax`` (the seller's tax id, required), ``url`` (base of both
    ``/open/v1/services`` and ``/accessToken``) or ``services_url`` / ``token_url``, ``clerk``,
    ``seller_name``."""
    user_tax = value("user_tax")
    if not user_tax:
        raise ValueError("the nuonuo gateway needs user_tax (the seller's tax id)")
    options: dict[str, Any] = dict(timeouts(value))
    url = value("tax_gateway_url", "url")
    base = str(url).rstrip("/") if url else None
    services_url = value("services_url") or (f"{base}/open/v1/services" if base else None)
    token_url = value("token_url") or (f"{base}/accessToken" if base else None)
    if services_url:
        options["services_url"] = str(services_url)
    if token_url:
        options["token_url"] = str(token_url)
    for key in ("clerk", "seller_name"):
        if value(key):
            options[key] = str(value(key))
    return NuonuoGateway(app_key=str(value("app_key")), app_secret=str(value("app_secret")),
                         user_tax=str(user_tax), token_store=token_store, **options)
