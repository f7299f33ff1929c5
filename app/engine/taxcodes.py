"""税收分类编码 catalogue, merchant mappings and the resolution of a line's code and rate.

Resolution order for an order line (first that gives a code wins):
1. the line's own ``tax_code`` (its ``tax_rate`` wins over every other rate source);
2. ``options["tax_code_map"]`` entries, in list order (``sku`` / ``category`` / ``name_contains``);
3. the merchant's SKU mapping (``TaxMappings``, filled by the DB layer);
4. the merchant's category mapping.
Rate: the line's ``tax_rate``, else the mapping's rate, else the code's first (default) rate.
No code from any source → ``Unresolved`` (the order is held, the reason names the SKU).
A rate or treatment the code does not allow → ``ValidationFailed``.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import Problem, ValidationFailed

if TYPE_CHECKING:
    from app.engine.contract import OrderLine

TREATMENTS = ("taxable", "exempt", "not_taxable", "zero_rated")
TREATMENT_LABELS = {"exempt": "免税", "not_taxable": "不征税", "zero_rated": "零税率"}
DEFAULT_CATALOGUE_PATH = Path(__file__).with_name("data") / "tax_codes.csv"
_CODE_RE = re.compile(r"^[0-9]{19}$")
_RATE_RE = re.compile(r"^0(\.[0-9]{1,4})?$")


@dataclass(frozen=True, slots=True)
class TaxCode:
    code: str
    name: str
    short_name: str  # 简称, printed as *简称*
    rates: tuple[Decimal, ...]  # allowed rates; the first is the default
    treatments: tuple[str, ...] = ("taxable",)

    @property
    def default_rate(self) -> Decimal:
        return self.rates[0]

    def __str__(self) -> str:
        return f"{self.code} {self.short_name}"


class Catalogue:
    """The 税收分类编码 table in memory (the DB layer may build one from its rows)."""

    def __init__(self, codes: Iterable[TaxCode] = (), *, version: str | None = None):
        self.version = version
        self._codes: dict[str, TaxCode] = {}
        # (code, rate, treatment, invoice_name, source) → ResolvedTax: the same few pairs recur
        # on every order, and checking them is the costly part of resolution
        self.resolved_cache: dict[tuple[Any, ...], ResolvedTax] = {}
        for code in codes:
            self.add(code)

    def add(self, code: TaxCode) -> None:
        self._codes[code.code] = code
        self.resolved_cache.clear()

    def get(self, code: str) -> TaxCode | None:
        return self._codes.get(code)

    def __contains__(self, code: object) -> bool:
        return code in self._codes

    def __iter__(self) -> Iterator[TaxCode]:
        return iter(self._codes.values())

    def __len__(self) -> int:
        return len(self._codes)


def _split_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split("|") if part.strip()]


def catalogue_from_rows(rows: Iterable[Mapping[str, Any]], *, version: str | None = None) -> Catalogue:
    """Build a catalogue from dict rows (CSV/YAML); every bad row is reported, none skipped."""
    problems: list[Problem] = []
    codes: list[TaxCode] = []
    for index, row in enumerate(rows):
        path = f"rows[{index}]"
        code = str(row.get("code") or "").strip()
        if not _CODE_RE.match(code):
            problems.append(Problem(f"{path}.code", "invalid", "not a 19-digit 税收分类编码"))
            continue
        name = str(row.get("name") or "").strip()
        short_name = str(row.get("short_name") or "").strip() or name
        if not name:
            problems.append(Problem(f"{path}.name", "required", "required"))
        rates: list[Decimal] = []
        for text in _split_list(row.get("rates")):
            if not _RATE_RE.match(text):
                problems.append(Problem(f"{path}.rates", "invalid", f"{text!r} is not a tax rate like 0.13"))
                continue
            rates.append(Decimal(text))
        if not rates:
            problems.append(Problem(f"{path}.rates", "required", "at least one rate is required"))
        treatments = _split_list(row.get("treatments")) or ["taxable"]
        unknown = [t for t in treatments if t not in TREATMENTS]
        if unknown:
            problems.append(Problem(f"{path}.treatments", "invalid", f"unknown treatment(s): {', '.join(unknown)}"))
        if problems:
            continue
        codes.append(TaxCode(code, name, short_name, tuple(rates), tuple(treatments)))
    if problems:
        raise ValidationFailed(problems)
    return Catalogue(codes, version=version)


def load_catalogue(path: str | Path) -> Catalogue:
    """Load a catalogue from CSV (header: code,name,short_name,rates,treatments) or YAML (a list)."""
    path = Path(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        if isinstance(data, Mapping):
            data = data.get("codes", [])
        if not isinstance(data, list):
            raise ValidationFailed(Problem("", "invalid", "a YAML catalogue is a list of codes"))
        return catalogue_from_rows(data, version=path.stem)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return catalogue_from_rows(list(csv.DictReader(handle)), version=path.stem)


@functools.cache
def default_catalogue() -> Catalogue:
    """The shipped seed catalogue (fapiao.md §4.5); cached, treat it as read-only."""
    return load_catalogue(DEFAULT_CATALOGUE_PATH)


@dataclass(frozen=True, slots=True)
class TaxMapping:
    tax_code: str
    tax_rate: Decimal | None = None
    invoice_name: str | None = None  # printed instead of the item's own name


class TaxMappings:
    """A merchant's SKU → code and category → code mappings (filled by the DB layer)."""

    def __init__(
        self, sku: Mapping[str, TaxMapping] | None = None, category: Mapping[str, TaxMapping] | None = None
    ):
        self.sku: dict[str, TaxMapping] = dict(sku or {})
        self.category: dict[str, TaxMapping] = dict(category or {})

    def set_sku(self, sku: str, mapping: TaxMapping) -> None:
        self.sku[sku] = mapping

    def set_category(self, category: str, mapping: TaxMapping) -> None:
        self.category[category] = mapping


