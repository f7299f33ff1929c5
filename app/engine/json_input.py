"""Reading JSON (and checking any parsed document) that comes from outside: a body, a form
field, a file, a rule set. What the standard library lets through and the rest of the system
cannot hold is refused here with a path: nesting deeper than any contract needs (deep enough
documents crash the parser or the recursion of whatever walks them), text that is not valid
Unicode (lone surrogates cannot be encoded, so they cannot be hashed or stored), NUL and other
control characters (PostgreSQL text refuses NUL; C libraries cut strings at it), and the
non-standard numbers NaN and Infinity."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from app.errors import Problem, ValidationFailed

MAX_DEPTH = 32  # the order contract needs 4; rule conditions a dozen
MAX_PROBLEMS = 20  # enough to act on; a hostile document could otherwise name millions
# Control characters but tab, line feed and carriage return; lone surrogates.
_BAD_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def _why(text: str) -> str:
    found = _BAD_TEXT.search(text)
    assert found is not None
    char = found.group()
    if "\ud800" <= char <= "\udfff":
        return f"is not valid Unicode (an unpaired surrogate \\u{ord(char):04x})"
    return f"contains the control character \\u{ord(char):04x}"


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _looks_fine(value: Any, max_depth: int) -> bool:
    """The common case, fast (one regex over every string and key at once): no problem at all."""
    strings: list[str] = []
    add = strings.append
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop, push = stack.pop, stack.append
    while stack:
        item, depth = pop()
        kind = type(item)
        if kind is str:
            add(item)
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict or kind is list:
            if depth >= max_depth:
                return False
            if kind is dict:
                strings.extend(item)  # keys (a non-str key makes join fail below: the slow path says)
                children = item.values()
            else:
                children = item
            for child in children:
                child_kind = type(child)
                if child_kind is str:
                    add(child)
                elif child_kind is dict or child_kind is list or child_kind is float:
                    push((child, depth + 1))
    try:
        return _BAD_TEXT.search("\t".join(strings)) is None
    except TypeError:
        return False


def structure_problems(value: Any, path: str = "", max_depth: int = MAX_DEPTH) -> list[Problem]:
    """Problems of a parsed document's shape: too deep, bad text, non-finite numbers (iterative:
    a deep document cannot exhaust the stack here)."""
    if _looks_fine(value, max_depth):
        return []
    problems: list[Problem] = []
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack and len(problems) < MAX_PROBLEMS:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if _BAD_TEXT.search(item):
                problems.append(Problem(where, "invalid_text", _why(item)))
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(Problem(where, "invalid_number", "must be a finite number"))
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                problems.append(Problem(where, "too_deep", f"nested deeper than {max_depth} levels"))
                continue
            entries = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in entries:
                if isinstance(key, str) and _BAD_TEXT.search(key):
                    problems.append(Problem(where, "invalid_text", f"a key {_why(key)}"))
                    continue
                stack.append((child, _join(where, key), depth + 1))
    problems.sort(key=lambda p: p.path)
    return problems


def load_json(data: str | bytes, what: str, *, max_depth: int = MAX_DEPTH, check: bool = True) -> Any:
    """The parsed JSON of ``data``, or ValidationFailed naming ``what`` (and the path inside).
    ``check=False`` leaves ``structure_problems`` to the caller (per document of a batch)."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationFailed(Problem(what, "not_utf8", f"not UTF-8 text (byte {exc.start})")) from None
    try:
        value = json.loads(data)
    except RecursionError:
        raise ValidationFailed(Problem(what, "too_deep", f"nested deeper than {max_depth} levels")) from None
    except json.JSONDecodeError as exc:
        raise ValidationFailed(Problem(what, "invalid_json",
                                       f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")) from None
    problems = structure_problems(value, "", max_depth) if check else []
    if problems:
        raise ValidationFailed([Problem(f"{what}{p.path}" if p.path.startswith("[") else _join(what, p.path)
                                        if p.path else what, p.code, p.message) for p in problems])
    return value
