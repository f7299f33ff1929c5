"""Column types that keep money exact and times unambiguous on SQLite and PostgreSQL.

SQLite's ``Numeric`` round-trips through float, so money is integer fen and other exact
decimals (8-dp unit prices, quantities) are canonical strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy import BigInteger, DateTime, String, Text
from sqlalchemy.types import TypeDecorator

from app.engine.money import from_fen, to_fen

# The largest id an ``Integer`` primary key holds (PostgreSQL's integer): a larger number in a
# URL or a form cannot name a row, and PostgreSQL refuses to compare with it.
MAX_ROW_ID = 2**31 - 1


class Money(TypeDecorator[Decimal]):
    """A yuan amount as ``Decimal`` in Python, integer fen in the database."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect) -> int | None:
        return None if value is None else to_fen(value)

    def process_result_value(self, value: int | None, dialect) -> Decimal | None:
        return None if value is None else from_fen(int(value))


class ExactDecimal(TypeDecorator[Decimal]):
    """A decimal with up to ``scale`` places stored as a canonical string (no float anywhere)."""

    impl = String(48)
    cache_ok = True

    def __init__(self, scale: int = 8):
        super().__init__()
        self.scale = scale

    def process_bind_param(self, value: Decimal | None, dialect) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"expected Decimal, got {type(value).__name__}")
        try:
            q = value.quantize(Decimal(1).scaleb(-self.scale))
        except InvalidOperation as exc:  # pragma: no cover - absurd magnitudes
            raise ValueError(f"{value} does not fit {self.scale} decimals") from exc
        if q != value:
            raise ValueError(f"{value} has more than {self.scale} decimals")
        return format(q, "f")

    def process_result_value(self, value: str | None, dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes, stored in UTC; naive input is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; pass an aware one (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class EncryptedText(TypeDecorator[str]):
    """Secrets (platform keys, tax credentials), Fernet-encrypted at rest."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect) -> str | None:
        from app.crypto import encrypt

        return None if value is None else encrypt(value)

    def process_result_value(self, value: str | None, dialect) -> str | None:
        from app.crypto import decrypt

        return None if value is None else decrypt(value)
