"""The append-only, hash-chained invoice event log.

Events are inserted in the business transaction with no hash; the sealer (app/ledger.py)
assigns ``chain_seq`` and ``hash`` afterwards in one writer, so concurrent workers never
contend for the chain head. Database triggers refuse DELETE and any UPDATE except the one
that seals an unsealed row.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.engine.clock import utcnow
from app.models.types import UTCDateTime


class InvoiceEvent(Base):
    __tablename__ = "invoice_event"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(__import__("sqlalchemy").Integer, "sqlite"), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    order_pk: Mapped[int | None] = mapped_column(ForeignKey("sales_order.id"), index=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("invoice_request.id"), index=True)
    invoice_id: Mapped[int | None] = mapped_column(ForeignKey("invoice.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40), doc="e.g. transition, gateway_call, note")
    from_state: Mapped[str | None] = mapped_column(String(20))
    to_state: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(80), default="system")
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    chain_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))
