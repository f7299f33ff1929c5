"""大写金额: the amount in Chinese capital numerals (§9), by a plain digit walk.

PBOC rules (《正确填写票据和结算凭证的基本规定》) in the "写零" style of §9.3:
one 零 for every run of zeros followed by a non-zero digit (also across 万/亿 groups),
10–19 written 壹拾…, 整 after 元, 零 before 分 when 角 is 0, no 零 between 元 and 角.
The 数电 platform prints 圆 instead of 元 and appends 整 after 角 too (`style="platform"`,
the default); `style="pboc"` gives the bank-slip form with 元. Negatives (red-letter) get 负.
"""

from __future__ import annotations

from decimal import Decimal

from app.engine.money import to_fen

DIGITS = "零壹贰叁肆伍陆柒捌玖"
_IN_GROUP = ("", "拾", "佰", "仟")
_GROUP = ("", "万", "亿", "万")  # group 3 is 万亿 (10^12): its 亿 comes from group 2's slot
_MAX_FEN = 10**17  # 15 integer digits: beyond what the contracts allow (13)


def _integer_words(value: int) -> str:
    digits = str(value)
    length = len(digits)
    out: list[str] = []
    pending_zero = False
    group_has_digit = False
    higher_groups_nonzero = False
    for index, char in enumerate(digits):
        position = length - 1 - index  # 0 = 个位
        digit = ord(char) - 48
        if digit == 0:
            if out:
                pending_zero = True
        else:
            if pending_zero:
                out.append("零")
                pending_zero = False
            out.append(DIGITS[digit])
            out.append(_IN_GROUP[position % 4])
            group_has_digit = True
        if position % 4 == 0 and position:
            group = position // 4
            # 亿 must appear when a higher group (万亿) was written even if this group is zero
            if group_has_digit or (group == 2 and higher_groups_nonzero):
                out.append(_GROUP[group])
            higher_groups_nonzero = higher_groups_nonzero or group_has_digit
            group_has_digit = False
    return "".join(out)


def amount_in_words(amount: Decimal, *, style: str = "platform") -> str:
    """价税合计（大写）. ``amount`` must have at most 2 decimals (money is never rounded here).

    >>> amount_in_words(Decimal("247.90"))
    '贰佰肆拾柒圆玖角整'
    >>> amount_in_words(Decimal("247.90"), style="pboc")
    '贰佰肆拾柒元玖角'
    """
    if style not in ("platform", "pboc"):
        raise ValueError(f"unknown style {style!r}")
    total_fen = to_fen(amount)
    if abs(total_fen) >= _MAX_FEN:
        raise ValueError(f"{amount} is too large to write in words")
    sign = "负" if total_fen < 0 else ""
    yuan, cents = divmod(abs(total_fen), 100)
    jiao, fen_digit = divmod(cents, 10)
    unit = "圆" if style == "platform" else "元"
    if yuan == 0 and cents == 0:
        return f"零{unit}整"
    parts: list[str] = [sign]
    if yuan:
        parts.append(_integer_words(yuan))
        parts.append(unit)
    if cents == 0:
        parts.append("整")
        return "".join(parts)
    if jiao:
        parts.append(DIGITS[jiao] + "角")
    elif yuan:
        parts.append("零")  # rule 4.4: 角 is 0, 分 is not → 零 after 元
    if fen_digit:
        parts.append(DIGITS[fen_digit] + "分")
    elif style == "platform":
        parts.append("整")  # the 数电 face writes 整 after 角
    return "".join(parts)
