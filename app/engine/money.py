"""Exact money arithmetic for invoices: Decimal in, Decimal out, ROUND_HALF_UP (四舍五入).

The divisions that decide a fen (price-tax separation, unit prices, allocation) are done on
integers built from the exact value of each Decimal, so no intermediate rounding at the
context precision can ever turn ``x.xx4999…`` into a half-up carry (double rounding).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, InvalidOperation

FEN = Decimal("0.01")
PRICE_PLACES = 8  # unit price / quantity decimals every vendor accepts (Nuonuo: 8)
PRICE_QUANTUM = Decimal(1).scaleb(-PRICE_PLACES)
ZERO = Decimal("0.00")

_RATIO_CACHE: dict[Decimal, tuple[int, int]] = {}


def to_decimal(value: object, *, what: str = "amount") -> Decimal:
    """A Decimal from a decimal string, int or Decimal; floats are refused (binary fractions)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(f"{what} must be a decimal string, not {type(value).__name__}")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(value)
        except InvalidOperation:
            raise ValueError(f"{what} {value!r} is not a decimal number") from None
    else:
        raise TypeError(f"{what} must be a decimal string, not {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{what} {value!r} is not a finite number")
    return result


def q2(value: Decimal) -> Decimal:
    """Round to the fen, half up; never returns a negative zero."""
    result = value.quantize(FEN, rounding=ROUND_HALF_UP)
    return result.copy_abs() if not result else result


def to_fen(value: Decimal) -> int:
    """Exact yuan → integer fen; refuses sub-fen values rather than rounding silently."""
    if not isinstance(value, Decimal):
        raise TypeError(f"money must be Decimal, got {type(value).__name__}")
    scaled = value.scaleb(2)
    as_int = int(scaled)
    if as_int != scaled:
        raise ValueError(f"{value} has more than 2 decimals")
    return as_int


def from_fen(value: int) -> Decimal:
    return Decimal(value).scaleb(-2)  # exponent −2 exactly: "1.00", never "1"


