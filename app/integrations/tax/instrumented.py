"""The one place provider calls are measured: ``instrumented(gateway)`` wraps any adapter, so
every call's duration and every error's code reach the metrics (app/metrics.py) whatever the
provider. Batch calls are timed once; the errors they return per item are counted by code."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from app import metrics
from app.integrations.tax.base import (
    Accepted,
    IssueRequest,
    IssueResult,
    RedConfirm,
    RedConfirmRequest,
    RedRequest,
    TaxGateway,
    TaxGatewayError,
)

T = TypeVar("T")


def _code(exc: TaxGatewayError) -> str:
    return (exc.code or type(exc).__name__)[:40]


class InstrumentedGateway(TaxGateway):
    def __init__(self, inner: TaxGateway) -> None:
        self.inner = inner
        self.name = inner.name
        self.batch_size = inner.batch_size
        self.query_batch_size = inner.query_batch_size

    def __getattr__(self, name: str) -> Any:  # adapter-specific attributes
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"InstrumentedGateway({self.inner!r})"

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        start = time.perf_counter()
        try:
            result = call()
        except TaxGatewayError as exc:
            metrics.PROVIDER_ERRORS.labels(self.name, operation, _code(exc)).inc()
            raise
        except Exception as exc:
            metrics.PROVIDER_ERRORS.labels(self.name, operation, type(exc).__name__).inc()
            raise
        finally:
            metrics.PROVIDER_CALL_SECONDS.labels(self.name, operation).observe(time.perf_counter() - start)
        if isinstance(result, list):
            codes: dict[str, int] = {}
            for answer in result:
                if isinstance(answer, TaxGatewayError):
                    codes[_code(answer)] = codes.get(_code(answer), 0) + 1
            for code, n in codes.items():
                metrics.PROVIDER_ERRORS.labels(self.name, operation, code).inc(n)
        return result

    def issue(self, request: IssueRequest) -> Accepted:
        return self._call("issue", lambda: self.inner.issue(request))

    def query(self, serial_no: str) -> IssueResult:
        return self._call("query", lambda: self.inner.query(serial_no))

    def issue_many(self, requests: Sequence[IssueRequest]) -> list[Accepted | TaxGatewayError]:
        return self._call("issue_many", lambda: self.inner.issue_many(requests))

    def query_many(self, serial_nos: Sequence[str]) -> list[IssueResult | TaxGatewayError]:
        return self._call("query_many", lambda: self.inner.query_many(serial_nos))

    def retry(self, serial_no: str) -> Accepted:
        return self._call("retry", lambda: self.inner.retry(serial_no))

    def retry_many(self, serial_nos: Sequence[str]) -> list[Accepted | TaxGatewayError]:
        return self._call("retry_many", lambda: self.inner.retry_many(serial_nos))

    def apply_red_confirm(self, request: RedConfirmRequest) -> RedConfirm:
        return self._call("apply_red_confirm", lambda: self.inner.apply_red_confirm(request))

    def query_red_confirm(self, confirm_id: str) -> RedConfirm:
        return self._call("query_red_confirm", lambda: self.inner.query_red_confirm(confirm_id))

    def red_letter(self, request: RedRequest) -> Accepted:
        return self._call("red_letter", lambda: self.inner.red_letter(request))

    def cancel(self, serial_no: str) -> None:
        return self._call("cancel", lambda: self.inner.cancel(serial_no))

    def remaining_credit(self) -> Decimal:
        return self._call("remaining_credit", lambda: self.inner.remaining_credit())


def instrumented(gateway: TaxGateway) -> TaxGateway:
    return gateway if isinstance(gateway, InstrumentedGateway) else InstrumentedGateway(gateway)
