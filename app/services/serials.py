"""Our invoice serials (发票请求流水号): the idempotency key with the tax provider, stored with
the invoice before any call. One per invoice part and generation; a generation is only ever
used once, so a serial never repeats, nor one closed in the log."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Invoice


def serial_for(request_id: int, split_index: int, generation: int) -> str:
    """Stable, unique and ≤ 20 characters (Nuonuo orderNo): KP + request + part + generation."""
    return f"KP{request_id:011d}{split_index:03d}{generation:04d}"


def last_generation(session: Session, request_id: int) -> int:
    """The highest serial generation the request's invoices carry (0: none). A new serial takes
    the next one, so it never repeats an earlier serial, nor one closed in the log (a closed
    serial is always below the serial that replaced it)."""
    serials = session.scalars(select(Invoice.serial_no).where(Invoice.request_id == request_id)).all()
    return max((int(serial[-4:]) for serial in serials if serial[-4:].isdigit()), default=0)
