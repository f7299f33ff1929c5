"""Compiling rule-set documents, finding the shipped ones, and deciding orders."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import InvalidOperation
from pathlib import Path
from typing import Any

from app.engine.contract import Order, build_order
from app.errors import Problem, ValidationFailed
from app.rules.decision import Decision, build_decision
from app.rules.document import parse_document
from app.rules.engine import get_evaluator
from app.rules.facts import build_fact, deadline_at, order_times
from app.rules.validate import ParsedRule, ParsedRuleSet, parse_ruleset

DEFAULT_FILE = "default.yaml"


@dataclass(frozen=True)
class RuleSet:
    """A validated rule set registered with the engine, ready to decide orders."""

    parsed: ParsedRuleSet
    document_hash: str
    label: str  # reported as Decision.rules_version, e.g. "default@v3" or "default@1a2b3c4d5e6f"
    engine_name: str  # the engine registration: one per distinct document, never replaced
    enabled: tuple[ParsedRule, ...]  # registration order: the engine reports indexes into it

    @property
    def name(self) -> str:
        return self.parsed.name


def document_hash(doc: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a rule-set document (key order and spacing do not matter)."""
    canonical = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


_compiled: dict[tuple[str, str | None], RuleSet] = {}
_compile_lock = threading.Lock()


def compile_ruleset(doc: dict[str, Any], *, label: str | None = None) -> RuleSet:
    """Validate ``doc`` and register it with the engine (once per distinct document).

    Raises ValidationFailed with every problem when the document is invalid. Registrations are
    kept for the life of the process (durable-rules cannot drop them): recycle workers now and then.
    """
    digest = document_hash(doc)
    key = (digest, label)
    found = _compiled.get(key)
    if found is not None:
        return found
    evaluator = get_evaluator()
    with _compile_lock:
        found = _compiled.get(key)
        if found is not None:
            return found
        parsed, problems = parse_ruleset(doc, evaluator)
        if parsed is None:
            raise ValidationFailed(problems)
        enabled = tuple(r for r in parsed.rules if r.enabled)
        engine_name = f"{parsed.name}@{digest}"
        evaluator.register(engine_name, [(r.priority, r.when) for r in enabled])
        ruleset = RuleSet(parsed, digest, label or f"{parsed.name}@{digest[:12]}", engine_name, enabled)
        _compiled[key] = ruleset
        return ruleset


def rules_dir() -> Path:
    """The shipped rule sets: $KAIPIAO_RULES_DIR, else the repository's rules/ folder."""
    env = os.environ.get("KAIPIAO_RULES_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "rules"


def load_ruleset_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a rule-set document from JSON or YAML as the editor reads it (not validated: see
    validate_ruleset)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise ValidationFailed(Problem(str(p), "bad_file", f"cannot read rule set: {exc}")) from exc
    doc, problems = parse_document(text)
    if doc is None:
        raise ValidationFailed([Problem(f"{p.name}:{q.path}", q.code, q.message) for q in problems])
    return doc


_default: RuleSet | None = None


def default_ruleset() -> RuleSet:
    """The shipped default (rules/default.yaml), compiled once per process."""
    global _default
    if _default is None:
        path = rules_dir() / DEFAULT_FILE
        if not path.exists():
            raise FileNotFoundError(f"shipped rules not found at {path}; set KAIPIAO_RULES_DIR")
        _default = compile_ruleset(load_ruleset_file(path))
    return _default


def decide(
    order: Order | Mapping[str, Any],
    *,
    ruleset: dict[str, Any] | RuleSet | None = None,
    now: datetime | None = None,
) -> Decision:
    """Decide what to do with ``order`` (a parsed order, or a contract document, which is
    read with the contract's one parser) under ``ruleset`` (None: the shipped default).
    ``now`` must be aware; defaults to the current time."""
    if ruleset is None:
        rs = default_ruleset()
    elif isinstance(ruleset, RuleSet):
        rs = ruleset
    else:
        rs = compile_ruleset(ruleset)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not isinstance(order, Order):
        if not isinstance(order, Mapping) or not order.get("order_id"):
            raise ValidationFailed(Problem("order", "bad_order", "an order object with order_id is required"))
        try:
            order = build_order(order)
        except (ValueError, TypeError, InvalidOperation, KeyError, AttributeError) as exc:
            raise ValidationFailed(Problem("order", "bad_order", f"cannot read order: {exc}")) from exc
    fact, times, deadline = build_fact(order, now, rs.parsed.deadlines)
    matched = get_evaluator().matched(rs.engine_name, order.key, fact)
    fired = [rs.enabled[i] for i in sorted(set(matched))]
    return build_decision(
        fired, default=rs.parsed.default, rules_version=rs.label, times=times, deadline=deadline, now=now
    )


def deadline_for(order: Order, ruleset: RuleSet | None) -> datetime | None:
    """The platform deadline of ``order`` under ``ruleset`` (None: the shipped default)."""
    rs = ruleset or default_ruleset()
    return deadline_at(order, order_times(order), rs.parsed.deadlines)
