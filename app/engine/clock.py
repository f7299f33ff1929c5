"""Business time: instants are timezone-aware (stored in UTC); dates, months and invoice
numbers are Beijing dates. The one time-zone constant of the code base is ``BEIJING``."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

# China has kept UTC+8 without daylight saving since 1991; the zone name documents intent.
BEIJING = ZoneInfo("Asia/Shanghai")


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_iso_datetime(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 date-time as the order contract allows it, lower-case ``t`` and
    ``z`` included (``datetime.fromisoformat`` reads neither); naive if the text has no offset.
    Raises ValueError on what is not one."""
    if len(text) > 10 and text[10] not in "Tt ":
        raise ValueError(f"not a date-time: {text!r}")  # fromisoformat takes any separator
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text[:10] + text[10:11].upper() + text[11:])


def beijing(value: datetime) -> datetime:
    """``value`` (aware) as Beijing wall-clock time."""
    return value.astimezone(BEIJING)
