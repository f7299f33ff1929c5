"""How numbers, rates and dates are printed on a 数电票 face (fapiao.md §3.2, §4.1, §9.2).

Everything goes through ``Decimal`` from the draft's decimal strings: never ``float``.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from app.engine.clock import BEIJING

CENT = Decimal("0.01")

TREATMENT_TEXT = {"exempt": "免税", "not_taxable": "不征税"}


def to_decimal(value: str | int | Decimal) -> Decimal:
    if isinstance(value, float):  # a float here means the draft left the contract
        raise TypeError(f"money must be a decimal string, not float {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal: {value!r}") from exc


def money(value: str | Decimal, *, negate: bool = False) -> str:
    """``175.22``; always two decimals, no thousands separator (as the platform prints)."""
    amount = to_decimal(value).quantize(CENT, rounding=ROUND_HALF_UP)
    if negate:
        amount = -amount
    return f"{amount:.2f}"


def yuan(value: str | Decimal, *, negate: bool = False) -> str:
    """``¥247.90`` / ``¥-113.00`` (the sign follows the ¥ on red faces)."""
    return "¥" + money(value, negate=negate)


def trimmed(value: str | Decimal | None, *, min_places: int = 0, negate: bool = False) -> str:
    """A quantity or unit price with trailing zeros removed but at least ``min_places`` decimals.

    ``"2"`` → ``2``; ``"87.61000000"`` → ``87.61``; ``"0.33333333"`` keeps all 8 places.
    """
    if value is None or value == "":
        return ""
    number = to_decimal(value)
    if negate:
        number = -number
    text = f"{number:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    places = len(text.partition(".")[2])
    if places < min_places:
        text = f"{number:.{min_places}f}"
    return text


def percent(rate: str | Decimal) -> str:
    """``0.13`` → ``13%``, ``0.015`` → ``1.5%``."""
    return trimmed(to_decimal(rate) * 100) + "%"


def rate_text(line: dict) -> str:
    """税率/征收率 column: a percentage, or 免税 / 不征税 by the line's tax treatment."""
    text = TREATMENT_TEXT.get(line.get("tax_treatment") or "")
    return text or percent(line["tax_rate"])


def face_date(value: str | None) -> str:
    """``2026-11-11T00:01:02+08:00`` → ``2026年11月11日`` (Beijing date); ``""`` when not issued."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"issued_at is not an ISO 8601 date or time: {value!r}") from exc
    if moment.tzinfo is not None:
        moment = moment.astimezone(BEIJING)
    day: date = moment.date()
    return f"{day.year}年{day.month:02d}月{day.day:02d}日"


def is_negative(value: str | Decimal) -> bool:
    return to_decimal(value) < 0
