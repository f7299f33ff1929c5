"""The tax-gateway interface: what the jobs call to issue, query and reverse 数电票.

Every provider (our sandbox, Nuonuo, later Baiwang/乐企) sits behind ``TaxGateway``. Amounts are
``Decimal`` end to end; on the wire they are decimal strings. Issuing is asynchronous at every
provider, so ``issue`` only returns ``Accepted``; ``query`` tells the outcome.

Error contract (what the caller does):
* ``TransientGatewayError``: nothing happened at the provider (or it is safe to repeat):
  retry with back-off.
* ``OutcomeUnknown``: the request may have been processed: query by serial, never resend blind.
* ``PermanentGatewayError``: the provider refused the data: a person must look (code + reason).
  Two refusals of ``retry`` mean something else: ``NotRetryable`` (the provider holds the serial
  but not as failed: query it) and ``RetryUnsupported`` (the provider cannot retry: the caller
  issues under a new serial and closes the old one in the invoice log).
* ``GatewayPaused`` / ``AuthExpired``: stop issuing for this seller until a person renews the
  tax-bureau login (face authentication); then resume.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")


def money(value: Any) -> Decimal:
    """A decimal string (or Decimal/int) as a Decimal quantized to fen; floats are refused."""
    if isinstance(value, float):
        raise TypeError("money must not be a float")
    try:
        return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal amount: {value!r}") from exc


def decimal_or_none(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, float):
        raise TypeError("decimals must not be floats")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal: {value!r}") from exc


def _canonical(value: Decimal) -> Decimal:
    return value.normalize()


def _canonical_or_none(value: Decimal | None) -> Decimal | None:
    return None if value is None else value.normalize()


def dec_str(value: Decimal | None) -> str | None:
    """Plain decimal string for JSON (no exponent)."""
    if value is None:
        return None
    return format(value, "f")


# ---------------------------------------------------------------------------------------- errors


class TaxGatewayError(Exception):
    """Base of every gateway error."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = message


