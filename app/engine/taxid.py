"""Buyer/seller tax ids (§2): 统一社会信用代码 and the older 15/17/20-character forms.

Policy (§2.1 "validation policy"):
- normalise (strip spaces/hyphens, upper-case);
- a malformed id (wrong length, a character outside the alphabet, a non-digit region code)
  is an input error → ``ValidationFailed``;
- an 18-character code whose check character is wrong is *not* an error: real issued codes
  fail the checksum (``91350203M0001QAY9B``), so the engine holds the order for a person.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from stdnum.cn import ric, uscc
from stdnum.exceptions import InvalidChecksum, ValidationError

from app.errors import Problem, ValidationFailed

# GB 32100: 31 symbols, no I O S V Z; a symbol's value is its index
USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))
_USCC_RE = re.compile(r"^[0-9A-HJ-NP-RTUWXY]{2}[0-9]{6}[0-9A-HJ-NP-RTUWXY]{10}$")
# 15/17/20 forms (old 税务登记证号, 个体工商户 ID-based numbers): digits and letters except I O S V Z
_OLD_RE = re.compile(r"^[0-9A-HJ-NP-RTUWXY]+$")
_RESIDENT_RE = re.compile(r"^[0-9]{17}[0-9X]$")
_STRIP = str.maketrans("", "", " -\t\u3000")


@dataclass(frozen=True, slots=True)
class TaxIdCheck:
    value: str  # normalised
    form: str  # uscc | resident_id | tin15 | tin17 | tin20
    checksum_ok: bool | None  # None: the form has no check character we verify


def normalise_tax_id(value: str) -> str:
    return value.translate(_STRIP).upper()


def uscc_check_char(first17: str) -> str:
    """GB 32100 check character: alphabet[(31 − Σ value·3^(i−1) mod 31) mod 31]."""
    total = sum(USCC_ALPHABET.index(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_checksum_ok(code: str) -> bool:
    """python-stdnum when it can judge; our own check when positions 1–2 hold letters.

    stdnum requires the first 8 characters to be digits, but GB 32100 allows letters in
    positions 1–2 (e.g. ``Y1110000MA01ABCD10``), so a format refusal falls back to our check.
    """
    try:
        uscc.validate(code)
        return True
    except InvalidChecksum:
        return False
    except ValidationError:
        return uscc_check_char(code[:17]) == code[17]


@functools.lru_cache(maxsize=4096)  # the same seller/buyer ids recur on every order
def check_tax_id(value: str, *, path: str = "tax_id") -> TaxIdCheck:
    """Normalise and classify a tax id; raises ValidationFailed when it is malformed."""
    code = normalise_tax_id(value)
    length = len(code)
    if length == 18:
        if _RESIDENT_RE.match(code) and ric.is_valid(code):
            # 数电: a natural person's 身份证号 may stand in the buyer tax id field (§1.3)
            return TaxIdCheck(code, "resident_id", True)
        if not _USCC_RE.match(code):
            raise ValidationFailed(Problem(path, "malformed_tax_id", _uscc_format_message(code)))
        return TaxIdCheck(code, "uscc", uscc_checksum_ok(code))
    if length in (15, 17, 20):
        if not _OLD_RE.match(code):
            raise ValidationFailed(
                Problem(path, "malformed_tax_id", "纳税人识别号 may only hold digits and letters other than I, O, S, V, Z")
            )
        return TaxIdCheck(code, f"tin{length}", None)
    raise ValidationFailed(
        Problem(path, "malformed_tax_id", f"纳税人识别号 must have 15, 17, 18 or 20 characters, not {length}")
    )


def _uscc_format_message(code: str) -> str:
    bad = sorted({c for c in code if c not in USCC_ALPHABET})
    if bad:
        return f"统一社会信用代码 contains characters outside its alphabet: {' '.join(bad)}"
    return "统一社会信用代码 positions 3–8 must be digits (the region code)"
