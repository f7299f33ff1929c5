"""What an order amounts to before any invoice is composed: the figures the rules test
(``amount_fen``, refund state) and the back office lists (实付, 应开票金额).

Computed once from the parsed order (app.engine.contract); composition (app.engine.compose)
then allocates discounts and refunds line by line and is the judge of what is invoiced.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from app.engine.contract import Order
from app.engine.money import line_gross, q2

ZERO = Decimal("0.00")


@dataclass(frozen=True, slots=True)
class OrderTotals:
    goods: Decimal  # Σ of the non-gift lines' list price − the merchant's line discount
    base: Decimal  # goods − order discount + shipping − stored value (gift cards are never invoiced)
    refunded: Decimal  # successful refunds
    platform_discount: Decimal  # the order-level discount the platform funds
    line_platform_discount: Decimal  # the platform-funded line discounts of non-gift lines
    stored_value: Decimal
    paid_given: Decimal | None  # the platform's 实付, when it gives one
    invoice_given: Decimal | None  # the platform's 应开票金额, when it gives one

    @property
    def invoiceable(self) -> Decimal:
        """应开票金额: the platform's figure, else what is left after successful refunds."""
        if self.invoice_given is not None:
            return self.invoice_given
        return max(ZERO, self.base - self.refunded)

    @property
    def paid(self) -> Decimal:
        """实付: the platform's figure, else list − every discount + shipping (gift-card money
        counts as paid; the platform's coupons do not)."""
        if self.paid_given is not None:
            return self.paid_given
        return self.base + self.stored_value - self.platform_discount - self.line_platform_discount

    @property
    def refund_basis(self) -> Decimal:
        """What successful refunds are compared with to call a refund full: what the buyer
        paid, else the invoiceable base less the platform's order coupon."""
        return self.paid_given if self.paid_given is not None else self.base - self.platform_discount


def line_net(quantity: Decimal, unit_price: Decimal, discount: Decimal) -> Decimal:
    """A line's list price (to the fen) less the merchant's discount on it."""
    return line_gross(quantity, unit_price) - q2(discount)


def order_totals(order: Order) -> OrderTotals:
    goods = ZERO
    line_platform = ZERO
    for line in order.lines:
        if not line.is_gift:  # gifts are given away: their 100 % discount line nets them to zero
            goods += line_net(line.quantity, line.unit_price, line.discount)
            line_platform += q2(line.platform_discount)
    base = goods - q2(order.order_discount) + q2(order.shipping_fee) - q2(order.stored_value_paid)
    refunded = sum((q2(r.amount) for r in order.refunds if r.status == "success"), ZERO)
    return OrderTotals(
        goods=goods, base=base, refunded=refunded, platform_discount=q2(order.platform_discount),
        line_platform_discount=line_platform, stored_value=q2(order.stored_value_paid),
        paid_given=q2(order.paid_amount) if order.paid_amount is not None else None,
        invoice_given=q2(order.invoice_amount) if order.invoice_amount is not None else None,
    )
