"""Tax gateway status: paused issuing (e.g. tax-bureau login expired) and credit left."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.engine.clock import utcnow
from app.models.types import Money, UTCDateTime


class GatewayStatus(Base):
    """One row per provider account (``scope`` = seller entity code or "default")."""

    __tablename__ = "gateway_status"

    id: Mapped[int] = mapped_column(primary_key=True)
    scope: Mapped[str] = mapped_column(String(64), unique=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    pause_code: Mapped[str | None] = mapped_column(String(40))
    pause_reason: Mapped[str | None] = mapped_column(String(500))
    paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resumed_by: Mapped[str | None] = mapped_column(String(80))
    # Consecutive failed provider calls, across jobs and workers (reset by a success).
    failure_streak: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    credit_remaining: Mapped[Decimal | None] = mapped_column(Money)
    credit_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
