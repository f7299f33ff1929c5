"""Declarative invoicing rules: rule sets are data (docs/rules.md), evaluated by durable-rules
behind app.rules.engine, turned into a Decision in Python (app.rules.decision)."""

from __future__ import annotations

from app.rules.decision import Decision
from app.rules.facts import order_fact
from app.rules.ruleset import (
    RuleSet,
    compile_ruleset,
    decide,
    default_ruleset,
    document_hash,
    load_ruleset_file,
    rules_dir,
)
from app.rules.validate import validate_ruleset

__all__ = [
    "Decision",
    "RuleSet",
    "compile_ruleset",
    "decide",
    "default_ruleset",
    "document_hash",
    "load_ruleset_file",
    "order_fact",
    "rules_dir",
    "validate_ruleset",
]