class TransientGatewayError(TaxGatewayError):
    """Timeouts before sending, connection refused, 5xx on reads, 429: retry with back-off."""

    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class OutcomeUnknown(TaxGatewayError):
    """The request was sent and may have been processed: query by serial before anything else."""

    def __init__(self, message: str, *, serial_no: str, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.serial_no = serial_no


class PermanentGatewayError(TaxGatewayError):
    """The provider rejected the request's data; retrying the same request cannot succeed."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}", code=code)
        self.reason = reason


class IdempotencyConflict(PermanentGatewayError):
    """The serial was already used for a different payload (Nuonuo E9106 semantics)."""


class CreditExhausted(PermanentGatewayError):
    """The monthly 授信额度 does not cover this invoice: queue it for an increase or next month."""


class NotFound(PermanentGatewayError):
    """The provider has no request under that serial (after OutcomeUnknown: it was never processed)."""


class NotRetryable(PermanentGatewayError):
    """``retry`` of a serial the provider holds in another state than failed (issuing, issued,
    cancelled): nothing was changed; query it to learn where it is."""


class RetryUnsupported(PermanentGatewayError):
    """This provider has no retry of a failed request (开票重试): nothing was sent. The caller
    queries the serial and, if it failed there, issues under a new serial (the old one closed)."""


class GatewayPaused(TaxGatewayError):
    """Issuing must stop until a person acts."""


class AuthExpired(GatewayPaused):
    """Tax-bureau login expired: face authentication needed before any further issuing."""


# ------------------------------------------------------------------------------------- requests


class InvoiceKind(enum.StrEnum):
    NORMAL = "normal"  # 普票
    SPECIAL = "special"  # 专票


class LineKind(enum.StrEnum):
    NORMAL = "normal"  # 正常行
    DISCOUNTED = "discounted"  # 被折扣行
    DISCOUNT = "discount"  # 折扣行


class RedReason(enum.StrEnum):
    """冲红原因 (provider codes differ: map per adapter)."""

    WRONG = "wrong"  # 开票有误: full reversal only
    RETURNED = "returned"  # 销货退回
    SERVICE_STOPPED = "service_stopped"  # 服务中止
    ALLOWANCE = "allowance"  # 销售折让


@dataclass(frozen=True)
class Party:
    name: str
    tax_id: str | None = None
    title_type: str | None = None  # personal | enterprise | non_enterprise
    address: str | None = None
    phone: str | None = None
    bank: str | None = None
    account: str | None = None
    natural_person: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Party:
        return cls(
            name=str(data["name"]),
            tax_id=data.get("tax_id") or None,
            title_type=data.get("title_type") or None,
            address=data.get("address") or None,
            phone=data.get("phone") or None,
            bank=data.get("bank") or None,
            account=data.get("account") or None,
            natural_person=bool(data.get("natural_person", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key in ("tax_id", "title_type", "address", "phone", "bank", "account"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.natural_person:
            out["natural_person"] = True
        return out

    @property
    def is_enterprise(self) -> bool:
        """Enterprise buyers may have done 用途确认, so their reds need a 确认单 (fapiao.md §8.1)."""
        if self.title_type:
            return self.title_type == "enterprise"
        return bool(self.tax_id) and not self.natural_person


@dataclass(frozen=True)
class IssueLine:
    seq: int
    kind: LineKind
    name: str
    tax_code: str
    tax_rate: Decimal
    amount: Decimal  # 金额, tax-exclusive
    tax: Decimal  # 税额
    gross: Decimal  # 含税金额
    quantity: Decimal | None = None
    unit_price: Decimal | None = None  # tax-exclusive
    unit: str | None = None
    spec: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IssueLine:
        return cls(
            seq=int(data["seq"]),
            kind=LineKind(data.get("kind", "normal")),
            name=str(data["name"]),
            tax_code=str(data["tax_code"]),
            # Canonical (normalized) so that the same invoice gives the same payload whether it
            # comes from a fresh draft or from the database (which pads decimals to a fixed
            # scale): a resend under the same serial must match what the provider has.
            tax_rate=_canonical(Decimal(str(data["tax_rate"]))),
            amount=money(data["amount"]),
            tax=money(data["tax"]),
            gross=money(data["gross"]),
            quantity=_canonical_or_none(decimal_or_none(data.get("quantity"))),
            unit_price=_canonical_or_none(decimal_or_none(data.get("unit_price"))),
            unit=data.get("unit") or None,
            spec=data.get("spec") or None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "kind": self.kind.value,
            "name": self.name,
            "tax_code": self.tax_code,
            "tax_rate": dec_str(self.tax_rate),
            "amount": dec_str(self.amount),
            "tax": dec_str(self.tax),
            "gross": dec_str(self.gross),
        }
        for key in ("quantity", "unit_price"):
            value = getattr(self, key)
            if value is not None:
                out[key] = dec_str(value)
        for key in ("unit", "spec"):
            value = getattr(self, key)
            if value:
                out[key] = value
        return out


@dataclass(frozen=True)
class IssueRequest:
    """One blue invoice to issue. ``serial_no`` is our idempotency key, persisted before the call."""

    serial_no: str
    kind: InvoiceKind
    buyer: Party
    seller: Party
    lines: tuple[IssueLine, ...]
    remark: str = ""
    order_time: datetime | None = None  # Nuonuo invoiceDate; None = now

    @classmethod
    def from_draft_invoice(cls, serial_no: str, draft_invoice: Mapping[str, Any],
                           order_time: datetime | None = None) -> IssueRequest:
        """Build from one ``invoices[i]`` of an invoice draft (contracts/invoice-draft.schema.json)."""
        if draft_invoice.get("color", "blue") != "blue":
            raise ValueError("only blue draft invoices are issued; reds go through red_letter")
        return cls(
            serial_no=serial_no,
            kind=InvoiceKind(draft_invoice.get("kind", "normal")),
            buyer=Party.from_dict(draft_invoice["buyer"]),
            seller=Party.from_dict(draft_invoice["seller"]),
            lines=tuple(IssueLine.from_dict(line) for line in draft_invoice["lines"]),
            remark=draft_invoice.get("remark") or "",
            order_time=order_time,
        )

    @property
    def total_amount(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal("0.00"))

    @property
    def total_tax(self) -> Decimal:
        return sum((line.tax for line in self.lines), Decimal("0.00"))

    @property
    def total(self) -> Decimal:
        return sum((line.gross for line in self.lines), Decimal("0.00"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "serial_no": self.serial_no,
            "kind": self.kind.value,
            "buyer": self.buyer.to_dict(),
            "seller": self.seller.to_dict(),
            "lines": [line.to_dict() for line in self.lines],
            "remark": self.remark,
        }


@dataclass(frozen=True)
class RedLine:
    """One line of a partial red invoice: negative amounts, always a normal line (红票只有正常行).

    ``blue_seq`` names the blue line it reverses; for a discounted pair it is the 被折扣行's seq and
    the amounts are the pair's net (Nuonuo ``blueDetailIndex``)."""

    blue_seq: int
    name: str
    tax_code: str
    tax_rate: Decimal
    amount: Decimal
    tax: Decimal
    quantity: Decimal | None = None
    unit_price: Decimal | None = None

    @property
    def gross(self) -> Decimal:
        return self.amount + self.tax

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RedLine:
        return cls(
            blue_seq=int(data["blue_seq"]),
            name=str(data["name"]),
            tax_code=str(data["tax_code"]),
            tax_rate=Decimal(str(data["tax_rate"])),
            amount=money(data["amount"]),
            tax=money(data["tax"]),
            quantity=decimal_or_none(data.get("quantity")),
            unit_price=decimal_or_none(data.get("unit_price")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "blue_seq": self.blue_seq,
            "name": self.name,
            "tax_code": self.tax_code,
            "tax_rate": dec_str(self.tax_rate),
            "amount": dec_str(self.amount),
            "tax": dec_str(self.tax),
            "gross": dec_str(self.gross),
        }
        if self.quantity is not None:
            out["quantity"] = dec_str(self.quantity)
        if self.unit_price is not None:
            out["unit_price"] = dec_str(self.unit_price)
        return out


def red_lines_to_list(lines: Sequence[RedLine] | None) -> list[dict[str, Any]] | None:
    return None if lines is None else [line.to_dict() for line in lines]


@dataclass(frozen=True)
class RedConfirmRequest:
    """红字发票信息确认单 application by the seller. ``lines`` None = full reversal."""

    blue_number: str
    reason: RedReason
    lines: tuple[RedLine, ...] | None = None
    blue_kind: InvoiceKind = InvoiceKind.NORMAL
    buyer: Party | None = None  # Nuonuo wants the names and tax ids on the form
    seller: Party | None = None
    apply_id: str | None = None  # our key for the application (Nuonuo billId), makes it idempotent


class ConfirmStatus(enum.StrEnum):
    """Platform 确认单 codes (fapiao.md §8.2)."""

    NOT_NEEDED = "01"
    AWAIT_BUYER = "02"
    AWAIT_SELLER = "03"
    CONFIRMED = "04"
    DENIED_BY_BUYER = "05"
    DENIED_BY_SELLER = "06"
    EXPIRED = "07"
    WITHDRAWN = "08"
    REVOKED = "09"
    APPLYING = "10"

    @property
    def allows_red(self) -> bool:
        return self in (ConfirmStatus.NOT_NEEDED, ConfirmStatus.CONFIRMED)

    @property
    def is_final_refusal(self) -> bool:
        return self.value in {"05", "06", "07", "08", "09"}


@dataclass(frozen=True)
class RedConfirm:
    confirm_id: str
    status: ConfirmStatus
    bill_no: str | None = None
    blue_number: str | None = None


@dataclass(frozen=True)
class RedRequest:
    """A red invoice. ``confirm_id`` is needed when the blue buyer is an enterprise; ``lines`` None
    = full reversal (or the confirmation's lines)."""

    serial_no: str
    blue_number: str
    reason: RedReason
    lines: tuple[RedLine, ...] | None = None
    confirm_id: str | None = None
    blue_serial_no: str | None = None
    blue_kind: InvoiceKind = InvoiceKind.NORMAL
    order_time: datetime | None = None


# -------------------------------------------------------------------------------------- results


class IssueStatus(enum.StrEnum):
    PENDING = "pending"
    ISSUED = "issued"
    FAILED = "failed"


@dataclass(frozen=True)
class Accepted:
    serial_no: str
    provider_serial: str
    duplicate: bool = False  # the provider already had this serial (same payload)


@dataclass(frozen=True)
class IssueResult:
    serial_no: str
    status: IssueStatus
    provider_serial: str | None = None
    number: str | None = None
    issued_at: datetime | None = None
    total_amount: Decimal | None = None
    total_tax: Decimal | None = None
    total: Decimal | None = None
    pdf_url: str | None = None
    error_code: str | None = None
    error_reason: str | None = None
    permanent: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------ interface


class TaxGateway(abc.ABC):
    """What a tax-service provider offers us. Implementations must be safe to call from several
    threads; they keep no per-invoice state (the caller persists serials).

    Batching: ``issue_many`` / ``query_many`` accept any number of items and split them into
    provider calls of ``batch_size`` invoices / ``query_batch_size`` serials (1 = no batch call
    for that operation; the two differ where a provider batches only queries, like Nuonuo)."""

    name: str = "abstract"

    @abc.abstractmethod
    def issue(self, request: IssueRequest) -> Accepted:
        """Submit a blue invoice; idempotent on ``request.serial_no``."""

    @abc.abstractmethod
    def query(self, serial_no: str) -> IssueResult:
        """Outcome of an issue or red request by our serial. Raises ``NotFound`` if unknown."""

    #: How many invoices one ``issue_many`` call to the provider carries (1: the provider has no
    #: batch issue; ``issue_many`` sends one call per invoice).
    batch_size: int = 1
    #: How many serials one ``query_many`` call to the provider carries (1: one query per serial).
    #: Separate from ``batch_size`` because a provider may batch one and not the other: Nuonuo
    #: has no batch issue (``batch_size`` 1) but queryInvoiceResult takes 50 orderNos.
    query_batch_size: int = 1

    def issue_many(self, requests: Sequence[IssueRequest]) -> list[Accepted | TaxGatewayError]:
        """Submit several blue invoices; one answer per request, in order: ``Accepted`` or the
        error for that request (not raised). A failure of the whole call (a timeout after
        sending, a 5xx) is that error for every request it carried. Providers with a batch
        call override this; the default sends one call per request and stops sending once the
        provider pauses (the rest get the same ``GatewayPaused``)."""
        answers: list[Accepted | TaxGatewayError] = []
        stop: GatewayPaused | None = None
        for request in requests:
            if stop is not None:
                answers.append(stop)
                continue
            try:
                answers.append(self.issue(request))
            except GatewayPaused as exc:
                stop = exc
                answers.append(exc)
            except TaxGatewayError as exc:
                answers.append(exc)
        return answers

    def query_many(self, serial_nos: Sequence[str]) -> list[IssueResult | TaxGatewayError]:
        """Outcomes by serial; one answer per serial, in order: ``IssueResult``, ``NotFound``
        or the error of that query (not raised)."""
        answers: list[IssueResult | TaxGatewayError] = []
        for serial_no in serial_nos:
            try:
                answers.append(self.query(serial_no))
            except TaxGatewayError as exc:
                answers.append(exc)
        return answers

    def retry(self, serial_no: str) -> Accepted:
        """开票重试: have the provider issue again a request it holds as *failed*, under the same
        serial (Nuonuo reInvoice keeps orderNo and 流水号): one invoice per serial, ever. A write:
        a lost answer is ``OutcomeUnknown`` (query by serial, never retry blind). ``NotFound``:
        the provider never accepted the serial (send it again with ``issue``); ``NotRetryable``:
        it is not failed there. Providers without a retry keep this default."""
        raise RetryUnsupported("RETRY_UNSUPPORTED", f"{self.name} cannot retry a failed request")

    def retry_many(self, serial_nos: Sequence[str]) -> list[Accepted | TaxGatewayError]:
        """``retry`` for several serials, one call each (no provider has a batch retry); one
        answer per serial, in order, errors given not raised. Once the provider pauses, nothing
        more is sent (the rest get the same ``GatewayPaused``), as in ``issue_many``."""
        answers: list[Accepted | TaxGatewayError] = []
        stop: GatewayPaused | None = None
        for serial_no in serial_nos:
            if stop is not None:
                answers.append(stop)
                continue
            try:
                answers.append(self.retry(serial_no))
            except GatewayPaused as exc:
                stop = exc
                answers.append(exc)
            except TaxGatewayError as exc:
                answers.append(exc)
        return answers

    @abc.abstractmethod
    def apply_red_confirm(self, request: RedConfirmRequest) -> RedConfirm:
        """Apply for a 红字确认单; status ``01`` means no confirmation is needed."""

    @abc.abstractmethod
    def query_red_confirm(self, confirm_id: str) -> RedConfirm:
        """Current status of a 确认单."""

    @abc.abstractmethod
    def red_letter(self, request: RedRequest) -> Accepted:
        """Submit a red invoice (after the 确认单 allows it, or directly for non-enterprise buyers)."""

    @abc.abstractmethod
    def cancel(self, serial_no: str) -> None:
        """Withdraw a request that is still pending; issued invoices can only be reversed."""

    @abc.abstractmethod
    def remaining_credit(self) -> Decimal:
        """授信额度 left this month."""
