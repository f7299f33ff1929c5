"""Splitting one order's lines into several invoices (§7) and the 备注 of each.

The unit of packing is a ``Unit``: a normal line, or a 被折扣行 with its 折扣行 — a 折扣行
never leaves its 被折扣行. Units are packed in order into invoices that respect ``max_lines``,
``max_amount`` (价税合计) and the cumulative tax tolerance (|Σ(金额×税率 − 税额)| ≤ 1.27).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal

from app.engine.lines import DraftLine
from app.engine.money import FEN, allocate, line_gross
from app.engine.tolerance import INVOICE_TAX_TOLERANCE, REMARK_LIMIT
from app.errors import Problem, ValidationFailed

REMARK_FIELDS = frozenset({"order_id", "shop_id", "platform", "shop_name", "split_index", "split_count"})
MAX_QUANTITY_CHUNKS = 10_000


@dataclass(slots=True)
class Unit:
    lines: list[DraftLine]
    gross: Decimal = field(init=False)  # what the unit adds to 价税合计
    error: Decimal = field(init=False)  # what it adds to Σ(金额×税率 − 税额)

    def __post_init__(self) -> None:
        self.gross = sum((ln.gross for ln in self.lines), Decimal(0))
        self.error = sum((ln.tax_error for ln in self.lines), Decimal(0))


def pack(
    units: Sequence[Unit],
    max_lines: int,
    max_amount: Decimal | None = None,
    max_error: Decimal = INVOICE_TAX_TOLERANCE,
) -> list[list[Unit]]:
    """Greedy in-order packing; a new invoice starts when the next unit would break a limit."""
    groups: list[list[Unit]] = []
    current: list[Unit] = []
    count = 0
    gross = error = Decimal(0)
    for index, unit in enumerate(units):
        size = len(unit.lines)
        if size > max_lines:
            raise ValidationFailed(Problem("options.max_lines", "too_small", f"a unit needs {size} lines"))
        if max_amount is not None and unit.gross > max_amount:
            raise ValidationFailed(
                Problem(f"units[{index}]", "line_too_large", f"{unit.gross} exceeds max_amount {max_amount}")
            )
        full = (
            count + size > max_lines
            or (max_amount is not None and gross + unit.gross > max_amount)
            or abs(error + unit.error) > max_error
        )
        if current and full:
            groups.append(current)
            current, count, gross, error = [], 0, Decimal(0), Decimal(0)
        current.append(unit)
        count += size
        gross += unit.gross
        error += unit.error
    if current:
        groups.append(current)
    return groups


def split_quantity(
    quantity: Decimal,
    list_gross: Decimal,
    net: Decimal,
    price: Decimal,
    max_amount: Decimal,
    path: str,
) -> list[tuple[Decimal, Decimal, Decimal]]:
    """Split one line larger than ``max_amount`` by quantity: ``[(quantity, list_gross, net), ...]``.

    Chunks hold a whole number of units (so their list price is exact); the last chunk takes
    the rest, fractional quantities included. The net is shared by largest remainder so the
    chunks add up exactly. A line whose single unit already exceeds the limit is an error.
    """
    per_unit = net / quantity
    chunk = ((max_amount - FEN) / per_unit).to_integral_value(rounding=ROUND_FLOOR) if per_unit else quantity
    while chunk >= 1:
        full = int((quantity / chunk).to_integral_value(rounding=ROUND_FLOOR))
        rest = quantity - chunk * full
        quantities = [chunk] * full + ([rest] if rest else [])
        if len(quantities) > MAX_QUANTITY_CHUNKS:
            break
        nets = allocate(net, quantities)
        if max(nets) <= max_amount:
            lists = [line_gross(q, price) for q in quantities[:-1]]
            lists.append(list_gross - sum(lists, Decimal(0)))
            return list(zip(quantities, lists, nets, strict=True))
        chunk -= 1  # rounding pushed a chunk over the limit: one unit fewer per chunk
    raise ValidationFailed(
        Problem(path, "line_too_large",
                f"the line ({net}) exceeds max_amount {max_amount} and cannot be split by quantity")
    )


def check_template(template: str, path: str) -> str:
    """A 备注 template may use only the known placeholders, without conversions or attributes."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValidationFailed(Problem(path, "invalid_template", f"bad template: {exc}")) from None
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name not in REMARK_FIELDS or spec or conversion:
            known = ", ".join(sorted(REMARK_FIELDS))
            raise ValidationFailed(
                Problem(path, "unknown_placeholder", f"unknown placeholder {{{field_name}}} (known: {known})")
            )
    return template


def render_remark(
    template: str,
    extra: Sequence[str],
    values: Mapping[str, object],
    split_index: int,
    split_count: int,
) -> str:
    """备注 of one invoice; when the order is split and the template does not say where, add ` (i/n)`."""
    data = {**values, "split_index": split_index, "split_count": split_count}
    text = template.format_map(data)
    if split_count > 1 and "{split_index}" not in template:
        text += f" ({split_index}/{split_count})"
    for more in extra:
        rendered = more.format_map(data)
        if rendered:
            text = f"{text} {rendered}" if text else rendered
    if len(text) > REMARK_LIMIT:
        raise ValidationFailed(
            Problem("remark", "too_long", f"备注 would be {len(text)} characters (limit {REMARK_LIMIT}): {text[:40]}…")
        )
    return text
