"""Sealing the invoice log into its hash chain (app.ledger.seal), chunk by chunk until the
backlog is gone or the time budget is spent: at full load events arrive faster than one
chunk per scheduler interval."""

from __future__ import annotations

import time

from app import db, ledger


def seal_backlog(budget_seconds: float = 30.0) -> int:
    sealed, deadline = 0, time.monotonic() + budget_seconds
    while True:
        with db.transaction() as session:
            n = ledger.seal(session)
        sealed += n
        if n == 0 or time.monotonic() > deadline:
            return sealed
