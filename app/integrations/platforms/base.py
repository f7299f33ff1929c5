"""The shop-platform interface: what order sync, invoice upload and push handling call.

One adapter per platform (Taobao/Tmall TOP, JD JOS, Pinduoduo, Douyin Shop …), registered in
``app.integrations.platforms.platforms`` under the platform name of the order contract. An
adapter speaks the platform's real wire format (signing, GMT+8 timestamps, money units per
field, error envelopes) and maps its payloads to contract orders (app/contracts/order.schema.json);
whatever does not map is a ``Rejected`` entry for that order alone, never an exception for the
page. Buyer fields the platform encrypts are decrypted through its own call, and only those
invoicing needs (title, tax id, e-mail, phone); adapters never log them.

Error contract (what the sync job does):
* ``RateLimited``: wait ``retry_after`` seconds, then repeat the same call;
* ``TokenExpired``: refresh the shop's token (``refresh_token``) and repeat once;
* ``TransientPlatformError``: back off and retry the window later (the cursor does not move);
* ``PlatformError``: the platform refused the call (bad credentials, no permission): the shop's
  sync stops with the reason shown until a person fixes it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from app.errors import Problem


class PlatformError(Exception):
    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientPlatformError(PlatformError):
    """Timeouts, 5xx, a gateway hiccup: nothing changed, try again later."""


class RateLimited(TransientPlatformError):
    def __init__(self, message: str, *, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class TokenExpired(PlatformError):
    """The shop's access token lapsed: refresh it, then repeat the call."""


@dataclass(frozen=True)
class ShopCredentials:
    """What the merchant entered for a shop (stored encrypted) plus its current token."""

    shop_code: str
    app_key: str
    app_secret: str
    access_token: str | None = None
    refresh_token: str | None = None
    token_expires_at: datetime | None = None
    base_url: str | None = None  # the platform's gateway; a simulator's in tests
    extra: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # never show secrets
        return f"ShopCredentials({self.shop_code!r}, app_key={self.app_key!r})"


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    expires_at: datetime
    refresh_token: str | None = None


@dataclass(frozen=True)
class Window:
    """A half-open interval of platform modification times, [start, end)."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class SyncedOrder:
    document: dict[str, Any]  # a contract order; extensions.source_updated_at carries the platform's time
    modified_at: datetime


@dataclass(frozen=True)
class Rejected:
    """An order of the page that does not map to the contract, with why (kept, shown, retried)."""

    order_id: str
    problems: tuple[Problem, ...]
    raw: Mapping[str, Any] | None = None  # what the platform sent, buyer fields removed


@dataclass(frozen=True)
class OrderPage:
    orders: Sequence[SyncedOrder]
    rejected: Sequence[Rejected] = ()
    next_page: str | None = None  # opaque; None = the window is done


@dataclass(frozen=True)
class InvoiceUpload:
    """An issued invoice (blue or red) going back to the platform order it belongs to."""

    order_id: str
    number: str  # 20-digit 数电票 number
    issued_at: datetime
    color: str  # blue | red
    kind: str  # normal | special
    title: str
    tax_id: str | None
    total: Decimal  # 价税合计, yuan (adapters convert to the platform's unit)
    total_tax: Decimal
    pdf: bytes
    blue_number: str | None = None  # for a red invoice
    platform_request_id: str | None = None


@dataclass(frozen=True)
class UploadReceipt:
    accepted: bool
    reference: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class PushMessage:
    kind: str  # order_changed | invoice_requested | refund_changed | other
    order_id: str | None
    message_id: str  # replays are recognised by it
    payload: Mapping[str, Any]


class PlatformAdapter(abc.ABC):
    name: ClassVar[str]  # the contract's platform name: taobao, tmall, jd, pdd, douyin
    max_window: ClassVar[timedelta]  # the longest window one incremental query may span
    max_page_size: ClassVar[int]
    pages_backwards: ClassVar[bool] = False  # the platform says: read the last page first

    def __init__(self, credentials: ShopCredentials) -> None:
        self.credentials = credentials

    @abc.abstractmethod
    def fetch_orders(self, window: Window, page: str | None = None) -> OrderPage:
        """One page of the orders modified in ``window`` (with their invoice requests and
        refunds), mapped to the contract."""

    @abc.abstractmethod
    def upload_invoice(self, upload: InvoiceUpload) -> UploadReceipt:
        """Give the platform an issued invoice; idempotent per (order, number)."""

    @abc.abstractmethod
    def refresh_token(self) -> TokenGrant: ...

    def parse_push(self, headers: Mapping[str, str], body: bytes) -> PushMessage:
        """A pushed message, its signature verified; platforms without push are polled only."""
        raise NotImplementedError(f"{self.name} has no push messages: it is polled")
