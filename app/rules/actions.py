"""The fixed action vocabulary of rule documents and the validation of their parameters.

An action is ``{"action": NAME, **params}``. Parameters are checked here once, at save / compile
time, and normalised (durations become ``timedelta``) so evaluation never re-validates.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from app.errors import Problem
from app.rules.durations import parse_duration

VERDICTS = ("skip", "hold", "wait", "issue")  # strongest first: the conflict order of verdicts
WAIT_EVENTS = ("received", "shipped", "paid")
TITLE_FIELDS = ("tax_id", "email", "mobile", "address", "phone", "bank", "account", "id_number")
REMARK_PLACEHOLDERS = ("order_id", "shop_id", "shop_name", "platform", "buyer_nick")
# VAT rates and 征收率 a seller may print (fapiao.md §4.3); written as decimal strings like the contracts.
TAX_RATES = tuple(Decimal(r) for r in ("0", "0.01", "0.03", "0.05", "0.06", "0.09", "0.13"))
_CODE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
_ENTITY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TAX_CODE = re.compile(r"^[0-9]{19}$")
_RATE = re.compile(r"^0(\.[0-9]{1,4})?$")


@dataclass(frozen=True)
class Action:
    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


Check = Callable[[Any], Any]  # returns the normalised value or raises ValueError(message)


def _text(max_len: int) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or not v.strip():
            raise ValueError("must be a non-empty string")
        if len(v) > max_len:
            raise ValueError(f"must be at most {max_len} characters")
        return v

    return check


def _enum(*values: str) -> Check:
    def check(v: Any) -> str:
        if v not in values:
            raise ValueError(f"must be one of {', '.join(values)}; got {v!r}")
        return str(v)

    return check


def _pattern(regex: re.Pattern[str], what: str) -> Check:
    def check(v: Any) -> str:
        if not isinstance(v, str) or not regex.match(v):
            raise ValueError(f"must be {what}; got {v!r}")
        return v

    return check


def _duration(v: Any) -> timedelta:
    return parse_duration(v)


def _rate(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f'write rates as decimal strings like "0.13" (no JSON numbers); got {v!r}')
    if not _RATE.match(v):
        raise ValueError(f'must be a decimal string like "0.13"; got {v!r}')
    try:
        if Decimal(v) not in TAX_RATES:
            raise ValueError(f"{v} is not a VAT rate or 征收率 (0, 0.01, 0.03, 0.05, 0.06, 0.09, 0.13)")
    except InvalidOperation as exc:  # pragma: no cover - the regex already excludes it
        raise ValueError(f"not a decimal: {v!r}") from exc
    return v


def _true(v: Any) -> bool:
    if v is not True:
        raise ValueError("must be true when given")
    return True


def _template(v: Any) -> str:
    text = _text(200)(v)
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ValueError(f"bad template: {exc}") from exc
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in REMARK_PLACEHOLDERS or spec or conversion:
            raise ValueError(
                f"unknown placeholder {{{name}}}; known: "
                + ", ".join(f"{{{p}}}" for p in REMARK_PLACEHOLDERS)
            )
    return str(text)


def _match(v: Any) -> dict[str, str]:
    keys = ("sku", "category", "name_contains")
    if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in keys:
        raise ValueError('must be an object with exactly one of "sku", "category", "name_contains"')
    key, value = next(iter(v.items()))
    return {key: _text(200)(value)}


_CODE_CHECK = _pattern(_CODE, "a lower-case code like tax_id_missing")
TAX_CODE = _pattern(_TAX_CODE, "a 19-digit 税收分类编码 string")

# name -> {param: (required, check)}
ACTIONS: dict[str, dict[str, tuple[bool, Check]]] = {
    "issue": {"reason": (False, _text(200)), "code": (False, _CODE_CHECK)},
    "skip": {"reason": (True, _text(200)), "code": (False, _CODE_CHECK)},
    "hold": {"reason": (True, _text(200)), "code": (False, _CODE_CHECK)},
    "wait": {"reason": (True, _text(200)), "code": (False, _CODE_CHECK)},
    "wait_for": {
        "event": (True, _enum(*WAIT_EVENTS)),
        "delay": (False, _duration),
        "deadline_margin": (False, _duration),
    },
    "set_kind": {"kind": (True, _enum("normal", "special"))},
    "set_gift_mode": {"mode": (True, _enum("discount_line", "allocate", "omit"))},
    "set_discount_mode": {"mode": (True, _enum("discount_line", "net_price"))},
    "set_platform_discount": {"mode": (True, _enum("include", "exclude"))},
    "set_shipping": {
        "code": (False, TAX_CODE),
        "rate": (False, _rate),
        "name": (False, _text(100)),
        "same_as_goods": (False, _true),
    },
    "add_remark": {"template": (True, _template), "mode": (False, _enum("append", "replace"))},
    "map_tax_code": {"match": (True, _match), "code": (True, TAX_CODE), "rate": (True, _rate)},
    "require": {"field": (True, _enum(*TITLE_FIELDS))},
    "route_seller": {"entity": (True, _pattern(_ENTITY, "a seller code (letters, digits, _ . -)"))},
}


def check_action(raw: Any, path: str) -> tuple[Action | None, list[Problem]]:
    """Validate one ``then`` entry; returns the normalised action or the problems found."""
    if not isinstance(raw, dict):
        return None, [Problem(path, "bad_action", 'an action is an object like {"action": "issue"}')]
    name = raw.get("action")
    if name not in ACTIONS:
        known = ", ".join(ACTIONS)
        return None, [Problem(f"{path}.action", "unknown_action", f"unknown action {name!r}; known: {known}")]
    spec = ACTIONS[name]
    problems: list[Problem] = []
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "action":
            continue
        if key not in spec:
            allowed = ", ".join(spec) or "none"
            problems.append(
                Problem(
                    f"{path}.{key}", "unknown_param", f"{name} has no parameter {key!r} (allowed: {allowed})"
                )
            )
            continue
        try:
            params[key] = spec[key][1](value)
        except ValueError as exc:
            problems.append(Problem(f"{path}.{key}", "bad_param", f"{name}.{key} {exc}"))
    for key, (required, _check) in spec.items():
        if required and key not in raw:
            problems.append(Problem(f"{path}.{key}", "missing_param", f"{name} needs {key!r}"))
    if name == "set_shipping" and not problems:
        explicit = "code" in params or "rate" in params or "name" in params
        if params.get("same_as_goods") and explicit:
            problems.append(
                Problem(path, "bad_param", "set_shipping takes either same_as_goods or code + rate, not both")
            )
        elif not params.get("same_as_goods") and not ("code" in params and "rate" in params):
            problems.append(
                Problem(path, "missing_param", "set_shipping needs code and rate (or same_as_goods: true)")
            )
    if problems:
        return None, problems
    return Action(name, params), []
