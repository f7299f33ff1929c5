"""Issued (or to-be-issued) invoices, blue and red, and their lines."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.engine.clock import utcnow
from app.engine.states import InvoiceStatus
from app.models.types import ExactDecimal, Money, UTCDateTime

COLORS = ("blue", "red")


class Invoice(Base):
    __tablename__ = "invoice"

    id: Mapped[int] = mapped_column(primary_key=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("invoice_request.id"), index=True)
    order_pk: Mapped[int | None] = mapped_column(ForeignKey("sales_order.id"), index=True)
    seller_entity_id: Mapped[int | None] = mapped_column(ForeignKey("seller_entity.id"))
    color: Mapped[str] = mapped_column(String(4), default="blue")
    kind: Mapped[str] = mapped_column(String(10), default="normal")
    status: Mapped[str] = mapped_column(String(20), default=InvoiceStatus.READY, index=True)
    state_version: Mapped[int] = mapped_column(Integer, default=0)
    # Our request serial (发票请求流水号), stored before the gateway is called: the
    # idempotency key with the tax provider.
    serial_no: Mapped[str] = mapped_column(String(40), unique=True)
    number: Mapped[str | None] = mapped_column(String(20), unique=True, doc="20-digit 数电票 number")
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    split_index: Mapped[int] = mapped_column(Integer, default=1)
    split_count: Mapped[int] = mapped_column(Integer, default=1)
    buyer: Mapped[dict[str, Any]] = mapped_column(JSON)
    seller: Mapped[dict[str, Any]] = mapped_column(JSON)
    total_amount: Mapped[Decimal] = mapped_column(Money)
    total_tax: Mapped[Decimal] = mapped_column(Money)
    total: Mapped[Decimal] = mapped_column(Money, doc="价税合计")
    remark: Mapped[str | None] = mapped_column(String(200))
    rules_version: Mapped[str | None] = mapped_column(String(80))
    rules_fired: Mapped[list[str] | None] = mapped_column(JSON)
    red_of_id: Mapped[int | None] = mapped_column(ForeignKey("invoice.id"), index=True)
    red_reason: Mapped[str | None] = mapped_column(String(20))
    red_confirm_no: Mapped[str | None] = mapped_column(String(40))
    provider: Mapped[str | None] = mapped_column(String(20))
    provider_ref: Mapped[str | None] = mapped_column(String(64))
    failure_reason: Mapped[str | None] = mapped_column(String(500))
    # Retries of transient gateway failures are business state, not RQ state: they
    # survive a Redis flush and are picked up by the periodic tick.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # When work for this invoice was last queued: the tick re-queues only work whose job
    # has had time to run (or was lost), so a backlog is never flooded with duplicates.
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    pdf_path: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    lines: Mapped[list[InvoiceLine]] = relationship(
        back_populates="invoice", cascade="all, delete-orphan", order_by="InvoiceLine.seq"
    )
    red_of: Mapped[Invoice | None] = relationship(remote_side=[id])

    def __str__(self) -> str:
        return self.number or self.serial_no


class InvoiceLine(Base):
    __tablename__ = "invoice_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    invoice_id: Mapped[int] = mapped_column(ForeignKey("invoice.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(12), doc="normal / discounted / discount")
    source_line_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(90))
    display_name: Mapped[str | None] = mapped_column(String(200))
    tax_code: Mapped[str] = mapped_column(String(19))
    short_name: Mapped[str | None] = mapped_column(String(60))
    spec: Mapped[str | None] = mapped_column(String(40))
    unit: Mapped[str | None] = mapped_column(String(20))
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(8))
    unit_price: Mapped[Decimal | None] = mapped_column(ExactDecimal(8))
    amount: Mapped[Decimal] = mapped_column(Money)
    tax_rate: Mapped[Decimal] = mapped_column(ExactDecimal(4))
    tax_treatment: Mapped[str | None] = mapped_column(String(20))
    tax: Mapped[Decimal] = mapped_column(Money)
    gross: Mapped[Decimal] = mapped_column(Money)

    invoice: Mapped[Invoice] = relationship(back_populates="lines")

    __table_args__ = (UniqueConstraint("invoice_id", "seq"),)
