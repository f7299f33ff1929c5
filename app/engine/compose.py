"""compose_draft: one order → the decision and the invoice draft(s) (docs/architecture.md).

The money pipeline, all in 含税 (tax-inclusive) fen-exact Decimals, per goods line:
1. list = round(数量 × 单价); paid = list − line discount (− line platform discount when
   ``platform_discount="exclude"``); gifts pay nothing.
2. order-level discounts (``order_discount`` and, when excluded, the order ``platform_discount``)
   are shared over the paid, non-gift goods by largest remainder (never shipping, never gifts).
3. successful refunds: a refund naming a line removes its quantity and its amount from that
   line (a line refunded in full leaves the invoice); a refund naming no line is shared over
   the remaining lines and shipping.
4. gifts: ``discount_line`` keeps them at list price with a 100 % 折扣行; ``allocate`` spreads
   the paid price of the goods over goods and gifts by list price; ``omit`` drops them.
5. ``stored_value_paid`` (gift cards, 公告2016年第53号) is shared over every line incl. shipping
   and deducted: it is never invoiced to the buyer.
Then each line is written either as one normal line at its paid price (``net_price``) or as a
被折扣行 at list price followed by one 折扣行 carrying all of its deductions (``discount_line``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from app.engine.contract import ORDER_LIMIT, Order, OrderLine, parse_order
from app.engine.lines import KIND_DISCOUNT, KIND_DISCOUNTED, KIND_NORMAL, DraftLine, make_line
from app.engine.money import allocate, fmt_money, line_gross, to_decimal
from app.engine.split import Unit, check_template, pack, render_remark, split_quantity
from app.engine.taxcodes import (
    Catalogue,
    MapEntry,
    ResolvedTax,
    TaxMappings,
    TaxResolver,
    Unresolved,
    default_catalogue,
    parse_tax_code_map,
)
from app.engine.taxid import check_tax_id
from app.engine.tolerance import MAX_LINES, check_invoice
from app.engine.words import amount_in_words
from app.errors import Problem, ValidationFailed

ZERO = Decimal("0.00")
GOODS_NAME_LIMIT = 90  # §1.4 Nuonuo goodsName (the *简称* prefix is not counted)
SPEC_LIMIT = 40
SHIPPING_LINE_ID = "shipping"
DEFAULT_SHIPPING_NAME = "运费"
DEFAULT_REMARK = "订单号:{order_id}"
ACTIONS = ("issue", "wait", "hold", "skip")
SELLER_FIELDS = ("name", "tax_id", "address", "phone", "bank", "account")
_SELLER_KEYS = frozenset((*SELLER_FIELDS, "shop_name", "title_type"))
_OPTION_CHOICES = {
    "discount_mode": ("discount_line", "net_price"),
    "gift_mode": ("discount_line", "allocate", "omit"),
    "platform_discount": ("include", "exclude"),
    "kind": ("normal", "special"),
}
_OPTION_KEYS = frozenset(
    (*_OPTION_CHOICES, "remark_template", "extra_remarks", "max_lines", "max_amount", "shipping", "tax_code_map")
)


@dataclass(frozen=True, slots=True)
class ShippingOption:
    tax_code: str | None = None
    tax_rate: Decimal | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ComposeOptions:
    discount_mode: str = "discount_line"
    gift_mode: str = "discount_line"
    platform_discount: str = "include"
    remark_template: str = DEFAULT_REMARK
    extra_remarks: tuple[str, ...] = ()
    max_lines: int = MAX_LINES
    max_amount: Decimal | None = None
    kind: str | None = None
    shipping: ShippingOption = ShippingOption()
    tax_code_map: tuple[MapEntry, ...] = ()


def parse_options(options: Mapping[str, Any] | None, path: str = "options") -> ComposeOptions:
    """Validate compose options; unknown options and bad values are named, never ignored."""
    if not options:
        return ComposeOptions()
    if not isinstance(options, Mapping):
        raise ValidationFailed(Problem(path, "invalid", "options must be an object"))
    problems = [Problem(f"{path}.{k}", "unknown_field", "unknown option") for k in options if k not in _OPTION_KEYS]
    values: dict[str, Any] = {}
    for key, choices in _OPTION_CHOICES.items():
        if key in options and options[key] is not None:
            if options[key] not in choices:
                problems.append(Problem(f"{path}.{key}", "invalid", f"must be one of: {', '.join(choices)}"))
            else:
                values[key] = options[key]
    for key in ("remark_template",):
        if key in options:
            if not isinstance(options[key], str):
                problems.append(Problem(f"{path}.{key}", "invalid", "must be a string"))
            else:
                try:
                    values[key] = check_template(options[key], f"{path}.{key}")
                except ValidationFailed as exc:
                    problems.extend(exc.problems)
    if "extra_remarks" in options:
        extra = options["extra_remarks"]
        if not isinstance(extra, list) or not all(isinstance(t, str) for t in extra):
            problems.append(Problem(f"{path}.extra_remarks", "invalid", "must be a list of templates"))
        else:
            for index, text in enumerate(extra):
                try:
                    check_template(text, f"{path}.extra_remarks[{index}]")
                except ValidationFailed as exc:
                    problems.extend(exc.problems)
            values["extra_remarks"] = tuple(extra)
    if "max_lines" in options:
        max_lines = options["max_lines"]
        if isinstance(max_lines, bool) or not isinstance(max_lines, int) or not 2 <= max_lines <= MAX_LINES:
            problems.append(Problem(f"{path}.max_lines", "invalid", f"must be an integer from 2 to {MAX_LINES}"))
        else:
            values["max_lines"] = max_lines
    if options.get("max_amount") is not None:
        try:
            amount = to_decimal(options["max_amount"], what="max_amount")
            if not 0 < amount <= ORDER_LIMIT or amount != amount.quantize(Decimal("0.01")):
                raise ValueError
            values["max_amount"] = amount
        except (TypeError, ValueError, ArithmeticError):  # ArithmeticError: "1e400" cannot be quantized
            problems.append(Problem(f"{path}.max_amount", "invalid",
                                    f'not a decimal amount from 0.01 to {ORDER_LIMIT} like "10000.00"'))
    if options.get("shipping") is not None:
        try:
            values["shipping"] = _shipping_option(options["shipping"], f"{path}.shipping")
        except ValidationFailed as exc:
            problems.extend(exc.problems)
    if options.get("tax_code_map") is not None:
        try:
            values["tax_code_map"] = parse_tax_code_map(options["tax_code_map"], f"{path}.tax_code_map")
        except ValidationFailed as exc:
            problems.extend(exc.problems)
    if problems:
        raise ValidationFailed(problems)
    return ComposeOptions(**values)


def _shipping_option(value: Any, path: str) -> ShippingOption:
    if not isinstance(value, Mapping):
        raise ValidationFailed(Problem(path, "invalid", "must be an object"))
    problems = [Problem(f"{path}.{k}", "unknown_field", "unknown field") for k in value if k not in
                ("tax_code", "tax_rate", "name")]
    code, rate, name = value.get("tax_code"), value.get("tax_rate"), value.get("name")
    if code is not None and not (isinstance(code, str) and len(code) == 19 and code.isdigit()):
        problems.append(Problem(f"{path}.tax_code", "invalid", "not a 19-digit 税收分类编码"))
    parsed_rate = None
    if rate is not None:
        try:
            parsed_rate = to_decimal(rate, what="tax_rate")
            if not 0 <= parsed_rate < 1:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(Problem(f"{path}.tax_rate", "invalid", 'not a tax rate like "0.13"'))
    if name is not None and (not isinstance(name, str) or not name or len(name) > GOODS_NAME_LIMIT):
        problems.append(Problem(f"{path}.name", "invalid", f"must be a name of 1–{GOODS_NAME_LIMIT} characters"))
    if problems:
        raise ValidationFailed(problems)
    return ShippingOption(code, parsed_rate, name)


def _reason(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


@dataclass(slots=True)
class _Item:
    index: int
    line: OrderLine
    quantity: Decimal
    list_gross: Decimal
    net: Decimal  # what is invoiced for the line, 含税
    gift: bool
    tax: ResolvedTax | None = None
    name: str = ""
    spec: str | None = None


def _spread(amount: Decimal, items: list[_Item], shipping: Decimal, too_large: Problem) -> Decimal:
    """Take ``amount`` off the items' paid amounts and shipping by largest remainder (shares
    add up exactly); returns the new shipping. More than there is → ``too_large`` (with the total)."""
    weights = [it.net for it in items] + [shipping]
    available = sum(weights, ZERO)
    if amount > available:
        raise ValidationFailed(Problem(too_large.path, too_large.code, f"{too_large.message} ({available})"))
    shares = allocate(amount, weights)
    for it, share in zip(items, shares, strict=False):
        it.net -= share
    return shipping - shares[-1]


class _Composer:
    def __init__(self, order: Order, opts: ComposeOptions, resolver: TaxResolver):
        self.order = order
        self.opts = opts
        self.resolver = resolver
        self.warnings: list[dict[str, str]] = []
        self.holds: list[dict[str, str]] = []
        self.skip: dict[str, str] | None = None

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(_reason(code, message))

    # ------------------------------------------------------------------ amounts (steps 1–5)
    def amounts(self) -> tuple[list[_Item], Decimal]:
        order, exclude = self.order, self.opts.platform_discount == "exclude"
        items: list[_Item] = []
        for index, line in enumerate(order.lines):
            gross = line_gross(line.quantity, line.unit_price)
            if line.is_gift:
                net = ZERO
            else:
                net = gross - line.discount - (line.platform_discount if exclude else ZERO)
            items.append(_Item(index, line, line.quantity, gross, net, line.is_gift))
        order_off = order.order_discount + (order.platform_discount if exclude else ZERO)
        if order_off:
            targets = [it for it in items if not it.gift and it.net > 0]
            available = sum((it.net for it in targets), ZERO)
            if order_off > available:
                field = "platform_discount" if exclude and order.platform_discount else "order_discount"
                raise ValidationFailed(Problem(field, "discount_too_large",
                                               f"order discounts {order_off} exceed the goods ({available})"))
            for it, share in zip(targets, allocate(order_off, [it.net for it in targets]), strict=True):
                it.net -= share
        shipping = order.shipping_fee
        items, shipping = self.refunds(items, shipping)
        if not any(not it.gift for it in items):
            self.skip = _reason("fully_refunded", "订单已全额退款, 无需开票")
            return [], ZERO
        items = self.gifts(items)
        stored = order.stored_value_paid
        if stored:
            shipping = _spread(stored, items, shipping, Problem(
                "stored_value_paid", "too_large", f"{stored} is more than what remains to invoice"))
            self.warn("stored_value_deducted",
                      f"{fmt_money(stored)} paid with gift cards / stored value is not invoiced to the buyer "
                      "(公告2016年第53号)")
        return items, shipping

    def refunds(self, items: list[_Item], shipping: Decimal) -> tuple[list[_Item], Decimal]:
        by_id = {it.line.line_id: it for it in items}
        touched: dict[str, int] = {}
        unassigned = ZERO
        for index, refund in enumerate(self.order.refunds):
            if refund.status != "success":
                continue
            if refund.line_id is None:
                unassigned += refund.amount
                continue
            item = by_id[refund.line_id]
            if refund.quantity is not None:
                item.quantity -= refund.quantity
            item.net -= refund.amount
            touched[refund.line_id] = index
        kept: list[_Item] = []
        for item in items:
            if item.line.line_id in touched:
                path = f"refunds[{touched[item.line.line_id]}].amount"
                if item.quantity <= 0:
                    if item.net and not item.gift:
                        self.warn("refund_residual",
                                  f"line {item.line.line_id} was returned in full; {fmt_money(item.net)} of "
                                  "its paid amount was not refunded and is not invoiced")
                    continue  # the whole quantity left: the line leaves the invoice
                if item.net < 0:
                    raise ValidationFailed(Problem(path, "refund_too_large",
                                                   f"refunds exceed what was paid for line {item.line.line_id}"))
                item.list_gross = line_gross(item.quantity, item.line.unit_price)
            kept.append(item)
        if unassigned:
            targets = [it for it in kept if not it.gift and it.net > 0]
            shipping = _spread(unassigned, targets, shipping, Problem(
                "refunds", "refund_too_large", f"order refunds {unassigned} exceed the order"))
        return kept, shipping

    def gifts(self, items: list[_Item]) -> list[_Item]:
        mode = self.opts.gift_mode
        kept = []
        for item in items:
            if not item.list_gross:
                # zero-amount lines are refused by some systems (§6.5) and invoice nothing
                code = "gift_without_price" if item.gift else "zero_line"
                self.warn(code, f"line {item.line.line_id} has no price and is left off the invoice")
                continue
            if item.gift and mode == "omit":
                self.warn("gift_omitted", f"gift line {item.line.line_id} is omitted; an unpaid gift may be "
                          "taxed as 视同销售 anyway")
                continue
            kept.append(item)
        if mode == "allocate" and any(it.gift for it in kept):
            paid = sum((it.net for it in kept if not it.gift), ZERO)
            for it, share in zip(kept, allocate(paid, [it.list_gross for it in kept]), strict=True):
                it.net = share
        return kept

    # ------------------------------------------------------------------ tax codes and names
    def resolve(self, items: list[_Item]) -> bool:
        ok = True
        for item in items:
            path = f"lines[{item.index}]"
            resolved = self.resolver.resolve(item.line, path)
            if isinstance(resolved, Unresolved):
                self.holds.append(_reason(resolved.code, resolved.message))
                ok = False
                continue
            item.tax = resolved
            item.name = self.fit(resolved.invoice_name or item.line.name, GOODS_NAME_LIMIT, f"{path}.name", "name")
            if item.line.spec:
                item.spec = self.fit(item.line.spec, SPEC_LIMIT, f"{path}.spec", "spec")
        return ok

    def fit(self, text: str, limit: int, path: str, what: str) -> str:
        """Goods names and specs over the vendors' limit are cut, with a warning (§1.4)."""
        if len(text) <= limit:
            return text
        self.warn(f"{what}_truncated", f"{path} cut to {limit} characters")
        return text[:limit]

    def shipping_tax(self) -> ResolvedTax | None:
        opt = self.opts.shipping
        if opt.tax_code is not None:
            resolved = self.resolver.resolve_code(opt.tax_code, opt.tax_rate, None, "options.shipping")
        else:
            # mixed sale (§4.3): freight follows the order's main goods, the largest line as
            # ordered (first of equals), whatever was refunded or dropped since
            lines = self.order.lines
            goods = [i for i, ln in enumerate(lines) if not ln.is_gift] or list(range(len(lines)))
            index = max(goods, key=lambda i: lines[i].list_gross)
            main = self.resolver.resolve(lines[index], f"lines[{index}]")
            if isinstance(main, Unresolved):
                resolved = main
            elif opt.tax_rate is not None:
                resolved = self.resolver.resolve_code(main.code.code, opt.tax_rate, None, "options.shipping")
            else:
                return ResolvedTax(main.code, main.rate, main.treatment, None, "main_goods")
        if isinstance(resolved, Unresolved):
            if _reason(resolved.code, resolved.message) not in self.holds:
                self.holds.append(_reason(resolved.code, resolved.message))
            return None
        return resolved

    # ------------------------------------------------------------------ lines
    def units(self, items: list[_Item], shipping: Decimal, shipping_tax: ResolvedTax | None) -> list[Unit]:
        units: list[Unit] = []
        max_amount = self.opts.max_amount
        for item in items:
            if max_amount is not None and item.net > max_amount:
                chunks = split_quantity(item.quantity, item.list_gross, item.net, item.line.unit_price,
                                        max_amount, f"lines[{item.index}]")
            else:
                chunks = [(item.quantity, item.list_gross, item.net)]
            for quantity, list_gross, net in chunks:
                units.append(Unit(self.item_lines(item, quantity, list_gross, net)))
        if shipping:
            if max_amount is not None and shipping > max_amount:
                raise ValidationFailed(Problem("shipping_fee", "line_too_large",
                                               f"shipping {shipping} exceeds max_amount {max_amount}"))
            name = self.opts.shipping.name or DEFAULT_SHIPPING_NAME
            units.append(Unit([make_line(KIND_NORMAL, SHIPPING_LINE_ID, name, shipping_tax, shipping)]))  # type: ignore[arg-type]
        return units

    def item_lines(self, item: _Item, quantity: Decimal, list_gross: Decimal, net: Decimal) -> list[DraftLine]:
        src, name, tax, spec, unit = item.line.line_id, item.name, item.tax, item.spec, item.line.unit
        assert tax is not None
        as_pair = net < list_gross and (
            self.opts.discount_mode == "discount_line" or net == 0 or (item.gift and self.opts.gift_mode == "discount_line")
        )
        if as_pair:
            return [
                make_line(KIND_DISCOUNTED, src, name, tax, list_gross, quantity=quantity, spec=spec, unit=unit),
                make_line(KIND_DISCOUNT, src, name, tax, net - list_gross),
            ]
        if net > list_gross:
            self.warn("price_above_list", f"line {src} is invoiced at {fmt_money(net)}, above its list price")
        return [make_line(KIND_NORMAL, src, name, tax, net, quantity=quantity, spec=spec, unit=unit)]


