"""Invoicing rule sets and their append-only versions (see app/rules/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.engine.clock import utcnow
from app.models.types import UTCDateTime


class RuleSet(Base):
    """A named rule set; merchant_id NULL = shipped default, shop_id set = per-shop override."""

    __tablename__ = "rule_set"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("merchant.id"), index=True)
    shop_id: Mapped[int | None] = mapped_column(ForeignKey("shop.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    versions: Mapped[list[RuleSetVersion]] = relationship(
        back_populates="rule_set", order_by="RuleSetVersion.number"
    )

    __table_args__ = (UniqueConstraint("merchant_id", "shop_id", "name"),)

    def __str__(self) -> str:
        return self.name


class RuleSetVersion(Base):
    """One immutable version. Publishing or rolling back appends a version whose
    ``action`` says so; the published one is the newest version with ``published`` set.
    Versions are a hash-chained ledger like the invoice log (app/ledger.py)."""

    __tablename__ = "rule_set_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    rule_set_id: Mapped[int] = mapped_column(ForeignKey("rule_set.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20), default="draft", doc="draft / publish / rollback")
    published: Mapped[bool] = mapped_column(default=False)
    based_on: Mapped[int | None] = mapped_column(Integer, doc="version number this one copies")
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    document_hash: Mapped[str] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(80))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The hash chain (app/ledger.py), set once by the sealer.
    chain_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))

    rule_set: Mapped[RuleSet] = relationship(back_populates="versions")

    __table_args__ = (UniqueConstraint("rule_set_id", "number"),)

    @property
    def label(self) -> str:
        return f"{self.rule_set.name}@v{self.number}"
