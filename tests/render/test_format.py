from decimal import Decimal

import pytest

from app.render import format as fmt


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        ("2", {}, "2"),
        ("1.50000000", {}, "1.5"),
        ("87.61000000", {"min_places": 2}, "87.61"),
        ("100.00000000", {"min_places": 2}, "100.00"),
        ("0.33333333", {"min_places": 2}, "0.33333333"),
        ("652.83018868", {"min_places": 2}, "652.83018868"),
        ("3", {"negate": True}, "-3"),
        (None, {}, ""),
    ],
)
def test_trimmed_drops_trailing_zeros_only(value, kwargs, expected):
    assert fmt.trimmed(value, **kwargs) == expected


def test_money_and_yuan_print_two_decimals_with_sign_after_yuan():
    assert fmt.money("8.5") == "8.50"
    assert fmt.yuan("247.90") == "¥247.90"
    assert fmt.yuan("113.00", negate=True) == "¥-113.00"
    assert fmt.money(Decimal("-13.58")) == "-13.58"


def test_float_is_refused():
    with pytest.raises(TypeError):
        fmt.money(0.1)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ({"tax_rate": "0.13", "tax_treatment": "taxable"}, "13%"),
        ({"tax_rate": "0.09"}, "9%"),
        ({"tax_rate": "0.015"}, "1.5%"),
        ({"tax_rate": "0", "tax_treatment": "exempt"}, "免税"),
        ({"tax_rate": "0", "tax_treatment": "not_taxable"}, "不征税"),
        ({"tax_rate": "0", "tax_treatment": "zero_rated"}, "0%"),
    ],
)
def test_rate_column(line, expected):
    assert fmt.rate_text(line) == expected


def test_face_date_is_the_beijing_calendar_date():
    assert fmt.face_date("2026-11-11T00:01:02+08:00") == "2026年11月11日"
    # 20:00 UTC on the 10th is already the 11th in Beijing.
    assert fmt.face_date("2026-11-10T20:00:00+00:00") == "2026年11月11日"
    assert fmt.face_date("2026-02-28") == "2026年02月28日"
    assert fmt.face_date(None) == ""
    with pytest.raises(ValueError, match="issued_at"):
        fmt.face_date("11/11/2026")