def _seller(seller: Any) -> tuple[dict[str, Any], list[dict[str, str]], str | None]:
    if seller is None:
        raise ValidationFailed(Problem("seller", "required", "required when the shop is not configured"))
    if not isinstance(seller, Mapping):
        raise ValidationFailed(Problem("seller", "invalid", "must be an object"))
    problems = [Problem(f"seller.{k}", "unknown_field", "unknown field") for k in seller if k not in _SELLER_KEYS]
    for key in (*SELLER_FIELDS, "shop_name"):
        if seller.get(key) is not None and not isinstance(seller[key], str):
            problems.append(Problem(f"seller.{key}", "invalid", "must be a string"))
    if problems:
        raise ValidationFailed(problems)
    if not seller.get("name"):
        problems.append(Problem("seller.name", "required", "required"))
    if not seller.get("tax_id"):
        problems.append(Problem("seller.tax_id", "required", "required"))
    if problems:
        raise ValidationFailed(problems)
    holds = []
    check = check_tax_id(seller["tax_id"], path="seller.tax_id")
    if check.checksum_ok is False:
        holds.append(_reason("seller_tax_id_checksum", f"销售方税号 {check.value} fails the GB 32100 check"))
    party = {k: seller[k] for k in SELLER_FIELDS if seller.get(k)}
    party["tax_id"] = check.value
    return party, holds, seller.get("shop_name")


