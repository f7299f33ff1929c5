"""`kaipiao preview` and `kaipiao taxcodes check`: stateless engine commands (no database)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from app.cli.common import emit_errors, read_json
from app.errors import ValidationFailed


def _database_session():
    """A session on the configured database if one exists (never creates a SQLite file)."""
    from pathlib import Path as _Path

    from app import crypto, db
    from app.settings import Settings

    url = Settings.database_url_from_env()
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if not path or not _Path(path).exists():
            return None  # right after install: stateless, and nothing is written
    settings = Settings.from_env()
    crypto.configure(settings.encryption_keys)
    db.configure(settings.database_url)
    return db.SessionFactory()


@click.command("preview")
@click.argument("order_file", metavar="ORDER.json", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--seller", "seller_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Seller party JSON (name, tax_id, ...); required while shops are not configured.")
@click.option("--options", "options_file", type=click.Path(path_type=Path, dir_okay=False),
              help="Compose options JSON (discount_mode, gift_mode, max_lines, ...).")
def preview_command(order_file: Path, seller_file: Path | None, options_file: Path | None) -> None:
    """Print the invoice draft for ORDER.json (exit 0) or its errors (exit 2).

    When a Kaipiao database exists and knows the order's shop, the merchant's seller entity
    and published rules apply (--seller / --options override them); otherwise the preview is
    stateless with the shipped default rules, and --seller is required."""
    from app.services.preview import preview_order

    order = read_json(order_file, "order")
    seller = read_json(seller_file, "seller")
    options = read_json(options_file, "options")
    session = _database_session()
    try:
        draft = preview_order(order, seller, options, user=None, session=session, use_database=session is not None)
    except ValidationFailed as exc:
        emit_errors(exc.problems)
    finally:
        if session is not None:
            session.close()
    click.echo(json.dumps(draft, ensure_ascii=False, indent=2))


@click.group("taxcodes")
def taxcodes_group() -> None:
    """税收分类编码 catalogue files."""


@taxcodes_group.command("check")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
def taxcodes_check(file: Path) -> None:
    """Validate a catalogue file (CSV or YAML) and print how many codes it holds."""
    from app.engine.taxcodes import load_catalogue

    try:
        catalogue = load_catalogue(file)
    except ValidationFailed as exc:
        emit_errors(exc.problems)
    click.echo(json.dumps({"codes": len(catalogue), "version": catalogue.version}, ensure_ascii=False))


@taxcodes_group.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--version", "version", default=None, help="catalogue version label (default: the file name)")
def taxcodes_import(file: Path, version: str | None) -> None:
    """Load a catalogue file into the database (upsert by code); errors name the row and field."""
    from app import crypto, db
    from app.engine.taxcodes import load_catalogue
    from app.services.tax_catalogue import import_catalogue
    from app.settings import Settings

    try:
        catalogue = load_catalogue(file)
    except ValidationFailed as exc:
        emit_errors(exc.problems)
    settings = Settings.from_env()
    crypto.configure(settings.encryption_keys)
    db.configure(settings.database_url)
    with db.transaction() as session:
        count = import_catalogue(session, catalogue, version=version or catalogue.version)
    click.echo(json.dumps({"imported": count, "version": version or catalogue.version}, ensure_ascii=False))


def register(group: click.Group) -> None:
    group.add_command(preview_command)
    group.add_command(taxcodes_group)
