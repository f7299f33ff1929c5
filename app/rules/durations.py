"""Durations in rule documents: integer hours, ``"72h"``, ``"7d"`` or ISO 8601 ``"P7D"``/``"PT12H"``/``"P1DT6H"``."""

from __future__ import annotations

import re
from datetime import timedelta

_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?)?$")
_SHORT = re.compile(r"^(\d+)\s*([hd])$")


def parse_duration(value: object) -> timedelta:
    """Parse a non-negative duration; raises ValueError with a message fit for a person."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f'expected hours (integer) or a duration like "P7D" / "72h", got {value!r}')
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return timedelta(hours=value)
    text = value.strip()
    short = _SHORT.match(text)
    if short:
        n = int(short.group(1))
        return timedelta(hours=n) if short.group(2) == "h" else timedelta(days=n)
    iso = _ISO.match(text)
    if iso and text not in ("P", "PT") and not text.endswith("T"):
        days, hours, minutes = (int(g) if g else 0 for g in iso.groups())
        return timedelta(days=days, hours=hours, minutes=minutes)
    raise ValueError(f'not a duration: {value!r} (use hours, "72h", "7d" or ISO 8601 like "P7D", "PT12H")')