def _buyer(order: Order, composer: _Composer) -> dict[str, Any]:
    request = order.invoice_request
    if request is None:
        composer.warn("default_title", "no invoice request: issued to the title 个人")
        return {"title_type": "personal", "name": "个人"}
    party: dict[str, Any] = {"title_type": request.title_type, "name": request.title}
    if request.tax_id:
        check = check_tax_id(request.tax_id, path="invoice_request.tax_id")
        party["tax_id"] = check.value
        if check.checksum_ok is False:
            composer.holds.append(_reason(
                "tax_id_checksum",
                f"纳税人识别号 {check.value} fails the GB 32100 check; a person must confirm it (real codes can fail)"))
    if request.natural_person:
        party["natural_person"] = True
        if request.id_number and "tax_id" not in party:
            party["tax_id"] = check_tax_id(request.id_number, path="invoice_request.id_number").value
        if "tax_id" not in party:
            composer.holds.append(_reason("natural_person_id_missing", "自然人标志 needs the buyer's ID number"))
    if request.title_type == "enterprise" and "tax_id" not in party:
        composer.holds.append(_reason("tax_id_missing", "企业抬头 needs a 纳税人识别号 (公告2017年第16号)"))
    for key in ("address", "phone", "bank", "account"):
        value = getattr(request, key)
        if value:
            party[key] = value
    return party


