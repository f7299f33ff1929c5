"""``SandboxGateway``: the TaxGateway over the sandbox's native wire (see sandbox/app.py).

``issue_many`` / ``query_many`` use the wire's batch calls (``POST /v1/invoices/batch``,
``POST /v1/invoices/query``), 50 items per call. An item the provider refused maps to the
exception a single call would raise; a failure of the whole call maps like a single call's
failure, given to every item of that call (an issue batch that may have been processed is
``OutcomeUnknown`` for each of its serials, to be queried, never resent blind).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import requests

from app.integrations.tax import _http, signing
from app.integrations.tax.base import (
    Accepted,
    AuthExpired,
    ConfirmStatus,
    CreditExhausted,
    GatewayPaused,
    IdempotencyConflict,
    IssueRequest,
    IssueResult,
    IssueStatus,
    NotFound,
    NotRetryable,
    OutcomeUnknown,
    PermanentGatewayError,
    RedConfirm,
    RedConfirmRequest,
    RedRequest,
    TaxGateway,
    TaxGatewayError,
    TransientGatewayError,
    red_lines_to_list,
)
from app.integrations.tax.registry import Lookup, register, timeouts

_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")
BATCH_SIZE = 50  # the sandbox's limit per batch call


class SandboxGateway(TaxGateway):
    name = "sandbox"
    batch_size = BATCH_SIZE
    query_batch_size = BATCH_SIZE

    def __init__(self, base_url: str, app_key: str, app_secret: str, *, connect_timeout: float = 3.0,
                 read_timeout: float = 10.0, session: requests.Session | None = None,
                 seller_tax_id: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self._app_secret = app_secret
        # The seller whose account this is: the credit asked is that seller's (None: the whole sandbox's).
        self.seller_tax_id = seller_tax_id
        self.timeout = (connect_timeout, read_timeout)
        self.session = session or requests.Session()

    def __repr__(self) -> str:  # never show the secret
        return f"SandboxGateway({self.base_url!r}, app_key={self.app_key!r})"

    # ------------------------------------------------------------------ transport

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None, *, writes: bool = False,
              serial_no: str | None = None) -> dict[str, Any]:
        body = signing.dump_body(payload) if payload is not None else b""
        timestamp, nonce = str(int(time.time())), uuid.uuid4().hex
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            signing.H_APP_KEY: self.app_key,
            signing.H_TIMESTAMP: timestamp,
            signing.H_NONCE: nonce,
            signing.H_SIGNATURE: signing.native_sign(self._app_secret, method, path, timestamp, nonce, body),
        }
        response = _http.send(self.session, method, self.base_url + path, data=body, headers=headers,
                              timeout=self.timeout, writes=writes, serial_no=serial_no)
        data = _http.json_or_none(response)
        if 200 <= response.status_code < 300 and isinstance(data, dict):
            return data
        self._raise(response, data, writes=writes, serial_no=serial_no)
        raise AssertionError("unreachable")

    @staticmethod
    def _raise(response: requests.Response, data: Any, *, writes: bool, serial_no: str | None) -> None:
        error = (data or {}).get("error") if isinstance(data, dict) else None
        code = str((error or {}).get("code") or f"HTTP_{response.status_code}")
        message = str((error or {}).get("message") or response.reason or "")
        status = response.status_code
        if status == 429:
            raise TransientGatewayError(message, code=code, retry_after=_http.retry_after(response))
        if status >= 500 or error is None:
            # A 5xx on a state-changing call may come after the provider processed it.
            if writes:
                raise OutcomeUnknown(f"{status} {message}", serial_no=serial_no or "", code=code)
            raise TransientGatewayError(f"{status} {message}", code=code)
        raise _coded_error(code, message)

    @staticmethod
    def _item_error(error: Any, *, writes: bool, serial_no: str) -> TaxGatewayError:
        """The exception for one refused item of a batch answer (what the single call raises)."""
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or "UNKNOWN")
        message = str(error.get("message") or "")
        if code == "RATE_LIMITED":
            return TransientGatewayError(message, code=code)
        if code == "INTERNAL":
            if writes:
                return OutcomeUnknown(message, serial_no=serial_no, code=code)
            return TransientGatewayError(message, code=code)
        return _coded_error(code, message)

    # ------------------------------------------------------------------ operations

    def issue(self, request: IssueRequest) -> Accepted:
        data = self._call("POST", "/v1/invoices", request.to_dict(), writes=True, serial_no=request.serial_no)
        return Accepted(serial_no=data["serial_no"], provider_serial=data["provider_serial"],
                        duplicate=bool(data.get("duplicate")))

    def query(self, serial_no: str) -> IssueResult:
        return self._result(self._call("GET", f"/v1/invoices/{_segment(serial_no)}"))

    def issue_many(self, requests: Sequence[IssueRequest]) -> list[Accepted | TaxGatewayError]:
        answers: list[Accepted | TaxGatewayError] = []
        paused: GatewayPaused | None = None
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            if paused is not None:  # issuing stopped: send nothing more
                answers.extend(paused for _ in chunk)
                continue
            chunk_answers = self._issue_chunk(chunk)
            answers.extend(chunk_answers)
            paused = next((a for a in chunk_answers if isinstance(a, GatewayPaused)), None)
        return answers

    def _issue_chunk(self, chunk: Sequence[IssueRequest]) -> list[Accepted | TaxGatewayError]:
        serials = [request.serial_no for request in chunk]
        try:
            data = self._call("POST", "/v1/invoices/batch", {"invoices": [r.to_dict() for r in chunk]},
                              writes=True, serial_no=serials[0])
            results = _results(data, serials)
        except TaxGatewayError as exc:
            return [_http.per_item(exc, serial) for serial in serials]
        except _ProtocolError as exc:
            # We cannot tell which items the provider processed: query them.
            return [OutcomeUnknown(str(exc), serial_no=serial, code="BAD_BATCH_ANSWER") for serial in serials]
        answers: list[Accepted | TaxGatewayError] = []
        for serial, item in zip(serials, results, strict=True):
            if "status" not in item:  # refused (a result carries a status)
                answers.append(self._item_error(item.get("error"), writes=True, serial_no=serial))
            elif not item.get("provider_serial"):
                answers.append(OutcomeUnknown(f"batch answer for {serial} has no provider serial",
                                              serial_no=serial, code="BAD_BATCH_ANSWER"))
            else:
                answers.append(Accepted(serial_no=serial, provider_serial=str(item["provider_serial"]),
                                        duplicate=bool(item.get("duplicate"))))
        return answers

    def query_many(self, serial_nos: Sequence[str]) -> list[IssueResult | TaxGatewayError]:
        answers: list[IssueResult | TaxGatewayError] = []
        for start in range(0, len(serial_nos), self.query_batch_size):
            serials = list(serial_nos[start:start + self.query_batch_size])
            try:
                results = _results(self._call("POST", "/v1/invoices/query", {"serial_nos": serials}), serials)
            except TaxGatewayError as exc:
                answers.extend(_http.per_item(exc, serial) for serial in serials)
                continue
            except _ProtocolError as exc:
                answers.extend(TransientGatewayError(str(exc), code="BAD_BATCH_ANSWER") for _ in serials)
                continue
            for serial, item in zip(serials, results, strict=True):
                if "status" not in item:  # refused; a failed invoice's result has an error *and* a status
                    answers.append(self._item_error(item.get("error"), writes=False, serial_no=serial))
                    continue
                try:
                    answers.append(self._result(item))
                except (KeyError, TypeError, ValueError, ArithmeticError):
                    answers.append(TransientGatewayError(f"unreadable batch answer for {serial}",
                                                         code="BAD_BATCH_ANSWER"))
        return answers

    @staticmethod
    def _result(data: dict[str, Any]) -> IssueResult:
        error = data.get("error") or {}
        return IssueResult(
            serial_no=data["serial_no"],
            status=IssueStatus(data["status"]),
            provider_serial=data.get("provider_serial"),
            number=data.get("number"),
            issued_at=datetime.fromisoformat(data["issued_at"]) if data.get("issued_at") else None,
            total_amount=Decimal(data["total_amount"]) if data.get("total_amount") else None,
            total_tax=Decimal(data["total_tax"]) if data.get("total_tax") else None,
            total=Decimal(data["total"]) if data.get("total") else None,
            pdf_url=data.get("pdf_url"),
            error_code=error.get("code"),
            error_reason=error.get("message"),
            permanent=error.get("permanent") if error else None,
            extra={k: data[k] for k in ("color", "blue_number", "confirm_id") if data.get(k)},
        )

    def apply_red_confirm(self, request: RedConfirmRequest) -> RedConfirm:
        payload = {"apply_id": request.apply_id, "blue_number": request.blue_number,
                   "reason": request.reason.value, "lines": red_lines_to_list(request.lines)}
        # With our apply_id the application is idempotent, so a lost answer can simply be retried.
        data = self._call("POST", "/v1/red-confirms", payload, writes=request.apply_id is None,
                          serial_no=request.apply_id)
        return _confirm(data)

    def query_red_confirm(self, confirm_id: str) -> RedConfirm:
        return _confirm(self._call("GET", f"/v1/red-confirms/{_segment(confirm_id)}"))

    def red_letter(self, request: RedRequest) -> Accepted:
        payload = {"serial_no": request.serial_no, "blue_number": request.blue_number,
                   "reason": request.reason.value, "confirm_id": request.confirm_id,
                   "lines": red_lines_to_list(request.lines)}
        data = self._call("POST", "/v1/red-invoices", payload, writes=True, serial_no=request.serial_no)
        return Accepted(serial_no=data["serial_no"], provider_serial=data["provider_serial"],
                        duplicate=bool(data.get("duplicate")))

    def retry(self, serial_no: str) -> Accepted:
        # A write: a lost answer is OutcomeUnknown (the caller queries, never retries blind; a
        # second retry would be refused as NOT_RETRYABLE anyway, the invoice being pending).
        data = self._call("POST", f"/v1/invoices/{_segment(serial_no)}/retry", {}, writes=True,
                          serial_no=serial_no)
        return Accepted(serial_no=data["serial_no"], provider_serial=data["provider_serial"])

    def cancel(self, serial_no: str) -> None:
        # Cancelling twice answers "cancelled" again, so a lost answer is safe to retry.
        self._call("POST", f"/v1/invoices/{_segment(serial_no)}/cancel", {})

    def remaining_credit(self) -> Decimal:
        path = f"/v1/credit/{_segment(self.seller_tax_id)}" if self.seller_tax_id else "/v1/credit"
        return Decimal(self._call("GET", path)["remaining"])


def _coded_error(code: str, message: str) -> TaxGatewayError:
    """A provider refusal by its code (single calls and batch items alike)."""
    if code == "LOGIN_EXPIRED":
        return AuthExpired(message, code=code)
    if code == "NOT_FOUND":
        return NotFound(code, message)
    if code == "DUPLICATE_SERIAL":
        return IdempotencyConflict(code, message)
    if code == "NOT_RETRYABLE":
        return NotRetryable(code, message)
    if code == "CREDIT_EXCEEDED":
        return CreditExhausted(code, message)
    return PermanentGatewayError(code, message)


class _ProtocolError(Exception):
    """A batch answer that does not match the request (count or serials)."""


def _results(data: dict[str, Any], serials: list[str]) -> list[dict[str, Any]]:
    results = data.get("results")
    if not isinstance(results, list) or len(results) != len(serials):
        raise _ProtocolError(f"batch answer has {len(results) if isinstance(results, list) else 'no'} results"
                             f" for {len(serials)} items")
    for index, (serial, item) in enumerate(zip(serials, results, strict=True)):
        if not isinstance(item, dict) or item.get("serial_no") != serial:
            raise _ProtocolError(f"batch answer item {index} is not for serial {serial!r}")
    return results


def _confirm(data: dict[str, Any]) -> RedConfirm:
    return RedConfirm(confirm_id=data["confirm_id"], status=ConfirmStatus(data["status"]),
                      bill_no=data.get("bill_no"), blue_number=data.get("blue_number"))


def _segment(value: str) -> str:
    # Serials go into the signed path verbatim, so only characters that need no escaping.
    if not _SAFE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"serials may use only letters, digits, '.', '_' and '-': {value!r}")
    return value


@register("sandbox")
def _from_credentials(value: Lookup, token_store: Any = None) -> SandboxGateway:
    url = value("tax_gateway_url", "url")
    if not url:
        raise ValueError("the sandbox gateway needs tax_gateway_url")
    limits = timeouts(value)
    seller_tax_id = value("user_tax")
    return SandboxGateway(str(url), str(value("app_key")), str(value("app_secret")),
                          connect_timeout=limits.get("connect_timeout", 3.0), read_timeout=limits.get("read_timeout", 10.0),
                          seller_tax_id=str(seller_tax_id) if seller_tax_id else None)