@dataclass(frozen=True, slots=True)
class ResolvedTax:
    code: TaxCode
    rate: Decimal
    treatment: str
    invoice_name: str | None = None
    source: str = "line"


@dataclass(frozen=True, slots=True)
class Unresolved:
    """No usable code: a person must map the SKU (or add the code to the catalogue)."""

    code: str  # reason code
    message: str


@dataclass(frozen=True, slots=True)
class MapEntry:
    kind: str  # sku | category | name_contains
    value: str
    mapping: TaxMapping


def parse_tax_code_map(entries: Any, path: str = "options.tax_code_map") -> tuple[MapEntry, ...]:
    """Validate ``options["tax_code_map"]``; unknown keys and bad codes/rates are named."""
    if not isinstance(entries, list):
        raise ValidationFailed(Problem(path, "invalid", "must be a list of mappings"))
    problems: list[Problem] = []
    parsed: list[MapEntry] = []
    allowed = {"sku", "category", "name_contains", "tax_code", "tax_rate", "invoice_name"}
    for index, entry in enumerate(entries):
        here = f"{path}[{index}]"
        if not isinstance(entry, Mapping):
            problems.append(Problem(here, "invalid", "must be an object"))
            continue
        problems.extend(Problem(f"{here}.{key}", "unknown_field", "unknown field") for key in entry if key not in allowed)
        matchers = [key for key in ("sku", "category", "name_contains") if key in entry]
        if len(matchers) != 1:
            problems.append(Problem(here, "invalid", "needs exactly one of sku, category, name_contains"))
            continue
        code = entry.get("tax_code")
        if not isinstance(code, str) or not _CODE_RE.match(code):
            problems.append(Problem(f"{here}.tax_code", "invalid", "not a 19-digit 税收分类编码"))
            continue
        rate = entry.get("tax_rate")
        if rate is not None and (not isinstance(rate, str) or not _RATE_RE.match(rate)):
            problems.append(Problem(f"{here}.tax_rate", "invalid", "not a tax rate like \"0.13\""))
            continue
        name = entry.get("invoice_name")
        mapping = TaxMapping(code, Decimal(rate) if rate is not None else None, str(name) if name else None)
        parsed.append(MapEntry(matchers[0], str(entry[matchers[0]]), mapping))
    if problems:
        raise ValidationFailed(problems)
    return tuple(parsed)