def _kind_holds(kind: str, buyer: Mapping[str, Any], items: list[_Item], composer: _Composer) -> None:
    if kind != "special":
        return
    # 增值税暂行条例 第二十一条: no 专票 to consumers, none for exempt sales; 专票 needs the tax id
    if buyer.get("title_type") == "personal":
        composer.holds.append(_reason("special_to_person", "专票 cannot be issued to a personal title"))
    if not buyer.get("tax_id"):
        composer.holds.append(_reason("special_without_tax_id", "专票 needs the buyer's 纳税人识别号"))
    untaxed = [it.line.line_id for it in items if it.tax and it.tax.treatment in ("exempt", "not_taxable")]
    if untaxed:
        composer.holds.append(_reason("special_with_untaxed_lines",
                                      f"专票 cannot carry 免税/不征税 lines (lines {', '.join(untaxed)})"))


def _decision(order: Order, decision: Mapping[str, Any] | None) -> dict[str, Any]:
    if decision is None:  # composing only: the caller decided (the rules live in app/rules)
        decision = {"action": "issue"}
    if not isinstance(decision, Mapping) or decision.get("action") not in ACTIONS:
        raise ValidationFailed(Problem("decision.action", "invalid", f"must be one of: {', '.join(ACTIONS)}"))
    out: dict[str, Any] = {"action": decision["action"], "reasons": [dict(r) for r in decision.get("reasons") or []]}
    for key in ("rules_fired", "issue_after"):
        if decision.get(key):
            out[key] = decision[key]
    if order.status in ("cancelled", "closed") and out["action"] != "skip":
        # a cancelled order is never invoiced, whatever a rule said
        out["action"] = "skip"
        out["reasons"].append(_reason("order_cancelled", "订单已取消或关闭"))
    return out


