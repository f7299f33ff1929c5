"""The order contract: schema validation with readable problems, semantic checks, parsing.

``validate_order`` never raises on bad input: every issue comes back as a
``Problem(path, code, message)`` with a path such as ``lines[3].unit_price``.
``parse_order`` raises ``ValidationFailed`` with the same problems or returns an ``Order``
whose money and quantities are ``Decimal``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError

from app.engine.clock import BEIJING, parse_iso_datetime
from app.engine.json_input import structure_problems
from app.engine.money import line_gross
from app.engine.taxid import check_tax_id
from app.errors import Problem, ValidationFailed

CONTRACTS_DIR = Path(__file__).resolve().parent.parent / "contracts"
ORDER_SCHEMA_PATH = CONTRACTS_DIR / "order.schema.json"
DRAFT_SCHEMA_PATH = CONTRACTS_DIR / "invoice-draft.schema.json"

ADDRESS_PHONE_LIMIT = 100  # §1.4: address + phone ≤ 100 together (Nuonuo)
# What one line, and one order, may come to (quantity × unit price, yuan): no sale this system
# invoices is near 10 billion yuan, and every figure it computes stays far inside exact range.
LINE_LIMIT = Decimal("9999999999.99")
ORDER_LIMIT = Decimal("9999999999.99")
EXTENSIONS_LIMIT = 16 * 1024  # characters of the platform's extras, as JSON
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)

# RFC 3339 date-time with a mandatory offset (jsonschema's own checker needs an extra package)
_DATE_TIME_RE = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_FORMATS = FormatChecker(formats=())


def _in_range(moment: datetime) -> bool:
    """Business times of this system fall in 1970–2099 (wherever the offset puts them): years
    0 or 9999 overflow date arithmetic, and no order or invoice is dated there."""
    try:
        return moment.tzinfo is not None and _EARLIEST <= moment <= _LATEST
    except OverflowError:  # past the end of datetime once in UTC
        return False


def is_contract_time(value: object) -> bool:
    """A date-time as the contract takes it: RFC 3339 with an offset, between 1970 and 2099."""
    try:
        return isinstance(value, str) and _is_date_time(value)
    except ValueError:
        return False


def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # type errors are reported by "type"
    if not _DATE_TIME_RE.match(value):
        return False
    return _in_range(parse_iso_datetime(value))  # raises on 2026-02-30 and the like


_FORMATS.checks("date-time", raises=ValueError)(_is_date_time)


def _date_time_ok(value: object) -> bool:
    """``_is_date_time`` as a plain predicate (fastjsonschema's custom formats return a bool)."""
    return not isinstance(value, str) or is_contract_time(value)


# what each shared pattern means, for messages a merchant can act on
_PATTERN_MESSAGES = {
    "money": "not a decimal amount",
    "qty": "not a decimal quantity",
    "rate": "not a tax rate",
    "price": "not a decimal price",
}


@functools.cache
def _schema(path: Path) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@functools.cache
def order_validator() -> Draft202012Validator:
    return Draft202012Validator(_schema(ORDER_SCHEMA_PATH), format_checker=_FORMATS)


@functools.cache
def _fast_order_check() -> Any:
    """The order schema compiled to Python by fastjsonschema: only ever a shortcut for
    documents jsonschema would accept too.

    It checks the same keywords with the same date-time format (ours, not its own looser
    regex); its patterns are stricter (``$`` becomes ``\\Z``, so no trailing newline), which
    only sends such documents down the jsonschema path. The ``$defs`` are inlined first: no
    ``$ref`` is left to resolve (the relative ``$id`` would make it try to fetch one), and the
    generated code needs no per-call helper functions (each call of one formats its
    error-path prefix, which costs more than the check itself).
    """
    schema = _schema(ORDER_SCHEMA_PATH)
    inlined = _inline_refs({k: v for k, v in schema.items() if k not in ("$id", "$defs")}, schema.get("$defs", {}))
    return fastjsonschema.compile(inlined, formats={"date-time": _date_time_ok}, use_default=False)


_ANNOTATIONS = frozenset({"description", "title", "$comment", "examples"})


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """``node`` with every ``{"$ref": "#/$defs/name", ...}`` replaced by that definition (an
    ``allOf`` of both when the siblings also validate the same keywords)."""
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inline_refs(v, defs) for k, v in node.items() if k != "$ref"}
    ref = node.get("$ref")
    if ref is None:
        return out
    prefix = "#/$defs/"
    if not isinstance(ref, str) or not ref.startswith(prefix) or ref[len(prefix):] not in defs:
        raise ValueError(f"cannot inline $ref {ref!r}")
    target = _inline_refs(defs[ref[len(prefix):]], defs)
    if set(out) - _ANNOTATIONS & set(target):
        return {"allOf": [target, out]}
    return {**target, **out}


