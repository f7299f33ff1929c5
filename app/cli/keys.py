"""Encryption keys: ``kaipiao keys rotate`` re-encrypts every secret with the newest key."""

from __future__ import annotations

import getpass
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from app import db

EXIT_UNREADABLE = 1


@click.group("keys")
def keys_group() -> None:
    """Encryption keys of the secrets at rest (KAIPIAO_ENCRYPTION_KEYS, newest first)."""


@keys_group.command("rotate")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 100_000),
              help="rows per transaction")
@with_appcontext
def rotate(batch_size: int) -> None:
    """Re-encrypt every encrypted column with the newest key (idempotent: run it again to
    finish an interrupted run). Exit 1 if a value opens with none of the configured keys."""
    from app.services.key_rotation import rotate_all

    keys = len(current_app.config["KAIPIAO"].encryption_keys)
    reports = rotate_all(db.session(), actor=f"cli:{_os_user()}", batch_size=batch_size)
    click.echo(f"{keys} key(s) configured; the newest encrypts")
    for r in reports:
        click.echo(f"{r.name}: {r.rotated} re-encrypted, {r.current} already with the newest key, "
                   f"{r.changed} changed meanwhile (left as written), {len(r.unreadable)} unreadable")
    unreadable = [r for r in reports if r.unreadable]
    for r in unreadable:
        shown = ", ".join(map(str, r.unreadable[:20])) + (" …" if len(r.unreadable) > 20 else "")
        click.echo(f"error: {r.name} of id {shown} cannot be decrypted with any configured key: add the key "
                   "it was encrypted with to KAIPIAO_ENCRYPTION_KEYS (after the newest) and run again", err=True)
    if unreadable:
        sys.exit(EXIT_UNREADABLE)
    if any(r.changed for r in reports):
        click.echo("run it again to check the rows the application changed meanwhile")
    elif keys > 1:
        click.echo("every secret is now encrypted with the newest key: the older keys can be removed")


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def register(group: click.Group) -> None:
    group.add_command(keys_group)
