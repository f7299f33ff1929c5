from __future__ import annotations

from decimal import Decimal as D

import pytest

from app.engine.words import amount_in_words

# fapiao.md §9.3 (amount, PBOC style, 数电 style)
TABLE = [
    ("10005.00", "壹万零伍元整", "壹万零伍圆整"),
    ("100.10", "壹佰元壹角", "壹佰圆壹角整"),
    ("1680.32", "壹仟陆佰捌拾元叁角贰分", "壹仟陆佰捌拾圆叁角贰分"),
    ("16409.02", "壹万陆仟肆佰零玖元零贰分", "壹万陆仟肆佰零玖圆零贰分"),
    ("107000.53", "壹拾万零柒仟元伍角叁分", "壹拾万零柒仟圆伍角叁分"),
    ("600009865.92", "陆亿零玖仟捌佰陆拾伍元玖角贰分", "陆亿零玖仟捌佰陆拾伍圆玖角贰分"),
    ("100000001.00", "壹亿零壹元整", "壹亿零壹圆整"),
    ("0.07", "柒分", "柒分"),
    ("-113.00", "负壹佰壹拾叁元整", "负壹佰壹拾叁圆整"),
    ("247.90", "贰佰肆拾柒元玖角", "贰佰肆拾柒圆玖角整"),
]


@pytest.mark.parametrize(("amount", "pboc", "platform"), TABLE)
def test_section_9_3(amount: str, pboc: str, platform: str) -> None:
    assert amount_in_words(D(amount), style="pboc") == pboc
    assert amount_in_words(D(amount)) == platform


@pytest.mark.parametrize(
    ("amount", "words"),
    [  # §9.1 rule examples and the 数电 faces of §9.2
        ("1409.50", "壹仟肆佰零玖元伍角"),
        ("6007.14", "陆仟零柒元壹角肆分"),
        ("325.04", "叁佰贰拾伍元零肆分"),
        ("100000", "壹拾万元整"),
        ("110000", "壹拾壹万元整"),
        ("10", "壹拾元整"),
        ("0", "零元整"),
        ("0.50", "伍角"),
        ("1000000000000", "壹万亿元整"),
        ("1000000010000", "壹万亿零壹万元整"),
    ],
)
def test_pboc_rules(amount: str, words: str) -> None:
    assert amount_in_words(D(amount), style="pboc") == words


def test_platform_faces() -> None:
    assert amount_in_words(D("692.00")) == "陆佰玖拾贰圆整"
    assert amount_in_words(D("246.90")) == "贰佰肆拾陆圆玖角整"
    assert amount_in_words(D("85.86")) == "捌拾伍圆捌角陆分"


def test_refuses_sub_fen_amounts_and_unknown_styles() -> None:
    with pytest.raises(ValueError):
        amount_in_words(D("1.005"))
    with pytest.raises(ValueError):
        amount_in_words(D("1"), style="bank")
