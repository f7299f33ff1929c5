"""The 税收分类编码 catalogue and merchant SKU/category → tax code mappings."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import ExactDecimal


class TaxCode(Base):
    __tablename__ = "tax_code"

    code: Mapped[str] = mapped_column(String(19), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    short_name: Mapped[str] = mapped_column(String(60), doc="简称 printed as *简称*")
    # Allowed rates as decimal strings ("0.13"); treatments such as "exempt" allowed too.
    rates: Mapped[list[str]] = mapped_column(JSON, default=list)
    treatments: Mapped[list[str]] = mapped_column(JSON, default=list)
    catalogue_version: Mapped[str | None] = mapped_column(String(20))
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    def __str__(self) -> str:
        return f"{self.code} {self.short_name}"


class SkuTaxMapping(Base):
    __tablename__ = "sku_tax_mapping"

    id: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchant.id"), index=True)
    match_kind: Mapped[str] = mapped_column(String(10), doc="sku / category")
    match_value: Mapped[str] = mapped_column(String(100))
    tax_code: Mapped[str] = mapped_column(ForeignKey("tax_code.code"))
    tax_rate: Mapped[Decimal] = mapped_column(ExactDecimal(4))
    invoice_name: Mapped[str | None] = mapped_column(String(90), doc="name printed instead of the item name")

    __table_args__ = (UniqueConstraint("merchant_id", "match_kind", "match_value"),)