def _fast_order_ok(doc: Mapping[str, Any]) -> bool:
    """True only if the fast validator accepts ``doc``; False means "ask jsonschema"."""
    try:
        _fast_order_check()(doc)
    except Exception:  # JsonSchemaValueException, or anything odd: let jsonschema judge and word it
        return False
    # fastjsonschema takes a tuple for a JSON array, jsonschema does not: the only arrays
    # in the order contract are these two.
    return type(doc["lines"]) is list and type(doc.get("refunds", [])) is list


@functools.cache
def draft_validator() -> Draft202012Validator:
    return Draft202012Validator(_schema(DRAFT_SCHEMA_PATH), format_checker=_FORMATS)


@functools.cache
def _pattern_names(path: Path) -> dict[str, str]:
    defs = _schema(path).get("$defs", {})
    return {d["pattern"]: name for name, d in defs.items() if isinstance(d, dict) and "pattern" in d}


def _path(parts: Iterable[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _join(base: str, name: str) -> str:
    return f"{base}.{name}" if base else name


def _example(kind: str | None) -> str:
    return {"money": '"99.00"', "qty": '"2"', "rate": '"0.13"', "price": '"87.61000000"'}.get(kind or "", "")


def _problems_from_error(error: SchemaError, patterns: dict[str, str]) -> list[Problem]:
    path = _path(error.absolute_path)
    validator = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind = patterns.get(schema.get("pattern", ""))
    if validator == "additionalProperties":
        known = set(schema.get("properties", {}))
        instance = error.instance if isinstance(error.instance, dict) else {}
        return [Problem(_join(path, str(k)), "unknown_field", "unknown field") for k in instance if k not in known]
    if validator == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        return [Problem(_join(path, str(k)), "required", "required") for k in error.validator_value if k not in instance]
    if validator == "pattern":
        if kind in _PATTERN_MESSAGES:
            return [Problem(path, "invalid", f"{_PATTERN_MESSAGES[kind]} (e.g. {_example(kind)})")]
        if path.endswith("tax_code"):
            return [Problem(path, "invalid", "not a 19-digit 税收分类编码")]
        return [Problem(path, "invalid", "has the wrong format")]
    if validator == "type":
        expected = error.validator_value
        if kind in _PATTERN_MESSAGES:
            return [
                Problem(path, "invalid", f"{_PATTERN_MESSAGES[kind]}: give a decimal string like {_example(kind)}")
            ]
        names = {"string": "a string", "object": "an object", "array": "a list", "boolean": "true or false",
                 "integer": "an integer", "null": "null", "number": "a number"}
        wanted = " or ".join(names.get(str(t), str(t))
                             for t in (expected if isinstance(expected, list) else [expected]))
        return [Problem(path, "invalid", f"must be {wanted}")]
    if validator == "enum":
        options = ", ".join(str(v) for v in error.validator_value)
        return [Problem(path, "invalid", f"must be one of: {options}")]
    if validator == "const":
        return [Problem(path, "invalid", f"must be {error.validator_value}")]
    if validator == "format":
        if isinstance(error.instance, str) and _DATE_TIME_RE.match(error.instance):
            try:
                parse_iso_datetime(error.instance)
                return [Problem(path, "out_of_range", "must be a date-time between 1970 and 2099")]
            except ValueError:
                pass
        return [Problem(path, "invalid", "not an ISO 8601 date-time with offset (e.g. 2026-11-11T00:01:02+08:00)")]
    if validator == "maxLength":
        return [Problem(path, "too_long", f"longer than {error.validator_value} characters")]
    if validator == "minLength":
        return [Problem(path, "invalid", "must not be empty")]
    if validator == "minItems":
        return [Problem(path, "invalid", f"needs at least {error.validator_value} item(s)")]
    if validator == "maxItems":
        return [Problem(path, "too_long", f"more than {error.validator_value} items")]
    if validator in ("minimum", "maximum"):
        word = "at least" if validator == "minimum" else "at most"
        return [Problem(path, "invalid", f"must be {word} {error.validator_value}")]
    return [Problem(path, "invalid", error.message)]


def _schema_problems(validator: Draft202012Validator, schema_path: Path, doc: Any) -> list[Problem]:
    patterns = _pattern_names(schema_path)
    seen: dict[Problem, None] = {}
    for error in validator.iter_errors(doc):
        for problem in _problems_from_error(error, patterns):
            seen.setdefault(problem, None)
    return sorted(seen, key=lambda p: p.path)


# ---------------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True, slots=True)
class OrderLine:
    line_id: str
    name: str
    quantity: Decimal
    unit_price: Decimal  # tax-inclusive list price per unit
    sku: str | None = None
    category: str | None = None
    spec: str | None = None
    unit: str | None = None
    discount: Decimal = Decimal("0.00")  # merchant-funded, tax-inclusive
    platform_discount: Decimal = Decimal("0.00")  # platform-funded
    is_gift: bool = False
    tax_code: str | None = None
    tax_rate: Decimal | None = None
    tax_treatment: str | None = None

    @property
    def list_gross(self) -> Decimal:
        return line_gross(self.quantity, self.unit_price)


@dataclass(frozen=True, slots=True)
class Refund:
    refund_id: str
    amount: Decimal
    status: str
    line_id: str | None = None
    quantity: Decimal | None = None
    kind: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceRequest:
    kind: str
    title_type: str
    title: str
    tax_id: str | None = None
    natural_person: bool = False
    id_number: str | None = None
    address: str | None = None
    phone: str | None = None
    bank: str | None = None
    account: str | None = None
    email: str | None = None
    mobile: str | None = None
    platform_request_id: str | None = None
    requested_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Order:
    platform: str
    shop_id: str
    order_id: str
    status: str
    lines: tuple[OrderLine, ...]
    invoice_request: InvoiceRequest | None = None
    shipping_fee: Decimal = Decimal("0.00")
    order_discount: Decimal = Decimal("0.00")
    platform_discount: Decimal = Decimal("0.00")
    stored_value_paid: Decimal = Decimal("0.00")
    paid_amount: Decimal | None = None
    invoice_amount: Decimal | None = None
    refunds: tuple[Refund, ...] = ()
    remark: str | None = None
    created_at: datetime | None = None
    paid_at: datetime | None = None
    shipped_at: datetime | None = None
    received_at: datetime | None = None
    buyer_nick: str | None = None
    buyer_email: str | None = None
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """platform:shop:order, the order's identity across Kaipiao."""
        return f"{self.platform}:{self.shop_id}:{self.order_id}"


_ZERO = Decimal("0.00")


def _dec(value: str | None, default: Decimal | None = _ZERO) -> Decimal | None:
    if value is None:
        return default
    if isinstance(value, float):  # a binary fraction is not an amount: the document left the contract
        raise TypeError(f"money and quantities must be decimal strings, not float {value!r}")
    return Decimal(value)


def _time(value: str | None) -> datetime | None:
    """An aware datetime; a naive one (only from documents that skipped validation) is Beijing time."""
    if not value:
        return None
    moment = parse_iso_datetime(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=BEIJING)


def build_order(doc: Mapping[str, Any]) -> Order:
    """The ``Order`` of a document, without any validation: raises KeyError, TypeError or
    ValueError where the document does not fit (``parse_order`` turns those into problems)."""
    lines = tuple(
        OrderLine(
            line_id=ln["line_id"],
            name=ln["name"],
            quantity=_dec(ln["quantity"]),  # type: ignore[arg-type]
            unit_price=_dec(ln["unit_price"]),  # type: ignore[arg-type]
            sku=ln.get("sku"),
            category=ln.get("category"),
            spec=ln.get("spec"),
            unit=ln.get("unit"),
            discount=_dec(ln.get("discount")),  # type: ignore[arg-type]
            platform_discount=_dec(ln.get("platform_discount")),  # type: ignore[arg-type]
            is_gift=bool(ln.get("is_gift", False)),
            tax_code=ln.get("tax_code"),
            tax_rate=_dec(ln.get("tax_rate"), None),
            tax_treatment=ln.get("tax_treatment"),
        )
        for ln in doc["lines"]
    )
    request = doc.get("invoice_request")
    invoice_request = None
    if request:
        invoice_request = InvoiceRequest(
            kind=request["kind"],
            title_type=request["title_type"],
            title=request["title"],
            tax_id=request.get("tax_id") or None,
            natural_person=bool(request.get("natural_person", False)),
            **{k: request.get(k) or None for k in (
                "id_number", "address", "phone", "bank", "account", "email", "mobile", "platform_request_id")},
            requested_at=_time(request.get("requested_at")),
        )
    buyer = doc.get("buyer") or {}
    refunds = tuple(
        Refund(
            refund_id=r["refund_id"],
            amount=_dec(r["amount"]),  # type: ignore[arg-type]
            status=r["status"],
            line_id=r.get("line_id"),
            quantity=_dec(r.get("quantity"), None),
            kind=r.get("kind"),
        )
        for r in doc.get("refunds", ())
    )
    return Order(
        platform=doc["platform"],
        shop_id=doc["shop_id"],
        order_id=doc["order_id"],
        status=doc["status"],
        lines=lines,
        invoice_request=invoice_request,
        shipping_fee=_dec(doc.get("shipping_fee")),  # type: ignore[arg-type]
        order_discount=_dec(doc.get("order_discount")),  # type: ignore[arg-type]
        platform_discount=_dec(doc.get("platform_discount")),  # type: ignore[arg-type]
        stored_value_paid=_dec(doc.get("stored_value_paid")),  # type: ignore[arg-type]
        paid_amount=_dec(doc.get("paid_amount"), None),
        invoice_amount=_dec(doc.get("invoice_amount"), None),
        refunds=refunds,
        remark=doc.get("remark"),
        created_at=_time(doc.get("created_at")),
        paid_at=_time(doc.get("paid_at")),
        shipped_at=_time(doc.get("shipped_at")),
        received_at=_time(doc.get("received_at")),
        buyer_nick=buyer.get("nick") or None,
        buyer_email=buyer.get("email") or None,
        extensions=dict(doc.get("extensions") or {}),
    )


def semantic_problems(order: Order) -> list[Problem]:
    """Checks the schema cannot express (money signs, duplicates, discounts, refunds, titles)."""
    problems: list[Problem] = []
    add = problems.append
    seen_ids: dict[str, int] = {}
    lines_by_id: dict[str, OrderLine] = {}
    discountable = _ZERO
    for index, line in enumerate(order.lines):
        here = f"lines[{index}]"
        if line.line_id in seen_ids:
            add(Problem(f"{here}.line_id", "duplicate",
                        f"duplicate line_id {line.line_id!r} (also lines[{seen_ids[line.line_id]}])"))
        else:
            seen_ids[line.line_id] = index
            lines_by_id[line.line_id] = line
        if line.quantity <= 0:
            add(Problem(f"{here}.quantity", "invalid", "must be greater than zero"))
        for name in ("unit_price", "discount", "platform_discount"):
            if getattr(line, name) < 0:
                add(Problem(f"{here}.{name}", "negative", "must not be negative"))
        gross = line.list_gross
        if gross > LINE_LIMIT:
            add(Problem(f"{here}.quantity", "too_large",
                        f"quantity × unit_price comes to {gross}; a line may come to at most {LINE_LIMIT}"))
        off = line.discount + line.platform_discount
        if off > gross:
            add(Problem(f"{here}.discount", "discount_too_large",
                        f"discounts {off} are larger than the line ({gross})"))
        if line.tax_treatment not in (None, "taxable") and line.tax_rate:
            add(Problem(f"{here}.tax_rate", "invalid", f"must be 0 for a {line.tax_treatment} line"))
        if not line.is_gift:
            discountable += max(gross - off, _ZERO)
    for name in ("shipping_fee", "order_discount", "platform_discount", "stored_value_paid",
                 "paid_amount", "invoice_amount"):
        value = getattr(order, name)
        if value is not None and value < 0:
            add(Problem(name, "negative", "must not be negative"))
    if order.order_discount > discountable:
        add(Problem("order_discount", "discount_too_large",
                    f"{order.order_discount} is larger than the discountable goods ({discountable})"))
    if order.order_discount + order.platform_discount > discountable:
        add(Problem("platform_discount", "discount_too_large",
                    f"order discounts together ({order.order_discount + order.platform_discount}) "
                    f"are larger than the discountable goods ({discountable})"))
    ceiling = sum((ln.list_gross for ln in order.lines), _ZERO) + order.shipping_fee
    if ceiling > ORDER_LIMIT:
        add(Problem("lines", "too_large", f"the order comes to {ceiling}; an order may come to at most {ORDER_LIMIT}"))
    if order.extensions and len(json.dumps(order.extensions, ensure_ascii=False)) > EXTENSIONS_LIMIT:
        add(Problem("extensions", "too_large", f"more than {EXTENSIONS_LIMIT} characters of extras"))
    if order.stored_value_paid > ceiling:
        add(Problem("stored_value_paid", "too_large", f"{order.stored_value_paid} is larger than the order ({ceiling})"))
    refund_ids: set[str] = set()
    refunded_qty: dict[str, Decimal] = {}
    for index, refund in enumerate(order.refunds):
        here = f"refunds[{index}]"
        if refund.refund_id in refund_ids:
            add(Problem(f"{here}.refund_id", "duplicate", f"duplicate refund_id {refund.refund_id!r}"))
        refund_ids.add(refund.refund_id)
        if refund.amount < 0:
            add(Problem(f"{here}.amount", "negative", "must not be negative"))
        if refund.line_id is not None and refund.line_id not in lines_by_id:
            add(Problem(f"{here}.line_id", "unknown_line", f"names unknown line {refund.line_id!r}"))
            continue
        if refund.quantity is not None:
            if refund.line_id is None:
                add(Problem(f"{here}.quantity", "invalid", "a refunded quantity needs a line_id"))
                continue
            if refund.quantity <= 0:
                add(Problem(f"{here}.quantity", "invalid", "must be greater than zero"))
            if refund.status == "success":
                total = refunded_qty.get(refund.line_id, _ZERO) + refund.quantity
                refunded_qty[refund.line_id] = total
                if total > lines_by_id[refund.line_id].quantity:
                    add(Problem(f"{here}.quantity", "too_large",
                                f"refunds {total} of line {refund.line_id!r}, which has "
                                f"{lines_by_id[refund.line_id].quantity}"))
    request = order.invoice_request
    if request is not None:
        together = len(request.address or "") + len(request.phone or "")
        if together > ADDRESS_PHONE_LIMIT:
            add(Problem("invoice_request.address", "too_long",
                        f"address and phone together are {together} characters (limit {ADDRESS_PHONE_LIMIT})"))
        if request.tax_id:
            try:
                check_tax_id(request.tax_id, path="invoice_request.tax_id")
            except ValidationFailed as exc:
                problems.extend(exc.problems)
        if request.id_number and request.natural_person:
            try:
                check_tax_id(request.id_number, path="invoice_request.id_number")
            except ValidationFailed as exc:
                problems.extend(exc.problems)
    return problems


def _check_and_build(doc: Any) -> tuple[list[Problem], Order | None]:
    if not isinstance(doc, Mapping):
        return [Problem("", "invalid", "an order must be a JSON object")], None
    problems = structure_problems(doc)  # before anything walks it: too deep, bad text
    if problems:
        return problems, None
    if not _fast_order_ok(doc):
        problems = _schema_problems(order_validator(), ORDER_SCHEMA_PATH, doc)
        if problems:
            return problems, None
    order = build_order(doc)
    return semantic_problems(order), order


def validate_order(doc: Any) -> list[Problem]:
    """All problems of an order document (schema first; semantic checks once the shape is right)."""
    return _check_and_build(doc)[0]


def parse_order(doc: Any, *, validate: bool = True) -> Order:
    """An ``Order`` with Decimal fields, or ``ValidationFailed`` with every problem.

    ``validate=False`` is the fast path for documents that already passed validation (e.g.
    stored orders): the schema pass is skipped; a document that does not fit still yields
    ``ValidationFailed``, never a stack trace.
    """
    if validate:
        problems, order = _check_and_build(doc)
        if problems or order is None:
            raise ValidationFailed(problems)
        return order
    try:
        return build_order(doc)
    except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError):
        raise ValidationFailed(
            Problem("", "invalid", "the order does not match the contract; validate it first")
        ) from None


def validate_draft(draft: Any) -> list[Problem]:
    """Problems of an invoice draft against contracts/invoice-draft.schema.json."""
    if not isinstance(draft, Mapping):
        return [Problem("", "invalid", "a draft must be a JSON object")]
    return _schema_problems(draft_validator(), DRAFT_SCHEMA_PATH, draft)
