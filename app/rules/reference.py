"""The rule language described from its own definitions (app.rules.facts, app.rules.actions):
the editor's field and action reference cannot drift from what the validator accepts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.rules.actions import ACTIONS, REMARK_PLACEHOLDERS, TAX_RATES
from app.rules.facts import FACT_FIELDS, LINE_FIELDS, FieldSpec


@dataclass(frozen=True)
class FieldRef:
    name: str
    type: str
    values: tuple[str, ...]
    doc: str


@dataclass(frozen=True)
class ParamRef:
    name: str
    required: bool
    accepts: str


@dataclass(frozen=True)
class ActionRef:
    name: str
    params: tuple[ParamRef, ...]


def rates_text() -> str:
    return ", ".join(f'"{r}"' for r in TAX_RATES)


# Checks that are plain functions in app.rules.actions (the closures describe themselves).
_NAMED_CHECKS: dict[str, Callable[[], str]] = {
    "_duration": lambda: 'duration: hours (72), "72h", "7d", "P7D", "PT12H"',
    "_rate": lambda: f"rate as a decimal string: {rates_text()}",
    "_true": lambda: "true",
    "_template": lambda: "text; placeholders " + ", ".join(f"{{{p}}}" for p in REMARK_PLACEHOLDERS),
    "_match": lambda: 'one of {"sku": ...}, {"category": ...}, {"name_contains": ...}',
}


def describe_check(check: Callable[[Any], Any]) -> str | None:
    """What a parameter check of app.rules.actions.ACTIONS accepts, read from the check itself
    (its closure values), so the reference cannot drift from what the validator accepts.
    None for a kind of check this function does not know (a test keeps that list empty)."""
    code = getattr(check, "__code__", None)
    cells = {}
    if code is not None and check.__closure__:
        cells = dict(zip(code.co_freevars, (c.cell_contents for c in check.__closure__), strict=True))
    if "values" in cells:
        return "one of: " + " / ".join(cells["values"])
    if "what" in cells:
        return str(cells["what"])
    if "max_len" in cells:
        return f"text, at most {cells['max_len']} characters"
    named = _NAMED_CHECKS.get(getattr(check, "__name__", ""))
    return named() if named else None


def field_reference() -> tuple[list[FieldRef], list[FieldRef]]:
    """The order fact's fields and the line fields, from app.rules.facts."""

    def refs(specs: dict[str, FieldSpec]) -> list[FieldRef]:
        return [FieldRef(name, spec.type, tuple(spec.values), spec.doc) for name, spec in specs.items()]

    return refs(FACT_FIELDS), refs(LINE_FIELDS)


def action_reference() -> list[ActionRef]:
    """Every action and its parameters, from app.rules.actions.ACTIONS."""
    out = []
    for name, spec in ACTIONS.items():
        params = tuple(
            ParamRef(param, required, describe_check(check) or str(getattr(check, "__name__", "?")))
            for param, (required, check) in spec.items()
        )
        out.append(ActionRef(name, params))
    return out
