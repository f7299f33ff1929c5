"""Readiness checks that need only the database: reachable, migrations at head, the tax
provider's last calls healthy, issuing not paused. The Redis and worker checks, and the whole
report, are in app.jobs.readiness. Each check says ok or not, how long it took and, when not
ok, why, in words with no personal data (counts, not names)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app import db
from app.models import GatewayStatus


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    ms: float
    detail: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "latency_ms": round(self.ms, 1), "detail": self.detail}


def timed(name: str, probe: Callable[[], str]) -> Check:
    """Run ``probe`` (it returns a detail, or raises to fail) and time it."""
    start = time.perf_counter()
    try:
        detail, ok = probe(), True
    except _NotReady as exc:
        detail, ok = str(exc), False
    except Exception as exc:  # the check failed: say how, without the message (it may carry a URL)
        detail, ok = f"unreachable ({type(exc).__name__})", False
    return Check(name, ok, (time.perf_counter() - start) * 1000, detail)


class _NotReady(Exception):
    """A probe's answer: reachable, but not ready (the message says why)."""


@lru_cache(maxsize=1)
def migration_heads() -> frozenset[str]:
    from app.migrate import heads

    return frozenset(heads())


def database_checks(outage_threshold: int | None = None) -> list[Check]:
    """database, migrations, provider, issuing: the last three are failed as "not checked" when
    the database does not answer."""
    from app.services.issuing_control import OUTAGE_THRESHOLD

    threshold = outage_threshold or OUTAGE_THRESHOLD
    conn: Connection | None = None

    def database() -> str:
        nonlocal conn
        conn = db.get_engine().connect()
        conn.exec_driver_sql("SELECT 1")
        return "reachable"

    checks = [timed("database", database)]
    if conn is None:
        return checks + [Check(name, False, 0.0, "not checked: database unreachable")
                         for name in ("migrations", "tax_provider", "issuing")]
    try:
        def migrations() -> str:
            from alembic.runtime.migration import MigrationContext

            current = MigrationContext.configure(conn).get_current_revision()
            if current not in migration_heads():
                raise _NotReady(f"schema at {current or 'nothing'}, code expects {', '.join(sorted(migration_heads()))}")
            return f"at head {current}"

        checks.append(timed("migrations", migrations))
        session = Session(bind=conn)

        def provider() -> str:
            failing = session.scalar(select(func.count()).select_from(GatewayStatus)
                                     .where(GatewayStatus.failure_streak >= threshold)) or 0
            if failing:
                raise _NotReady(f"{failing} seller account(s) with {threshold}+ failed provider calls in a row")
            return "last calls healthy"

        def issuing() -> str:
            paused = session.scalar(select(func.count()).select_from(GatewayStatus)
                                    .where(GatewayStatus.paused.is_(True))) or 0
            if paused:
                raise _NotReady(f"issuing paused for {paused} seller account(s)")
            return "not paused"

        checks += [timed("tax_provider", provider), timed("issuing", issuing)]
        session.close()
    finally:
        conn.close()
    return checks
