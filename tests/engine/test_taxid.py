from __future__ import annotations

import pytest

from app.engine.taxid import check_tax_id, normalise_tax_id, uscc_check_char, uscc_checksum_ok
from app.errors import ValidationFailed


def test_worked_example_check_character() -> None:
    # §2.1: S = 538, 538 mod 31 = 11, 31 − 11 = 20 → L
    assert uscc_check_char("91110000600037341") == "L"
    assert check_tax_id("91110000600037341L").checksum_ok is True


def test_normalisation() -> None:
    assert normalise_tax_id(" 9111 0000-600037341l") == "91110000600037341L"
    assert check_tax_id(" 9111 0000-600037341l").value == "91110000600037341L"


def test_real_code_failing_the_checksum_is_not_an_error() -> None:
    result = check_tax_id("91350203M0001QAY9B")
    assert result.form == "uscc"
    assert result.checksum_ok is False
    assert uscc_check_char("91350203M0001QAY9") == "9"


@pytest.mark.parametrize("code", ["Y1110000MA01ABCD10", "N2330100MA2BCDE126"])
def test_letters_in_positions_1_and_2(code: str) -> None:
    # python-stdnum refuses these as InvalidFormat; GB 32100 allows them
    assert uscc_checksum_ok(code)
    assert check_tax_id(code).checksum_ok is True


def test_resident_id_and_old_forms() -> None:
    assert check_tax_id("11010519491231002X").form == "resident_id"
    assert check_tax_id("110105600037341").form == "tin15"
    assert check_tax_id("11010519491231002X01").form == "tin20"
    assert check_tax_id("11010549123100201").form == "tin17"


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("9111000060003734", "15, 17, 18 or 20"),
        ("91110000600037341I", "I"),
        ("91110000600O37341L", "O"),
        ("91AB0000600037341L", "positions 3–8"),
        ("11010560003734S", "I, O, S, V, Z"),
    ],
)
def test_malformed_ids_are_errors(code: str, fragment: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        check_tax_id(code, path="invoice_request.tax_id")
    problem = info.value.problems[0]
    assert problem.path == "invoice_request.tax_id"
    assert problem.code == "malformed_tax_id"
    assert fragment in problem.message
