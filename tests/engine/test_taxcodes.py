from __future__ import annotations

from decimal import Decimal as D
from pathlib import Path

import pytest

from app.engine.compose import compose_draft
from app.engine.contract import parse_order
from app.engine.taxcodes import (
    Catalogue,
    TaxCode,
    TaxMapping,
    TaxMappings,
    TaxResolver,
    Unresolved,
    default_catalogue,
    load_catalogue,
)
from app.errors import ValidationFailed

from .helpers import SELLER, line, order


def test_default_catalogue_is_seeded_and_cached() -> None:
    catalogue = default_catalogue()
    assert catalogue is default_catalogue()
    phone = catalogue.get("1090505000000000000")
    assert phone is not None and phone.short_name == "移动通信设备" and phone.default_rate == D("0.13")
    courier = catalogue.get("3040409030000000000")
    assert courier is not None and courier.short_name == "物流辅助服务"
    card = catalogue.get("6010000000000000000")
    assert card is not None and card.treatments == ("not_taxable",)
    assert len(catalogue) >= 20


def test_load_yaml_and_report_bad_rows(tmp_path: Path) -> None:
    good = tmp_path / "codes.yaml"
    good.write_text("- {code: '1234567890123456789', name: 测试, short_name: 测, rates: ['0.13', '0.03']}\n",
                    encoding="utf-8")
    catalogue = load_catalogue(good)
    assert catalogue.get("1234567890123456789").rates == (D("0.13"), D("0.03"))
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name,short_name,rates,treatments\n123,x,x,0.13,taxable\n"
                   "1234567890123456789,x,x,13%,free\n", encoding="utf-8")
    with pytest.raises(ValidationFailed) as info:
        load_catalogue(bad)
    assert {p.path for p in info.value.problems} == {"rows[0].code", "rows[1].rates", "rows[1].treatments"}


def resolver(**kw) -> TaxResolver:
    return TaxResolver(default_catalogue(), **kw)


def parsed_line(**fields):
    base = {"line_id": "1", "name": "苹果礼盒", "quantity": "1", "unit_price": "10.00"}
    base.update(fields)
    return parse_order(order([base])).lines[0]


def test_resolution_order() -> None:
    from app.engine.taxcodes import parse_tax_code_map

    mappings = TaxMappings(
        sku={"A": TaxMapping("1010115010100000000", invoice_name="红富士苹果")},
        category={"fruit": TaxMapping("1030201010000000000")},
    )
    options_map = parse_tax_code_map([{"name_contains": "礼盒", "tax_code": "1060502990000000000"}])
    plain = resolver(mappings=mappings)
    # own code wins over everything
    own = plain.resolve(parsed_line(sku="A", tax_code="1060201010000000000"), "lines[0]")
    assert own.code.code == "1060201010000000000" and own.rate == D("0.09")
    # options map before SKU mapping
    assert resolver(mappings=mappings, tax_code_map=options_map).resolve(
        parsed_line(sku="A"), "lines[0]").code.code == "1060502990000000000"
    # SKU mapping before category; mapping name is printed
    by_sku = plain.resolve(parsed_line(sku="A", category="fruit"), "lines[0]")
    assert by_sku.code.code == "1010115010100000000" and by_sku.invoice_name == "红富士苹果"
    assert plain.resolve(parsed_line(sku="B", category="fruit"), "lines[0]").code.code == "1030201010000000000"
    missing = plain.resolve(parsed_line(sku="B"), "lines[0]")
    assert isinstance(missing, Unresolved) and "SKU B" in missing.message


def test_rate_not_allowed_is_an_error_naming_the_line() -> None:
    with pytest.raises(ValidationFailed) as info:
        resolver().resolve(parsed_line(tax_code="1060502990000000000", tax_rate="0.06"), "lines[0]")
    problem = info.value.problems[0]
    assert problem.path == "lines[0].tax_rate" and problem.code == "rate_not_allowed"
    assert "0.13" in problem.message


def test_treatments() -> None:
    exempt = resolver().resolve(parsed_line(tax_code="1010115010100000000", tax_treatment="exempt"), "lines[0]")
    assert exempt.rate == 0 and exempt.treatment == "exempt"
    card = resolver().resolve(parsed_line(tax_code="6010000000000000000"), "lines[0]")
    assert card.treatment == "not_taxable" and card.rate == 0
    with pytest.raises(ValidationFailed):
        resolver().resolve(parsed_line(tax_code="1090505000000000000", tax_treatment="exempt"), "lines[0]")


def test_unknown_code_holds() -> None:
    result = resolver().resolve(parsed_line(tax_code="1999999999999999999", tax_rate="0.13"), "lines[0]")
    assert isinstance(result, Unresolved) and result.code == "tax_code_unknown"


def test_unmapped_sku_holds_the_order_with_the_sku_named() -> None:
    doc = order([line("1", "10.00"), {"line_id": "2", "sku": "MUG-9", "name": "杯子", "quantity": "1",
                                      "unit_price": "5.00"}])
    draft = compose_draft(doc, SELLER)
    assert draft["decision"]["action"] == "hold"
    assert any("MUG-9" in r["message"] for r in draft["decision"]["reasons"])
    assert draft["invoices"] == []


def test_mappings_and_custom_catalogue_in_compose() -> None:
    catalogue = Catalogue([TaxCode("1234567890123456789", "测试品", "测试", (D("0.13"),))])
    mappings = TaxMappings(sku={"X": TaxMapping("1234567890123456789")})
    doc = order([{"line_id": "1", "sku": "X", "name": "东西", "quantity": "1", "unit_price": "11.30"}])
    draft = compose_draft(doc, SELLER, catalogue=catalogue, mappings=mappings)
    first = draft["invoices"][0]["lines"][0]
    assert first["display_name"] == "*测试*东西"
    assert (first["amount"], first["tax"]) == ("10.00", "1.30")
