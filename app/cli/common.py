"""What every command shares: errors printed in the one shape (``{"errors": [...]}``, exit 2)
and JSON files read with a clear error instead of a stack trace."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from app.engine.json_input import load_json
from app.errors import Problem, ValidationFailed

EXIT_INVALID = 2


def emit_errors(problems: list[Problem]) -> NoReturn:
    click.echo(json.dumps({"errors": [p.as_dict() for p in problems]}, ensure_ascii=False, indent=2))
    sys.exit(EXIT_INVALID)


def read_json(path: Path | None, what: str) -> Any:
    if path is None:
        return None
    try:
        return load_json(path.read_bytes(), what)
    except ValidationFailed as exc:
        emit_errors([Problem(p.path, p.code, f"{path.name}: {p.message}") for p in exc.problems])
    except OSError as exc:
        emit_errors([Problem(what, "unreadable", f"{path}: {exc}")])
