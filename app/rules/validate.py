"""Validation of rule-set documents before they are saved, published or evaluated.

Structure, fact fields (walking the condition tree), action parameters and duplicate ids are
checked in Python; then the conditions are compiled by the real engine in a throwaway
registration, because only the engine knows which (Lua-like) patterns it accepts.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.errors import Problem
from app.rules.actions import ACTIONS, Action, check_action
from app.rules.durations import parse_duration
from app.rules.engine import GUARD, Condition, Evaluator, get_evaluator
from app.rules.facts import FACT_FIELDS, LINE_FIELDS, PLATFORMS, FieldSpec

DOC_KEYS = ("name", "description", "deadlines", "default", "rules")
RULE_KEYS = ("id", "description", "priority", "enabled", "when", "then")
DEFAULT_VERDICT = Action("skip", {"code": "no_rule", "reason": "no rule decided this order"})
_NAME = re.compile(r"^[\w.-]{1,100}$")  # no "$": durable-rules treats "...$state" names as statecharts
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_COMPARE = ("$lt", "$lte", "$gt", "$gte")
_EQUALITY = ("$eq", "$neq")
_MATCH = ("$mt", "$imt")
_EXISTS = ("$ex", "$nex")
_ITEMS = ("$iany", "$iall")
_MAX_EXACT = 2**53  # durable-rules numbers are doubles
PATTERN_HELP = (
    "Patterns are durable-rules' Lua-like dialect, not PCRE: the whole value must match; classes "
    "%d %a %s %w %l %u %p %x; escape specials as %. %+ %* %?; [..] sets, * + ? {n}, ( | )"
)
ALWAYS: Condition = {"all": [{"m": dict(GUARD)}]}  # `when` omitted: every order


Patterns = list[tuple[str, str, str, str]]  # (path, operator, field, pattern) of a rule's $mt / $imt


@dataclass(frozen=True)
class ParsedRule:
    id: str
    description: str
    priority: int
    index: int  # position in the document: breaks priority ties deterministically
    enabled: bool
    when: Condition
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class ParsedRuleSet:
    name: str
    description: str
    deadlines: dict[str, timedelta | None]
    default: Action
    rules: tuple[ParsedRule, ...]


def validate_ruleset(doc: Any, evaluator: Evaluator | None = None) -> list[Problem]:
    """Every problem of a rule-set document (empty list: it can be saved and published)."""
    return parse_ruleset(doc, evaluator)[1]


def parse_ruleset(doc: Any, evaluator: Evaluator | None = None) -> tuple[ParsedRuleSet | None, list[Problem]]:
    if not isinstance(doc, dict):
        return None, [Problem("", "bad_document", "a rule set is an object with name, description and rules")]
    problems: list[Problem] = []
    for key in doc:
        if key not in DOC_KEYS:
            problems.append(
                Problem(key, "unknown_key", f"unknown key {key!r}; allowed: {', '.join(DOC_KEYS)}")
            )
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(Problem("name", "bad_name", "name is required: up to 100 letters, digits, _ . -"))
    description = doc.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem("description", "bad_type", "description must be a string"))
    deadlines = _check_deadlines(doc.get("deadlines", {}), problems)
    default = DEFAULT_VERDICT
    if "default" in doc:
        action, found = check_action(doc["default"], "default")
        problems.extend(found)
        if action is not None and action.name not in ("issue", "skip", "hold"):
            problems.append(Problem("default.action", "bad_default", "default must be issue, skip or hold"))
        elif action is not None:
            default = action

    rules: list[ParsedRule] = []
    raw_rules = doc.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        problems.append(Problem("rules", "no_rules", "rules must be a non-empty list"))
        raw_rules = []
    seen: dict[str, int] = {}
    patterns: dict[int, Patterns] = {}
    for index, raw in enumerate(raw_rules):
        path = f"rules[{index}]"
        rule = _check_rule(raw, path, index, seen, problems, patterns.setdefault(index, []))
        if rule is not None:
            rules.append(rule)
    if problems:
        return None, problems

    problems.extend(_compile_check(rules, patterns, evaluator or get_evaluator()))
    if problems:
        return None, problems
    return ParsedRuleSet(str(name), description, deadlines, default, tuple(rules)), []


def _check_deadlines(raw: Any, problems: list[Problem]) -> dict[str, timedelta | None]:
    out: dict[str, timedelta | None] = {}
    if not isinstance(raw, dict):
        problems.append(
            Problem("deadlines", "bad_type", "deadlines maps a platform to hours (or null for none)")
        )
        return out
    for platform, value in raw.items():
        path = f"deadlines.{platform}"
        if platform not in PLATFORMS:
            problems.append(
                Problem(
                    path, "unknown_platform", f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}"
                )
            )
            continue
        if value is None:
            out[platform] = None
            continue
        try:
            out[platform] = parse_duration(value)
        except ValueError as exc:
            problems.append(Problem(path, "bad_duration", str(exc)))
    return out


def _check_rule(
    raw: Any, path: str, index: int, seen: dict[str, int], problems: list[Problem], patterns: Patterns
) -> ParsedRule | None:
    if not isinstance(raw, dict):
        problems.append(Problem(path, "bad_rule", "a rule is an object with id, priority, when and then"))
        return None
    before = len(problems)
    for key in raw:
        if key not in RULE_KEYS:
            problems.append(
                Problem(
                    f"{path}.{key}", "unknown_key", f"unknown key {key!r}; allowed: {', '.join(RULE_KEYS)}"
                )
            )
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _RULE_ID.match(rule_id):
        problems.append(
            Problem(
                f"{path}.id",
                "bad_id",
                "id is required: up to 64 letters, digits, _ . - (starting with a letter or digit)",
            )
        )
    elif rule_id in seen:
        problems.append(
            Problem(f"{path}.id", "duplicate_id", f"id {rule_id!r} is already used by rules[{seen[rule_id]}]")
        )
    else:
        seen[rule_id] = index
    description = raw.get("description", "")
    if not isinstance(description, str):
        problems.append(Problem(f"{path}.description", "bad_type", "description must be a string"))
    priority = raw.get("priority")
    if isinstance(priority, bool) or not isinstance(priority, int) or not -1_000_000 <= priority <= 1_000_000:
        problems.append(
            Problem(
                f"{path}.priority",
                "bad_priority",
                "priority is required: an integer (lower runs first and wins)",
            )
        )
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.append(Problem(f"{path}.enabled", "bad_type", "enabled must be true or false"))
    when = _check_when(raw.get("when"), f"{path}.when", problems, patterns)
    actions: list[Action] = []
    then = raw.get("then")
    if not isinstance(then, list) or not then:
        problems.append(Problem(f"{path}.then", "no_actions", "then must be a non-empty list of actions"))
    else:
        for j, item in enumerate(then):
            action, found = check_action(item, f"{path}.then[{j}]")
            problems.extend(found)
            if action is not None:
                actions.append(action)
    if len(problems) > before:
        return None
    assert isinstance(rule_id, str) and isinstance(priority, int)  # checked above: no problem was added
    return ParsedRule(rule_id, description, priority, index, enabled, when, tuple(actions))


def _check_when(raw: Any, path: str, problems: list[Problem], patterns: Patterns) -> Condition:
    if raw is None:
        return ALWAYS
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("m", "all", "any"):
        problems.append(
            Problem(
                path,
                "bad_condition",
                'when is {"m": EXPR}, {"all": [{"m": EXPR}]} or {"any": [{"m": EXPR}, ...]}',
            )
        )
        return ALWAYS
    ((kind, body),) = raw.items()
    terms: list[Any] | None
    if kind == "m":
        terms = [raw]
        kind = "all"
    else:
        terms = body if isinstance(body, list) else None
        if not terms:
            problems.append(
                Problem(f"{path}.{kind}", "bad_condition", f'{kind} takes a non-empty list of {{"m": EXPR}}')
            )
            return ALWAYS
        if kind == "all" and len(terms) > 1:
            # With several terms durable-rules joins several *different* facts: never true for one order.
            problems.append(
                Problem(
                    f"{path}.all",
                    "bad_condition",
                    'all takes exactly one {"m": EXPR}; combine tests with $and',
                )
            )
            return ALWAYS
    for i, term in enumerate(terms):
        tpath = path if raw.get("m") is not None else f"{path}.{kind}[{i}]"
        if not isinstance(term, dict) or list(term) != ["m"]:
            problems.append(Problem(tpath, "bad_condition", 'each term is {"m": EXPR}'))
            continue
        _check_expr(term["m"], f"{tpath}.m", problems, patterns, items=False)
    return {kind: [{"m": t["m"]} for t in terms if isinstance(t, dict)]}


def _check_expr(expr: Any, path: str, problems: list[Problem], patterns: Patterns, *, items: bool) -> None:
    if not isinstance(expr, dict) or len(expr) != 1:
        problems.append(
            Problem(
                path,
                "bad_condition",
                "a test is an object with exactly one key (combine tests with $and / $or)",
            )
        )
        return
    ((key, value),) = expr.items()
    if key in ("$and", "$or"):
        if not isinstance(value, list) or not value:
            problems.append(
                Problem(f"{path}.{key}", "bad_condition", f"{key} takes a non-empty list of tests")
            )
            return
        for i, sub in enumerate(value):
            _check_expr(sub, f"{path}.{key}[{i}]", problems, patterns, items=items)
        return
    if key.startswith("$i."):
        field, operand, op = key, value, "$eq"
        fpath = f"{path}.{field}"
        spec = _field_spec(field, fpath, items, problems)
        if spec is not None:
            _check_operand(op, spec, field, operand, fpath, problems)
        return
    if key in _ITEMS:
        if items:
            problems.append(
                Problem(f"{path}.{key}", "bad_condition", f"{key} cannot be nested inside $iany / $iall")
            )
            return
        if not isinstance(value, dict) or len(value) != 1:
            problems.append(Problem(f"{path}.{key}", "bad_condition", f'{key} is {{"lines": TEST}}'))
            return
        ((field, sub),) = value.items()
        spec = FACT_FIELDS.get(field)
        if spec is None or spec.type != "items":
            problems.append(
                Problem(f"{path}.{key}.{field}", "unknown_field", f"{key} works on lines only, not {field!r}")
            )
            return
        _check_expr(sub, f"{path}.{key}.{field}", problems, patterns, items=True)
        return
    if key in _COMPARE or key in _EQUALITY or key in _MATCH or key in _EXISTS:
        if not isinstance(value, dict) or len(value) != 1:
            problems.append(
                Problem(f"{path}.{key}", "bad_condition", f"{key} is {{FIELD: VALUE}} with one field")
            )
            return
        ((field, operand),) = value.items()
        op = key
    elif key.startswith("$"):
        known = ", ".join(("$and", "$or", *_COMPARE, *_EQUALITY, *_MATCH, *_EXISTS, *_ITEMS))
        problems.append(
            Problem(f"{path}.{key}", "unknown_operator", f"unknown operator {key!r}; known: {known}")
        )
        return
    else:
        field, operand, op = key, value, "$eq"
    fpath = f"{path}.{key}.{field}" if key != field else f"{path}.{field}"
    spec = _field_spec(field, fpath, items, problems)
    if spec is None:
        return
    _check_operand(op, spec, field, operand, fpath, problems)
    if op in _MATCH and isinstance(operand, str):
        patterns.append((fpath, op, field, operand))


def _field_spec(field: str, path: str, items: bool, problems: list[Problem]) -> FieldSpec | None:
    if items:
        name = field[3:] if field.startswith("$i.") else None
        if name is None:
            hint = f"; write it as $i.{field}" if field in LINE_FIELDS else ""
            problems.append(
                Problem(
                    path,
                    "unknown_field",
                    f"inside $iany / $iall a line field is written $i.NAME (durable-rules never matches a bare name){hint}",
                )
            )
            return None
        spec = LINE_FIELDS.get(name)
        if spec is None:
            problems.append(
                Problem(path, "unknown_field", f"unknown line field {name!r}{_suggest(name, LINE_FIELDS)}")
            )
        return spec
    if field.startswith("$i."):
        problems.append(
            Problem(path, "unknown_field", f"{field} is a line field: use it inside $iany / $iall over lines")
        )
        return None
    spec = FACT_FIELDS.get(field)
    if spec is None:
        problems.append(
            Problem(path, "unknown_field", f"unknown fact field {field!r}{_suggest(field, FACT_FIELDS)}")
        )
        return None
    if spec.type == "items":
        problems.append(Problem(path, "bad_condition", f"test {field} with $iany / $iall"))
        return None
    return spec


def _check_operand(
    op: str, spec: FieldSpec, field: str, operand: Any, path: str, problems: list[Problem]
) -> None:
    def bad(message: str) -> None:
        problems.append(Problem(path, "bad_value", message))

    if op in _EXISTS:
        if operand != 1 or isinstance(operand, bool):
            bad(f'{op} takes 1, as in {{"{op}": {{"{field}": 1}}}}')
        return
    if op in _MATCH:
        if spec.type not in ("str", "enum"):
            bad(f"{op} works on text fields; {field} is {spec.type}")
        elif not isinstance(operand, str) or not operand:
            bad(f"{op} takes a pattern string. {PATTERN_HELP}")
        elif "\\" in operand:
            # durable-rules accepts "\d" silently and it never means a digit there.
            problems.append(
                Problem(path, "bad_regex", f"backslash escapes are PCRE: write %d, %. etc. {PATTERN_HELP}")
            )
        return
    if op in _COMPARE and spec.type != "int":
        bad(f"{op} compares numbers; {field} is {spec.type}")
        return
    if spec.type == "int":
        if isinstance(operand, bool) or not isinstance(operand, int):
            unit = " (money is integer fen, rates basis points)" if isinstance(operand, float | str) else ""
            bad(f"{field} is compared with an integer{unit}; got {operand!r}")
        elif abs(operand) >= _MAX_EXACT:
            bad(f"{operand} is too large to compare exactly")
    elif spec.type == "bool":
        if not isinstance(operand, bool):
            bad(f"{field} is true or false; got {operand!r}")
    elif spec.type == "enum":
        if operand not in spec.values:
            bad(f"{field} is one of {', '.join(spec.values)}; got {operand!r}")
    elif not isinstance(operand, str):
        bad(f"{field} is text; got {operand!r}")


def _suggest(name: str, known: dict[str, FieldSpec]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(known)}"


def _compile_check(rules: list[ParsedRule], patterns: dict[int, Patterns], evaluator: Evaluator) -> list[Problem]:
    """Compile with the real engine; on failure narrow down to the rule, then to the pattern."""
    compiled = [(r.priority, r.when) for r in rules]
    if evaluator.compile_error(compiled) is None:
        return []
    problems: list[Problem] = []
    for rule in rules:
        error = evaluator.compile_error([(rule.priority, rule.when)])
        if error is None:
            continue
        found = False
        for fpath, op, field, pattern in patterns.get(rule.index, ()):
            item_field = field if not field.startswith("$i.") else None
            test = {op: {field: pattern}} if item_field else {"$iany": {"lines": {op: {field: pattern}}}}
            pattern_error = evaluator.compile_error([(0, {"all": [{"m": test}]})])
            if pattern_error is not None:
                found = True
                problems.append(
                    Problem(
                        fpath, "bad_regex", f"pattern {pattern!r} is refused: {pattern_error}. {PATTERN_HELP}"
                    )
                )
        if not found:
            problems.append(
                Problem(
                    f"rules[{rule.index}].when",
                    "engine_refused",
                    f"durable-rules refused this condition: {error}",
                )
            )
    return problems or [Problem("rules", "engine_refused", "durable-rules refused the rule set as a whole")]


__all__ = ["ACTIONS", "ParsedRule", "ParsedRuleSet", "parse_ruleset", "validate_ruleset"]
