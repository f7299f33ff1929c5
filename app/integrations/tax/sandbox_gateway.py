"""``SandboxGateway``: the TaxGateway over the sandbox's native wire (see sandbox/app.py)."""

from __future__ import annotations

import re
import time
import uuid
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
    IdempotencyConflict,
    IssueRequest,
    IssueResult,
    IssueStatus,
    NotFound,
    OutcomeUnknown,
    PermanentGatewayError,
    RedConfirm,
    RedConfirmRequest,
    RedRequest,
    TaxGateway,
    TransientGatewayError,
    red_lines_to_list,
)

_SAFE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class SandboxGateway(TaxGateway):
    name = "sandbox"

    def __init__(self, base_url: str, app_key: str, app_secret: str, *, connect_timeout: float = 3.0,
                 read_timeout: float = 10.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.app_key = app_key
        self._app_secret = app_secret
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
        if code == "LOGIN_EXPIRED":
            raise AuthExpired(message, code=code)
        if code == "NOT_FOUND":
            raise NotFound(code, message)
        if code == "DUPLICATE_SERIAL":
            raise IdempotencyConflict(code, message)
        if code == "CREDIT_EXCEEDED":
            raise CreditExhausted(code, message)
        raise PermanentGatewayError(code, message)

    # ------------------------------------------------------------------ operations

    def issue(self, request: IssueRequest) -> Accepted:
        data = self._call("POST", "/v1/invoices", request.to_dict(), writes=True, serial_no=request.serial_no)
        return Accepted(serial_no=data["serial_no"], provider_serial=data["provider_serial"],
                        duplicate=bool(data.get("duplicate")))

    def query(self, serial_no: str) -> IssueResult:
        return self._result(self._call("GET", f"/v1/invoices/{_segment(serial_no)}"))

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

    def cancel(self, serial_no: str) -> None:
        # Cancelling twice answers "cancelled" again, so a lost answer is safe to retry.
        self._call("POST", f"/v1/invoices/{_segment(serial_no)}/cancel", {})

    def remaining_credit(self) -> Decimal:
        return Decimal(self._call("GET", "/v1/credit")["remaining"])


def _confirm(data: dict[str, Any]) -> RedConfirm:
    return RedConfirm(confirm_id=data["confirm_id"], status=ConfirmStatus(data["status"]),
                      bill_no=data.get("bill_no"), blue_number=data.get("blue_number"))


def _segment(value: str) -> str:
    # Serials go into the signed path verbatim, so only characters that need no escaping.
    if not _SAFE.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"serials may use only letters, digits, '.', '_' and '-': {value!r}")
    return value
