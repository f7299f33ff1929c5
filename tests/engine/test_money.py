from __future__ import annotations

import re
from decimal import Decimal as D
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.money import (
    allocate,
    fmt_money,
    fmt_rate,
    q2,
    separate,
    separate_exact,
    to_decimal,
    unit_price,
)

ENGINE = Path(__file__).resolve().parents[2] / "app" / "engine"


@pytest.mark.parametrize(
    ("gross", "rate", "amount", "tax"),
    [  # fapiao.md §5.3 worked examples
        ("99.00", "0.13", "87.61", "11.39"),
        ("10.00", "0.13", "8.85", "1.15"),
        ("59.90", "0.09", "54.95", "4.95"),
        ("1.00", "0.06", "0.94", "0.06"),
        ("0.01", "0.13", "0.01", "0.00"),
        ("198.00", "0.13", "175.22", "22.78"),
        ("-15.35", "0.13", "-13.58", "-1.77"),  # §6.2 discount line
        ("-4.65", "0.09", "-4.27", "-0.38"),
        ("100.00", "0", "100.00", "0.00"),
    ],
)
def test_separate_worked_examples(gross: str, rate: str, amount: str, tax: str) -> None:
    got = separate(D(gross), D(rate))
    assert tuple(map(str, got)) == (amount, tax)


def test_unit_price_examples() -> None:
    assert str(unit_price(D("175.22"), D("2"))) == "87.61000000"
    assert str(unit_price(D("88.50"), D("3"))) == "29.50000000"
    price = unit_price(D("88.50"), D("7"))
    assert str(price) == "12.64285714"
    assert abs(D(7) * price - D("88.50")) <= D("0.01")
    assert str(unit_price(D("0.01"), D("3"))) == "0.00333333"
    assert str(unit_price(D("0.02"), D("3"))) == "0.00666667"  # half up


@given(
    st.integers(min_value=-10**15 + 1, max_value=10**15 - 1),
    st.sampled_from(["0.13", "0.09", "0.06", "0.05", "0.03", "0.01", "0", "0.015"]),
)
@settings(max_examples=500, deadline=None)
def test_separate_matches_integer_reference(fen: int, rate: str) -> None:
    gross = D(fen).scaleb(-2)
    amount, tax = separate(gross, D(rate))
    assert (amount, tax) == separate_exact(gross, D(rate))
    assert amount + tax == gross
    assert abs(amount * D(rate) - tax) <= D("0.0057")  # §5.1 bound, far inside 0.06


def test_separate_refuses_sub_fen() -> None:
    with pytest.raises(ValueError):
        separate(D("1.005"), D("0.13"))


def test_allocate_worked_example() -> None:
    # §6.3: 20.00 over 198.00 : 59.90 → 15.35 / 4.65
    assert allocate(D("20.00"), [D("198.00"), D("59.90")]) == [D("15.35"), D("4.65")]


def test_allocate_ties_go_to_the_first_and_negative_totals() -> None:
    assert allocate(D("0.02"), [D(1), D(1), D(1)]) == [D("0.01"), D("0.01"), D("0.00")]
    assert allocate(D("-0.02"), [D(1), D(1), D(1)]) == [D("-0.01"), D("-0.01"), D("0.00")]
    assert allocate(D("0.00"), [D(0), D(0)]) == [D("0.00"), D("0.00")]
    with pytest.raises(ValueError):
        allocate(D("1.00"), [D(0)])


@given(
    st.integers(min_value=0, max_value=10**12),
    st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=40),
    st.integers(min_value=0, max_value=8),
)
@settings(max_examples=300, deadline=None)
def test_allocate_sums_exactly_and_each_share_is_within_a_fen(total_fen: int, weights: list[int], places: int) -> None:
    if not any(weights):
        weights[0] = 1
    total = D(total_fen).scaleb(-2)
    ws = [D(w).scaleb(-places) for w in weights]
    shares = allocate(total, ws)
    assert sum(shares) == total
    weight_sum = sum(ws)
    for share, weight in zip(shares, ws, strict=True):
        quota = total * weight / weight_sum
        assert abs(share - quota) < D("0.01")


def test_formatting() -> None:
    assert fmt_money(D("-0.001")) == "0.00"  # never a negative zero
    assert fmt_money(D("10")) == "10.00"
    assert q2(D("2.675")) == D("2.68")  # half up, not banker's
    assert fmt_rate(D("0.130")) == "0.13"
    assert fmt_rate(D("0.00")) == "0"


def test_to_decimal_refuses_floats() -> None:
    with pytest.raises(TypeError):
        to_decimal(0.1)
    assert to_decimal("0.10") == D("0.10")


def test_no_float_in_engine() -> None:
    """Money never passes through binary floating point: no float( anywhere in app/engine."""
    offenders = [
        f"{path.name}:{number}"
        for path in ENGINE.rglob("*.py")
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if re.search(r"\bfloat\(", text)
    ]
    assert offenders == []
