"""Invoice lines as composed (Decimal values) and their JSON form for the draft."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.engine.money import fmt_price, fmt_quantity, fmt_rate, q2, separate, unit_price
from app.engine.taxcodes import ResolvedTax

KIND_NORMAL = "normal"  # 正常行, 发票行性质 0
KIND_DISCOUNT = "discount"  # 折扣行, 1
KIND_DISCOUNTED = "discounted"  # 被折扣行, 2


@dataclass(slots=True)
class DraftLine:
    kind: str
    source_line_id: str
    name: str
    tax: ResolvedTax
    gross: Decimal  # 含税金额
    amount: Decimal  # 金额 (tax-exclusive)
    tax_amount: Decimal  # 税额
    quantity: Decimal | None = None
    unit_price: Decimal | None = None  # tax-exclusive, 8 dp
    spec: str | None = None
    unit: str | None = None

    @property
    def rate(self) -> Decimal:
        return self.tax.rate

    @property
    def tax_error(self) -> Decimal:
        """金额 × 税率 − 税额, exact (the quantity the 0.06 / 1.27 tolerances bound)."""
        return self.amount * self.tax.rate - self.tax_amount

    def as_dict(self, seq: int) -> dict[str, Any]:
        code = self.tax.code
        out: dict[str, Any] = {
            "seq": seq,
            "kind": self.kind,
            "source_line_id": self.source_line_id,
            "name": self.name,
            "display_name": f"*{code.short_name}*{self.name}",
            "tax_code": code.code,
            "short_name": code.short_name,
            # all three are exact 2-dp Decimals without negative zero (make_line), so plain format
            "amount": format(self.amount, "f"),
            "tax_rate": fmt_rate(self.tax.rate),
            "tax": format(self.tax_amount, "f"),
            "gross": format(self.gross, "f"),
        }
        if self.tax.treatment != "taxable":
            out["tax_treatment"] = self.tax.treatment
        if self.spec:
            out["spec"] = self.spec
        if self.unit and self.kind != KIND_DISCOUNT:
            out["unit"] = self.unit
        if self.quantity is not None:
            out["quantity"] = fmt_quantity(self.quantity)
            out["unit_price"] = fmt_price(self.unit_price)  # type: ignore[arg-type]
        return out


def make_line(
    kind: str,
    source_line_id: str,
    name: str,
    tax: ResolvedTax,
    gross: Decimal,
    *,
    quantity: Decimal | None = None,
    spec: str | None = None,
    unit: str | None = None,
) -> DraftLine:
    """One line from its 含税金额: price-tax separation (§5.1) and the 8-dp unit price."""
    gross = q2(gross)  # "10" from an order becomes "10.00"
    amount, tax_amount = separate(gross, tax.rate)
    price = unit_price(amount, quantity) if quantity is not None else None
    return DraftLine(kind, source_line_id, name, tax, gross, amount, tax_amount, quantity, price, spec, unit)
