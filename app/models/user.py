"""Users and roles. Every view says which roles may use it; unsaid means denied."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import JSON, Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.db import Base
from app.engine.clock import utcnow
from app.models.types import UTCDateTime

if TYPE_CHECKING:
    from app.models.merchant import Merchant

ROLES = ("admin", "tax_specialist", "operations", "auditor", "merchant", "cs_agent")
# Roles that see and act on every merchant's data. A user with none of them is confined to its
# own merchant (``merchant_id``): the merchant role and customer service (cs_agent) are.
GLOBAL_ROLES = ("admin", "tax_specialist", "operations", "auditor")
MERCHANT_ROLES = ("merchant", "cs_agent")
# The scope of a confined user without a merchant: no row has this id, so it sees nothing.
NO_MERCHANT = 0


def is_merchant_scoped(roles: list[str] | tuple[str, ...]) -> bool:
    """Whether these roles confine their user to one merchant (fail closed: no global role)."""
    return not set(roles) & set(GLOBAL_ROLES)


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    display_name: Mapped[str | None] = mapped_column(String(100))
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Merchant-scoped roles (MERCHANT_ROLES) see and write only this merchant's data.
    merchant_id: Mapped[int | None] = mapped_column(ForeignKey("merchant.id"))
    merchant: Mapped[Merchant | None] = relationship()  # the admin's user form chooses it by name
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # SHA-256 of the user's API token (Authorization: Bearer ...); the token itself is shown once.
    api_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    locale: Mapped[str | None] = mapped_column(String(10))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def set_password(self, password: str) -> None:
        if len(password) < 8:
            raise ValueError("password must have at least 8 characters")
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def has_role(self, *roles: str) -> bool:
        return bool(set(self.roles or ()) & set(roles))

    def merchant_scope(self) -> int | None:
        """The one merchant this user may see and write, or None for every merchant."""
        if not is_merchant_scoped(self.roles or ()):
            return None
        return self.merchant_id or NO_MERCHANT

    # Flask-Login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    def __str__(self) -> str:
        return self.username
