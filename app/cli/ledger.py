"""The ledgers: ``kaipiao verify-log`` (chains, checkpoints, document hashes) and ``seal-log``."""

from __future__ import annotations

import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from app import db

EXIT_TAMPERED = 1


@click.command("verify-log")
@with_appcontext
def verify_log() -> None:
    """Check every ledger's hash chain, the chains against the checkpoint file and every stored
    document hash; name the first bad row of each; exit 1 when anything is wrong."""
    from app.services.log_verification import save_report, summary, verify_all

    settings = current_app.config["KAIPIAO"]
    report = verify_all(db.session(), settings.instance_path, settings.ledger_hmac_key)
    db.session.rollback()
    save_report(report, settings.instance_path)
    for line in summary(report):
        click.echo(line)
    if not report.ok:
        sys.exit(EXIT_TAMPERED)


@click.command("seal-log")
@with_appcontext
def seal_log() -> None:
    """Seal the ledgers' backlog now and checkpoint their heads (what the periodic job does)."""
    from app.services.ledger_sealing import seal_backlog

    click.echo(f"sealed {seal_backlog(settings=current_app.config['KAIPIAO'])} rows")


def register(group: click.Group) -> None:
    group.add_command(verify_log)
    group.add_command(seal_log)
