"""Failed logins, the memory of login throttling (app/services/sign_in.py). In the database,
not in a process, so every web process counts the same failures. Only failures are kept; a
username's rows go at its next successful login, and rows too old to matter are pruned."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.engine.clock import utcnow
from app.models.types import UTCDateTime


class LoginFailure(Base):
    __tablename__ = "login_failure"
    __table_args__ = (
        Index("ix_login_failure_username_at", "username", "at"),
        Index("ix_login_failure_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    # As typed (stripped), whether or not such a user exists: unknown names are throttled alike.
    username: Mapped[str] = mapped_column(String(80))
    address: Mapped[str | None] = mapped_column(String(45))  # the client's IP address
