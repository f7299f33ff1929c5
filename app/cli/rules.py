"""``kaipiao rules ...``: validate a rule-set file, decide one order (a dry run)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from app.cli.common import emit_errors
from app.engine.json_input import load_json
from app.errors import ValidationFailed


@click.group("rules")
def rules_group() -> None:
    """Invoicing rule sets (docs/rules.md)."""


@rules_group.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate_command(file: Path) -> None:
    """Check a rule-set file (JSON or YAML); exit 2 with every problem."""
    from app.rules import load_ruleset_file, validate_ruleset

    try:
        doc = load_ruleset_file(file)
    except ValidationFailed as exc:
        emit_errors(exc.problems)
    problems = validate_ruleset(doc)
    if problems:
        emit_errors(problems)
    click.echo(f"ok: {doc['name']} ({len(doc['rules'])} rules)")


@rules_group.command("decide")
@click.argument(
    "order_file", metavar="ORDER.json", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="rule-set file (default: the shipped rules/default.yaml)",
)
@click.option("--now", "now_text", help="evaluate at this ISO 8601 time (with offset) instead of now")
def decide_command(order_file: Path, rules_file: Path | None, now_text: str | None) -> None:
    """Print the decision for one order as JSON."""
    from app.rules import decide, load_ruleset_file

    now = None
    if now_text:
        try:
            now = datetime.fromisoformat(now_text)
        except ValueError:
            raise click.BadParameter("not an ISO 8601 date-time", param_hint="--now") from None
        if now.tzinfo is None:
            raise click.BadParameter("give an offset, e.g. 2026-11-15T09:00:00+08:00", param_hint="--now")
    try:
        order = load_json(order_file.read_bytes(), "order")
        ruleset = load_ruleset_file(rules_file) if rules_file else None
        decision = decide(order, ruleset=ruleset, now=now)
    except ValidationFailed as exc:
        emit_errors(exc.problems)
    except ValueError as exc:
        raise click.ClickException(f"{order_file}: {exc}") from exc
    click.echo(json.dumps(decision.as_dict(full=True), ensure_ascii=False, indent=2))


def register(group: click.Group) -> None:
    group.add_command(rules_group)