def check_code_rate(
    code: TaxCode, rate: Decimal, treatment: str | None, path: str
) -> tuple[Decimal, str]:
    """The rate and treatment the code allows, or ValidationFailed naming the line's field."""
    if treatment is None:
        if rate:
            treatment = "taxable"
        else:
            untaxed = [t for t in code.treatments if t != "taxable"]
            if len(untaxed) != 1:
                raise ValidationFailed(
                    Problem(
                        f"{path}.tax_treatment",
                        "treatment_required",
                        f"rate 0 on {code} needs a tax_treatment (exempt, not_taxable or zero_rated)",
                    )
                )
            treatment = untaxed[0]
    if treatment not in code.treatments:
        raise ValidationFailed(
            Problem(
                f"{path}.tax_treatment",
                "treatment_not_allowed",
                f"{treatment} is not allowed for {code} (allowed: {', '.join(code.treatments)})",
            )
        )
    if treatment == "taxable":
        if not rate:
            raise ValidationFailed(
                Problem(f"{path}.tax_rate", "rate_not_allowed", "a taxable line needs a rate above 0")
            )
    elif rate:
        raise ValidationFailed(Problem(f"{path}.tax_rate", "rate_not_allowed", f"must be 0 for a {treatment} line"))
    if rate not in code.rates:
        allowed = ", ".join(format(r, "f") for r in code.rates)
        raise ValidationFailed(
            Problem(
                f"{path}.tax_rate",
                "rate_not_allowed",
                f"rate {format(rate, 'f')} is not allowed for {code} (allowed: {allowed})",
            )
        )
    return rate, treatment


class TaxResolver:
    """Resolves each line's code/rate; one per compose call (results cached per line shape)."""

    def __init__(
        self,
        catalogue: Catalogue,
        mappings: TaxMappings | None = None,
        tax_code_map: Sequence[MapEntry] = (),
    ):
        self.catalogue = catalogue
        self.mappings = mappings
        self.tax_code_map = tax_code_map
        self._cache: dict[tuple[Any, ...], ResolvedTax | Unresolved] = {}

    def _mapping_for(self, line: OrderLine) -> tuple[TaxMapping, str] | None:
        for entry in self.tax_code_map:
            if entry.kind == "sku" and line.sku == entry.value:
                return entry.mapping, "options.sku"
            if entry.kind == "category" and line.category == entry.value:
                return entry.mapping, "options.category"
            if entry.kind == "name_contains" and entry.value in line.name:
                return entry.mapping, "options.name"
        if self.mappings is not None:
            if line.sku is not None and line.sku in self.mappings.sku:
                return self.mappings.sku[line.sku], "sku"
            if line.category is not None and line.category in self.mappings.category:
                return self.mappings.category[line.category], "category"
        return None

    def resolve(self, line: OrderLine, path: str) -> ResolvedTax | Unresolved:
        key = (line.tax_code, line.tax_rate, line.tax_treatment, line.sku, line.category, line.name)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._resolve(line, path)
            self._cache[key] = cached
        return cached

    def _resolve(self, line: OrderLine, path: str) -> ResolvedTax | Unresolved:
        invoice_name = None
        if line.tax_code is not None:
            code_text, rate, source = line.tax_code, line.tax_rate, "line"
        else:
            found = self._mapping_for(line)
            if found is None:
                what = f"SKU {line.sku}" if line.sku else f"line {line.line_id} ({line.name})"
                return Unresolved("tax_code_missing", f"{what} has no 税收分类编码 mapping")
            mapping, source = found
            code_text, invoice_name = mapping.tax_code, mapping.invoice_name
            rate = line.tax_rate if line.tax_rate is not None else mapping.tax_rate
        return self.resolve_code(code_text, rate, line.tax_treatment, path, invoice_name, source)

    def resolve_code(
        self,
        code_text: str,
        rate: Decimal | None,
        treatment: str | None,
        path: str,
        invoice_name: str | None = None,
        source: str = "line",
    ) -> ResolvedTax | Unresolved:
        key = (code_text, rate, treatment, invoice_name, source)
        cached = self.catalogue.resolved_cache.get(key)
        if cached is not None:
            return cached
        code = self.catalogue.get(code_text)
        if code is None:
            return Unresolved("tax_code_unknown", f"税收分类编码 {code_text} is not in the catalogue ({path})")
        if rate is None:
            # an untaxed treatment means rate 0 even when the code's default rate is taxable
            rate = Decimal(0) if treatment not in (None, "taxable") else code.default_rate
        rate, treatment = check_code_rate(code, rate, treatment, path)
        resolved = ResolvedTax(code, rate, treatment, invoice_name, source)
        self.catalogue.resolved_cache[key] = resolved
        return resolved
