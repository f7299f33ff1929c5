"""RQ jobs: one-line wrappers over services; they take ids, never ORM objects."""

from __future__ import annotations

from typing import Any

from app.engine import pipeline


def decide_requests(request_ids: list[int]) -> dict[str, Any]:
    return pipeline.decide_requests(request_ids).counts


def issue_invoices(invoice_ids: list[int]) -> dict[str, Any]:
    return pipeline.issue_invoices(invoice_ids).counts


def poll_invoices(invoice_ids: list[int]) -> dict[str, Any]:
    return pipeline.poll_invoices(invoice_ids).counts


def tick() -> dict[str, Any]:
    return pipeline.tick().counts


def seal_ledger(budget_seconds: float = 30.0) -> int:
    """Seal in chunks until the backlog is gone (or the time budget is spent): at full load
    events arrive faster than one chunk per scheduler interval."""
    import time

    from app import db, ledger

    sealed, deadline = 0, time.monotonic() + budget_seconds
    while True:
        with db.transaction() as session:
            n = ledger.seal(session)
        sealed += n
        if n == 0 or time.monotonic() > deadline:
            return sealed


def refresh_credit() -> bool:
    return pipeline.refresh_credit()


def check_deadlines() -> dict[str, Any]:
    from app.engine.deadlines import check_deadlines as run

    return run()


# Periodic work registered with RQ's cron scheduler (`kaipiao scheduler`).
PERIODIC: tuple[tuple[str, str, int], ...] = (
    # (function, queue, interval in seconds)
    ("app.jobs.tasks.tick", "periodic", 1),
    ("app.jobs.tasks.seal_ledger", "periodic", 5),
    ("app.jobs.tasks.check_deadlines", "periodic", 300),
    ("app.jobs.tasks.refresh_credit", "periodic", 300),
)