def _half_up_div(numerator: int, denominator: int) -> int:
    """round_half_up(numerator / denominator) for integers, symmetric around zero."""
    if denominator <= 0:
        raise ZeroDivisionError("denominator must be positive")
    quotient, remainder = divmod(abs(numerator), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return -quotient if numerator < 0 else quotient


def _ratio(rate: Decimal) -> tuple[int, int]:
    ratio = _RATIO_CACHE.get(rate)
    if ratio is None:
        ratio = rate.as_integer_ratio()
        _RATIO_CACHE[rate] = ratio
    return ratio


# Price-tax separation divides by (1 + r) with r of at most 4 decimals: 100·含税/(1+r) is a fraction
# P/Q with Q ≤ 20000, so it is either exactly on a half fen or at least 1/40000 fen away from
# one, while a 34-digit division errs by < 1e-17 fen for any amount the contracts allow (< 1e15
# fen). Rounding the 34-digit quotient half-up is therefore exact; this private context keeps
# the guarantee whatever the caller's decimal context is.
_SEPARATE_CONTEXT = Context(prec=34, rounding=ROUND_HALF_EVEN, Emax=999, Emin=-999)
_SEPARATE_LIMIT = Decimal(10) ** 13
_ONE_PLUS: dict[Decimal, Decimal] = {}


def separate(gross: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
    """价税分离 (§5.1): 金额 = round_half_up(含税 / (1 + 税率), 2); 税额 = 含税 − 金额.

    Works for negative 含税 (折扣行): half-up is symmetric, e.g. −15.35 @ 13 % → (−13.58, −1.77).
    ``gross`` must be whole fen (a sub-fen amount raises ValueError, it is never rounded).
    """
    divisor = _ONE_PLUS.get(rate)
    if divisor is None:
        if rate.as_tuple().exponent < -4 or not 0 <= rate < 1:  # type: ignore[operator]
            return separate_exact(gross, rate)
        divisor = _ONE_PLUS[rate] = rate + 1
    if abs(gross) >= _SEPARATE_LIMIT:
        return separate_exact(gross, rate)
    amount = _SEPARATE_CONTEXT.divide(gross, divisor).quantize(FEN, rounding=ROUND_HALF_UP)
    if not amount:
        amount = amount.copy_abs()
    exact_tax = _SEPARATE_CONTEXT.subtract(gross, amount)
    tax = exact_tax.quantize(FEN)
    if tax != exact_tax:
        raise ValueError(f"{gross} has more than 2 decimals")
    return amount, (tax.copy_abs() if not tax else tax)


def separate_exact(gross: Decimal, rate: Decimal) -> tuple[Decimal, Decimal]:
    """The same separation on integers only (reference and fallback for unusual inputs)."""
    gross_fen = to_fen(gross)
    num, den = _ratio(rate)
    amount_fen = _half_up_div(gross_fen * den, den + num)
    return from_fen(amount_fen), from_fen(gross_fen - amount_fen)


def tax_of(amount: Decimal, rate: Decimal) -> Decimal:
    """金额 × 税率 rounded to the fen (what a checker expects the 税额 to be)."""
    return q2(amount * rate)


def unit_price(amount: Decimal, quantity: Decimal) -> Decimal:
    """单价 = 金额 / 数量, half up to 8 decimals (computed exactly on integers)."""
    if quantity <= 0:
        raise ValueError("quantity must be positive")
    qn, qd = quantity.as_integer_ratio()
    # price × 10^8 = amount_fen × 10^6 × qd / qn
    units = _half_up_div(to_fen(amount) * 10 ** (PRICE_PLACES - 2) * qd, qn)
    return Decimal(units).scaleb(-PRICE_PLACES).quantize(PRICE_QUANTUM)


def line_gross(quantity: Decimal, price: Decimal) -> Decimal:
    """含税金额 of quantity × tax-inclusive price, to the fen."""
    return q2(quantity * price)


def allocate(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """Split ``total`` (2 dp) over ``weights`` by the largest-remainder method (§6.3).

    The shares add up to ``total`` exactly. Each share is the floor of its exact quota; the
    fen left over go to the largest remainders, ties to the earlier weight (stable, so the
    same order always allocates the same way). Weights must be >= 0.
    """
    if not weights:
        if total:
            raise ValueError("cannot allocate a non-zero total over no weights")
        return []
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    total_fen = to_fen(total)
    sign = -1 if total_fen < 0 else 1
    total_fen = abs(total_fen)
    # integer weights on a common scale: exact for any Decimal weights (8 dp covers money and
    # quantities without looking at each exponent; finer weights take the general path)
    ints = [int(w.scaleb(PRICE_PLACES)) for w in weights]
    if any(i != w.scaleb(PRICE_PLACES) for i, w in zip(ints, weights, strict=True)):
        exponent = min(int(w.as_tuple().exponent) for w in weights)  # finite: checked by the caller
        ints = [int(w.scaleb(-exponent)) for w in weights]
    weight_sum = sum(ints)
    if weight_sum == 0:
        if total_fen:
            raise ValueError("cannot allocate a non-zero total over zero weights")
        return [ZERO for _ in weights]
    shares: list[int] = []
    remainders: list[tuple[int, int]] = []
    for index, weight in enumerate(ints):
        share, remainder = divmod(total_fen * weight, weight_sum)
        shares.append(share)
        remainders.append((-remainder, index))
    left = total_fen - sum(shares)
    if left:
        for _, index in sorted(remainders)[:left]:
            shares[index] += 1
    return [from_fen(sign * share) for share in shares]


def fmt_money(value: Decimal) -> str:
    """A 2-dp decimal string (``"-13.58"``), no exponent, no negative zero."""
    return format(q2(value), "f")


def fmt_price(value: Decimal) -> str:
    return format(value.quantize(PRICE_QUANTUM, rounding=ROUND_HALF_UP), "f")


def fmt_quantity(value: Decimal) -> str:
    """Quantities keep the merchant's own precision ("2", "1.5"), without exponent."""
    return format(value, "f")


_RATE_TEXT: dict[Decimal, str] = {}


def fmt_rate(value: Decimal) -> str:
    """``0.13`` → ``"0.13"``; ``0`` → ``"0"`` (the draft schema's rate pattern)."""
    text = _RATE_TEXT.get(value)
    if text is None:
        text = format(value.normalize(), "f")
        text = _RATE_TEXT[value] = "0" if text in ("0", "-0") else text
    return text
