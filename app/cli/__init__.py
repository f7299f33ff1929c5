"""The ``kaipiao`` command: a Flask CLI group; every command lives in this package, one
module per area, each with ``register(group)``. Listing a module in COMMAND_MODULES is the
only edit this file needs. Commands are thin: parse, call one service, print.
"""

from __future__ import annotations

import importlib
import os
import runpy
import sys
from pathlib import Path

import click
from flask.cli import FlaskGroup

COMMAND_MODULES = (
    "app.cli.core",  # db, users, seed, run (demo)
    "app.cli.invoicing",  # preview, tax codes
    "app.cli.rules",  # rules validate / decide
    "app.cli.jobs",  # worker, scheduler, tick, orders import/generate, dispatch
    "app.cli.ledger",  # verify-log, seal-log
    "app.cli.keys",  # keys rotate
    "app.cli.doctor",  # doctor
    "sandbox.tax.cli",  # sandbox-tax (the fake provider, outside app/)
)


def _create_app(*_args, **_kwargs):
    from app import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=False, add_version_option=False)
def cli() -> None:
    """Kaipiao (开票): automatic 数电票 invoicing for e-commerce merchants."""


def _register_all(group: click.Group) -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module
                raise
            continue
        module.register(group)


@cli.command("bench")
@click.argument("name")
def bench(name: str) -> None:
    """Run benchmarks/NAME.py; it prints one ``metric: value unit`` line per figure."""
    root = Path(os.environ.get("KAIPIAO_BENCH_DIR", Path.cwd() / "benchmarks"))
    script = root / f"{name}.py"
    if not script.exists():
        known = sorted(p.stem for p in root.glob("*.py") if not p.stem.startswith("_"))
        raise click.ClickException(f"no benchmark {name!r} in {root}; known: {', '.join(known)}")
    sys.path.insert(0, str(root))
    runpy.run_path(str(script), run_name="__main__")


_register_all(cli)


def main() -> None:
    cli(prog_name="kaipiao")