def compose_draft(
    order: Mapping[str, Any] | Order,
    seller: Mapping[str, Any] | None,
    options: Mapping[str, Any] | None = None,
    decision: Mapping[str, Any] | None = None,
    catalogue: Catalogue | None = None,
    mappings: TaxMappings | None = None,
) -> dict[str, Any]:
    """The invoice draft for one order (contracts/invoice-draft.schema.json).

    ``order`` is a contract document (validated here) or an already parsed ``Order`` (fast
    path). ``decision`` is the rules' decision (its ``options`` apply under ``options``);
    without one the order is composed as if the rules said "issue". Raises ``ValidationFailed`` for bad input;
    things a person must look at become ``decision.action == "hold"`` with reasons.
    """
    parsed = order if isinstance(order, Order) else parse_order(order)
    merged = dict((decision or {}).get("options") or {}) if isinstance(decision, Mapping) else {}
    merged.update(options or {})
    opts = parse_options(merged)
    seller_party, seller_holds, shop_name = _seller(seller)
    base = _decision(parsed, decision)
    composer = _Composer(parsed, opts, TaxResolver(catalogue or default_catalogue(), mappings, opts.tax_code_map))
    composer.holds.extend(seller_holds)
    draft: dict[str, Any] = {"platform": parsed.platform, "shop_id": parsed.shop_id, "order_id": parsed.order_id}
    if isinstance(decision, Mapping) and decision.get("rules_version"):
        draft["rules_version"] = decision["rules_version"]
    draft["decision"] = base
    draft["invoices"] = invoices = []
    if base["action"] == "skip":
        return draft

    items, shipping = composer.amounts()
    if composer.skip is None and not any(it.net for it in items) and not shipping:
        composer.skip = _reason("nothing_to_invoice", "nothing is left to invoice to the buyer")
    if composer.skip is not None:
        base["action"] = "skip"
        base["reasons"].append(composer.skip)
        _finish(draft, composer)
        return draft

    resolved = composer.resolve(items)
    shipping_tax = composer.shipping_tax() if shipping else None
    buyer = _buyer(parsed, composer)
    kind = opts.kind or (parsed.invoice_request.kind if parsed.invoice_request else "normal")
    _kind_holds(kind, buyer, items, composer)
    if not resolved or (shipping and shipping_tax is None):
        _finish(draft, composer)  # no invoice without a code for every line
        return draft

    groups = pack(composer.units(items, shipping, shipping_tax), opts.max_lines, opts.max_amount)
    values = {"order_id": parsed.order_id, "shop_id": parsed.shop_id, "platform": parsed.platform,
              "shop_name": shop_name or parsed.extensions.get("shop_name") or parsed.shop_id}
    grand_total = ZERO
    for number, group in enumerate(groups, start=1):
        lines = [ln for unit in group for ln in unit.lines]
        total_amount = sum((ln.amount for ln in lines), ZERO)
        total_tax = sum((ln.tax_amount for ln in lines), ZERO)
        total = total_amount + total_tax
        grand_total += total
        invoice = {
            "kind": kind,
            "color": "blue",
            "buyer": buyer,
            "seller": seller_party,
            "remark": render_remark(opts.remark_template, opts.extra_remarks, values, number, len(groups)),
            "lines": [ln.as_dict(seq) for seq, ln in enumerate(lines, start=1)],
            "total_amount": fmt_money(total_amount),
            "total_tax": fmt_money(total_tax),
            "total": fmt_money(total),
            "total_in_words": amount_in_words(total),
        }
        check_invoice(invoice, f"invoices[{number - 1}]")
        invoices.append(invoice)
    if parsed.invoice_amount is not None and grand_total != parsed.invoice_amount:
        diff = grand_total - parsed.invoice_amount
        composer.holds.append(_reason(
            "invoice_amount_mismatch",
            f"drafts total {fmt_money(grand_total)} but the platform's invoice_amount is "
            f"{fmt_money(parsed.invoice_amount)} (difference {fmt_money(diff)})"))
    _reconcile_paid(parsed, opts, grand_total, composer)
    _finish(draft, composer)
    return draft


def _reconcile_paid(order: Order, opts: ComposeOptions, total: Decimal, composer: _Composer) -> None:
    """Warn when the buyer's paid_amount does not explain the invoiced total (no refunds involved)."""
    if order.paid_amount is None or order.refunds:
        return
    expected = order.paid_amount - order.stored_value_paid
    if opts.platform_discount == "include":
        expected += order.platform_discount + sum((ln.platform_discount for ln in order.lines if not ln.is_gift), ZERO)
    if expected != total:
        composer.warn("paid_amount_mismatch",
                      f"invoiced {fmt_money(total)} but paid_amount implies {fmt_money(expected)}")


def _finish(draft: dict[str, Any], composer: _Composer) -> None:
    decision = draft["decision"]
    if composer.holds and decision["action"] in ("issue", "wait", "hold"):
        decision["action"] = "hold"
        decision["reasons"].extend(composer.holds)
    if composer.warnings:
        draft["warnings"] = composer.warnings
