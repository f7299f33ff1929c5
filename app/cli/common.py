"""What every command shares: errors printed in the one shape (``{"errors": [...]}``, exit 2)
and JSON files read with a clear error instead of a stack trace."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from app.errors import Problem

EXIT_INVALID = 2


def emit_errors(problems: list[Problem]) -> NoReturn:
    click.echo(json.dumps({"errors": [p.as_dict() for p in problems]}, ensure_ascii=False, indent=2))
    sys.exit(EXIT_INVALID)


def read_json(path: Path | None, what: str) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        emit_errors([Problem(what, "invalid_json", f"{path.name}: not JSON ({exc.msg} at line {exc.lineno})")])
    except (OSError, UnicodeDecodeError) as exc:
        emit_errors([Problem(what, "unreadable", f"{path}: {exc}")])
