"""Orders synced from the platforms, with their lines and refunds.

The validated order document (contracts/order.schema.json) is kept verbatim in ``document``;
the columns are what queries, rules and the admin need.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.engine.clock import utcnow
from app.models.types import ExactDecimal, Money, UTCDateTime


class Order(Base):
    __tablename__ = "sales_order"

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(20))
    shop_code: Mapped[str] = mapped_column(String(64))
    order_no: Mapped[str] = mapped_column(String(64), doc="the platform's order id")
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shop.id"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    shipped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # 实付 and 应开票金额: the platform's figures when the document has them, else computed
    # from its lines at intake (app.engine.amounts).
    paid_amount: Mapped[Decimal | None] = mapped_column(Money)
    invoice_amount: Mapped[Decimal | None] = mapped_column(Money)
    # Monotonic version of the source document (platform modified time, or a counter):
    # an older version never overwrites a newer one.
    source_version: Mapped[str | None] = mapped_column(String(40))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    document_hash: Mapped[str] = mapped_column(String(64), server_default="")
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    lines: Mapped[list[OrderLine]] = relationship(
        back_populates="order", cascade="all, delete-orphan", order_by="OrderLine.position"
    )
    refunds: Mapped[list[Refund]] = relationship(back_populates="order", cascade="all, delete-orphan")

    __table_args__ = (UniqueConstraint("platform", "shop_code", "order_no"),)

    @property
    def key(self) -> str:
        return f"{self.platform}:{self.shop_code}:{self.order_no}"

    def __str__(self) -> str:
        return self.key


class OrderLine(Base):
    __tablename__ = "order_line"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("sales_order.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    line_id: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str | None] = mapped_column(String(100))
    spec: Mapped[str | None] = mapped_column(String(100))
    unit: Mapped[str | None] = mapped_column(String(20))
    quantity: Mapped[Decimal] = mapped_column(ExactDecimal(8))
    unit_price: Mapped[Decimal] = mapped_column(Money, doc="tax-inclusive list price per unit")
    discount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    platform_discount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    is_gift: Mapped[bool] = mapped_column(Boolean, default=False)
    tax_code: Mapped[str | None] = mapped_column(String(19))
    tax_rate: Mapped[Decimal | None] = mapped_column(ExactDecimal(4))
    tax_treatment: Mapped[str | None] = mapped_column(String(20))

    order: Mapped[Order] = relationship(back_populates="lines")

    __table_args__ = (UniqueConstraint("order_pk", "line_id"),)


class Refund(Base):
    __tablename__ = "refund"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("sales_order.id", ondelete="CASCADE"), index=True)
    refund_id: Mapped[str] = mapped_column(String(64))
    line_id: Mapped[str | None] = mapped_column(String(64))
    quantity: Mapped[Decimal | None] = mapped_column(ExactDecimal(8))
    amount: Mapped[Decimal] = mapped_column(Money)
    kind: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    order: Mapped[Order] = relationship(back_populates="refunds")

    __table_args__ = (UniqueConstraint("order_pk", "refund_id"),)
