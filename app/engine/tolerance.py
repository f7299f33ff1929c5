"""The checks an invoicing system applies to a finished invoice (§5.2, §6.2), on the draft JSON.

A failing invoice raises ``ValidationFailed`` naming every failing field; nothing is only
logged. The §5.2 remedy of moving 0.01 of tax between lines is deliberately not used: the
composer splits the invoice before the cumulative error can reach 1.27 instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from app.errors import Problem, ValidationFailed

LINE_TAX_TOLERANCE = Decimal("0.06")  # |金额×税率 − 税额|, Nuonuo / middleware specs
LINE_PRICE_TOLERANCE = Decimal("0.01")  # |数量×单价 − 金额|, error 9329
INVOICE_TAX_TOLERANCE = Decimal("1.27")  # |Σ(金额×税率 − 税额)| per invoice (127 fen)
MAX_LINES = 2000
REMARK_LIMIT = 200


def invoice_problems(invoice: Mapping[str, Any], path: str = "invoices[0]") -> list[Problem]:
    """Every tolerance, total and 折扣行 rule an invoice breaks (empty when it is sound)."""
    problems: list[Problem] = []
    add = problems.append
    lines = invoice["lines"]
    if not lines:
        add(Problem(f"{path}.lines", "empty", "an invoice needs at least one line"))
    if len(lines) > MAX_LINES:
        add(Problem(f"{path}.lines", "too_many_lines", f"{len(lines)} lines (limit {MAX_LINES})"))
    if len(invoice.get("remark") or "") > REMARK_LIMIT:
        add(Problem(f"{path}.remark", "too_long", f"备注 longer than {REMARK_LIMIT} characters"))
    sum_amount = sum_tax = cumulative = Decimal(0)
    previous: Mapping[str, Any] | None = None
    for index, line in enumerate(lines):
        here = f"{path}.lines[{index}]"
        amount, tax, gross = Decimal(line["amount"]), Decimal(line["tax"]), Decimal(line["gross"])
        rate = Decimal(line["tax_rate"])
        if line["seq"] != index + 1:
            add(Problem(f"{here}.seq", "bad_seq", f"seq {line['seq']} should be {index + 1}"))
        if amount + tax != gross:
            add(Problem(f"{here}.gross", "gross_mismatch", f"金额 {amount} + 税额 {tax} != 含税 {gross}"))
        error = amount * rate - tax
        cumulative += error
        if abs(error) > LINE_TAX_TOLERANCE:
            add(Problem(f"{here}.tax", "tax_tolerance", f"|金额×税率 − 税额| = {abs(error)} exceeds {LINE_TAX_TOLERANCE}"))
        if "quantity" in line:
            quantity, price = Decimal(line["quantity"]), Decimal(line["unit_price"])
            if price < 0:
                add(Problem(f"{here}.unit_price", "negative_price", "单价 must not be negative"))
            if abs(quantity * price - amount) > LINE_PRICE_TOLERANCE:
                add(Problem(f"{here}.unit_price", "price_tolerance",
                            f"|数量×单价 − 金额| = {abs(quantity * price - amount)} exceeds {LINE_PRICE_TOLERANCE}"))
        if line["kind"] == "discount":
            problems.extend(_discount_problems(line, previous, here, gross))
        elif line["kind"] == "discounted":
            following = lines[index + 1] if index + 1 < len(lines) else None
            if following is None or following["kind"] != "discount":
                add(Problem(here, "discount_line_missing", "a 被折扣行 must be followed by its 折扣行"))
            if gross < 0:
                add(Problem(f"{here}.gross", "negative_line", "a 被折扣行 must not be negative"))
        elif gross < 0:
            add(Problem(f"{here}.gross", "negative_line", "only a 折扣行 may be negative"))
        sum_amount += amount
        sum_tax += tax
        previous = line
    if abs(cumulative) > INVOICE_TAX_TOLERANCE:
        add(Problem(f"{path}.total_tax", "cumulative_tax_tolerance",
                    f"|Σ(金额×税率 − 税额)| = {abs(cumulative)} exceeds {INVOICE_TAX_TOLERANCE}"))
    total_amount, total_tax = Decimal(invoice["total_amount"]), Decimal(invoice["total_tax"])
    if total_amount != sum_amount:
        add(Problem(f"{path}.total_amount", "total_mismatch", f"合计金额 {total_amount} != Σ金额 {sum_amount}"))
    if total_tax != sum_tax:
        add(Problem(f"{path}.total_tax", "total_mismatch", f"合计税额 {total_tax} != Σ税额 {sum_tax}"))
    if Decimal(invoice["total"]) != total_amount + total_tax:
        add(Problem(f"{path}.total", "total_mismatch", "价税合计 != 合计金额 + 合计税额"))
    return problems


def _discount_problems(
    line: Mapping[str, Any], previous: Mapping[str, Any] | None, here: str, gross: Decimal
) -> list[Problem]:
    # 折扣行 rules (§6.2): right after its 被折扣行, same name/code/rate, negative, not larger
    if previous is None or previous["kind"] != "discounted":
        return [Problem(here, "discount_line_orphan", "a 折扣行 must come right after its 被折扣行")]
    problems = []
    for key in ("name", "tax_code", "tax_rate"):
        if line[key] != previous[key]:
            problems.append(Problem(f"{here}.{key}", "discount_line_mismatch", f"{key} differs from its 被折扣行"))
    if gross >= 0:
        problems.append(Problem(f"{here}.gross", "discount_not_negative", "a 折扣行 must be negative"))
    if -gross > Decimal(previous["gross"]):
        problems.append(Problem(f"{here}.gross", "discount_too_large", "a 折扣行 exceeds its 被折扣行"))
    return problems


def check_invoice(invoice: Mapping[str, Any], path: str = "invoices[0]") -> None:
    """Raise ``ValidationFailed`` with every reason when the invoice breaks a rule."""
    problems = invoice_problems(invoice, path)
    if problems:
        raise ValidationFailed(problems)
