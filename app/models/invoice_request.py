"""What a buyer asked for (抬头, kind, tax id …) and the decision taken on it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.engine.clock import utcnow
from app.engine.states import RequestStatus
from app.models.types import UTCDateTime

TITLE_TYPES = ("personal", "enterprise", "non_enterprise")
KINDS = ("normal", "special")  # 普票 / 专票


class InvoiceRequest(Base):
    __tablename__ = "invoice_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("sales_order.id"), index=True)
    platform_request_id: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(20), default="platform", doc="platform/h5/cs/import/policy")
    title_type: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str] = mapped_column(String(10), default="normal")
    title: Mapped[str] = mapped_column(String(100))
    tax_id: Mapped[str | None] = mapped_column(String(26))
    natural_person: Mapped[bool] = mapped_column(Boolean, default=False)
    id_number: Mapped[str | None] = mapped_column(String(26))
    address: Mapped[str | None] = mapped_column(String(80))
    phone: Mapped[str | None] = mapped_column(String(50))
    bank: Mapped[str | None] = mapped_column(String(100))
    account: Mapped[str | None] = mapped_column(String(100))
    email: Mapped[str | None] = mapped_column(String(254))
    mobile: Mapped[str | None] = mapped_column(String(32))
    requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    deadline_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Lifecycle (app/engine/states.py); guarded transitions bump state_version.
    status: Mapped[str] = mapped_column(String(20), default=RequestStatus.RECEIVED, index=True)
    state_version: Mapped[int] = mapped_column(Integer, default=0)
    decision: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    rules_version: Mapped[str | None] = mapped_column(String(80))
    rules_fired: Mapped[list[str] | None] = mapped_column(JSON)
    issue_after: Mapped[datetime | None] = mapped_column(UTCDateTime)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, doc="when a decision was last queued")
    status_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    order = relationship("Order")

    def as_buyer(self) -> dict[str, Any]:
        buyer: dict[str, Any] = {"title_type": self.title_type, "name": self.title}
        for key in ("tax_id", "address", "phone", "bank", "account"):
            if getattr(self, key):
                buyer[key] = getattr(self, key)
        if self.natural_person:
            buyer["natural_person"] = True
        return buyer
