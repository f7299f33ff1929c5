"""Sealing the ledgers into their hash chains (app.ledger.seal), chunk by chunk until the
backlog is gone or the time budget is spent (at full load events arrive faster than one
chunk per scheduler interval), then checkpointing the chains' heads to the append-only file
in the instance folder (app.ledger.write_checkpoint), which the database role cannot rewrite."""

from __future__ import annotations

import time

from app import db, ledger
from app.settings import Settings


def seal_backlog(budget_seconds: float = 30.0, settings: Settings | None = None) -> int:
    sealed, deadline = 0, time.monotonic() + budget_seconds
    while True:
        with db.transaction() as session:
            n = ledger.seal(session)
        sealed += n
        if n == 0 or time.monotonic() > deadline:
            break
    if settings is not None:
        checkpoint(settings)
    return sealed


def checkpoint(settings: Settings) -> bool:
    """Append the heads of the chains (committed, read under the chain lock) when they moved
    since the last checkpoint; True when a line was written."""
    with db.transaction() as session:
        line = ledger.write_checkpoint(session, ledger.checkpoint_path(settings.instance_path),
                                       settings.ledger_hmac_key)
    return line is not None
