"""Rule-set documents as people write them: reading the editor's text (JSON or YAML, safely),
writing it back, and what changed between two versions."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import yaml

from app.engine.json_input import MAX_DEPTH, load_json, structure_problems
from app.errors import Problem, ValidationFailed

MAX_DOCUMENT_CHARS = 256 * 1024  # the shipped rule set is 5 KB; a screenful of rules is a few


class _SafeLoader(yaml.SafeLoader):
    """YAML without aliases: ``*name`` re-uses a node, and a few nested ones expand to billions
    of nodes ("billion laughs"). A rule set never needs them: refused where they appear."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed; write the value out",
                                              event.start_mark)
        return super().compose_node(parent, index)


def parse_document(text: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """A rule-set document from the editor: JSON when it starts with ``{``, else YAML.

    YAML turns some unquoted values into dates or non-string keys that JSON cannot store;
    those are refused with their path instead of failing when the version is written."""
    text = (text or "").strip()
    if not text:
        return None, [Problem("document", "empty", "the document is empty")]
    if len(text) > MAX_DOCUMENT_CHARS:
        return None, [Problem("document", "too_large",
                              f"{len(text)} characters; a rule set may have at most {MAX_DOCUMENT_CHARS}")]
    if text.startswith("{"):
        try:
            doc = load_json(text, "document")
        except ValidationFailed as exc:
            return None, exc.problems
    else:
        try:
            doc = yaml.load(text, Loader=_SafeLoader)
        except RecursionError:
            return None, [Problem("document", "too_deep", f"nested deeper than {MAX_DEPTH} levels")]
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
            what = getattr(exc, "problem", None) or str(exc)
            return None, [Problem("document", "bad_yaml", f"{where}{what}")]
    if not isinstance(doc, dict):
        return None, [Problem("document", "not_object", "a rule set is one object (name, rules, ...)")]
    problems = structure_problems(doc) or list(_not_json(doc, ""))
    return (None, problems) if problems else (doc, [])


def _not_json(value: Any, path: str) -> Iterable[Problem]:
    if isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                yield Problem(sub, "bad_key", f"keys must be text; YAML read {key!r} as {type(key).__name__}: quote it")
            yield from _not_json(item, sub)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _not_json(item, f"{path}[{i}]")
    elif isinstance(value, date | datetime):
        yield Problem(path, "not_json", f"YAML read {value} as a date: quote it")
    elif isinstance(value, float) and not math.isfinite(value):
        yield Problem(path, "not_json", "not a finite number")
    elif value is not None and not isinstance(value, str | int | float | bool):
        yield Problem(path, "not_json", f"{type(value).__name__} cannot be stored as JSON")


def as_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=110)


def as_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, ensure_ascii=False, indent=2)


def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """What changed from document ``a`` to ``b``: rules (by id) added, removed and changed (with
    the keys that differ), and changed top-level settings (name, description, deadlines, default)."""
    rules_a = {r.get("id"): r for r in a.get("rules") or () if isinstance(r, dict)}
    rules_b = {r.get("id"): r for r in b.get("rules") or () if isinstance(r, dict)}
    changed = []
    for rule_id in rules_a.keys() & rules_b.keys():
        before, after = rules_a[rule_id], rules_b[rule_id]
        keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        if keys:
            changed.append(
                {
                    "id": rule_id,
                    "fields": keys,
                    "before": {k: before.get(k) for k in keys},
                    "after": {k: after.get(k) for k in keys},
                }
            )
    order_b = list(rules_b)
    return {
        "added": [rid for rid in order_b if rid not in rules_a],
        "removed": [rid for rid in rules_a if rid not in rules_b],
        "changed": sorted(changed, key=lambda c: order_b.index(c["id"])),
        "settings": sorted(k for k in (a.keys() | b.keys()) - {"rules"} if a.get(k) != b.get(k)),
    }


@dataclass
class DiffLine:
    kind: str  # "add" | "del" | "ctx" | "hunk"
    text: str


def text_diff(a: dict[str, Any], b: dict[str, Any], a_label: str, b_label: str, context: int = 3) -> list[DiffLine]:
    """A unified diff of the two documents' pretty JSON (sorted keys: only real changes show)."""
    def pretty(doc: dict[str, Any]) -> list[str]:
        return json.dumps(doc, ensure_ascii=False, indent=2, sort_keys=True).splitlines()

    out = []
    for line in difflib.unified_diff(pretty(a), pretty(b), a_label, b_label, n=context, lineterm=""):
        if line.startswith(("---", "+++")):
            continue
        kind = "hunk" if line.startswith("@@") else "add" if line[:1] == "+" else "del" if line[:1] == "-" else "ctx"
        out.append(DiffLine(kind, line))
    return out
