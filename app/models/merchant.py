"""Merchants, their seller entities (销售方) and their shops on each platform."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.engine.clock import utcnow
from app.models.types import EncryptedText, UTCDateTime

PLATFORMS = ("taobao", "tmall", "jd", "pdd", "douyin", "kuaishou", "xiaohongshu", "offline", "h5", "other")


class Merchant(Base):
    __tablename__ = "merchant"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    seller_entities: Mapped[list[SellerEntity]] = relationship(back_populates="merchant")
    shops: Mapped[list[Shop]] = relationship(back_populates="merchant")

    def __str__(self) -> str:
        return self.name


class SellerEntity(Base):
    """A legal entity that issues invoices (销售方); a merchant may have several."""

    __tablename__ = "seller_entity"

    id: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchant.id"), index=True)
    code: Mapped[str] = mapped_column(String(64), doc="short handle used by route_seller rules")
    name: Mapped[str] = mapped_column(String(300))
    tax_id: Mapped[str] = mapped_column(String(20))
    address: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(50))
    bank: Mapped[str | None] = mapped_column(String(100))
    account: Mapped[str | None] = mapped_column(String(100))
    province_code: Mapped[str | None] = mapped_column(String(2), doc="GB/T 2260 first two digits")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    # Tax-provider credentials (e.g. Nuonuo appKey/appSecret/token), encrypted at rest.
    tax_credentials: Mapped[str | None] = mapped_column(EncryptedText)

    merchant: Mapped[Merchant] = relationship(back_populates="seller_entities")

    __table_args__ = (UniqueConstraint("merchant_id", "code"),)

    def as_party(self) -> dict[str, str]:
        party = {"name": self.name, "tax_id": self.tax_id}
        for key in ("address", "phone", "bank", "account"):
            if getattr(self, key):
                party[key] = getattr(self, key)
        return party

    def __str__(self) -> str:
        return f"{self.name} ({self.tax_id})"


class Shop(Base):
    __tablename__ = "shop"

    id: Mapped[int] = mapped_column(primary_key=True)
    merchant_id: Mapped[int] = mapped_column(ForeignKey("merchant.id"), index=True)
    seller_entity_id: Mapped[int | None] = mapped_column(ForeignKey("seller_entity.id"))
    platform: Mapped[str] = mapped_column(String(20))
    shop_code: Mapped[str] = mapped_column(String(64), doc="the platform's shop id")
    name: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Platform app key/secret/session token, encrypted at rest (JSON text).
    credentials: Mapped[str | None] = mapped_column(EncryptedText)
    # Invoice-face options (discount_mode, gift_mode, ...), see contracts/README.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sync_cursor: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    merchant: Mapped[Merchant] = relationship(back_populates="shops")
    seller_entity: Mapped[SellerEntity | None] = relationship()

    __table_args__ = (UniqueConstraint("platform", "shop_code"),)

    def __str__(self) -> str:
        return f"{self.platform}:{self.shop_code} {self.name}"
