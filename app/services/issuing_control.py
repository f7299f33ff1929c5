"""The issuing switch: pause (an expired tax-bureau login, exhausted monthly credit, an outage)
and resume, the count of failed provider calls in a row that detects an outage, and the probe
that checks the provider is back (its answer, the monthly credit left, is what the operations
view shows).

While issuing is paused nothing is sent: composed invoices wait as ``ready`` and the backlog
drains in order (oldest first) on resume.
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app import db
from app.engine.clock import utcnow
from app.engine.states import SENDABLE
from app.integrations.tax.base import TaxGatewayError
from app.models import GatewayStatus, Invoice, SellerEntity
from app.services.context import gateway_for
from app.services.queueing import queue_issue
from app.services.unit_of_work import UnitOfWork
from app.settings import Settings

log = logging.getLogger(__name__)

SCOPE = "default"  # one pause switch for the deployment's provider account(s)
OUTAGE_THRESHOLD = 5  # failed provider calls in a row, across jobs and workers, that mean "provider down"


def _status(session: Session) -> GatewayStatus | None:
    return session.scalar(select(GatewayStatus).where(GatewayStatus.scope == SCOPE))


def pause_status(session: Session) -> GatewayStatus | None:
    """The switch when issuing is paused, else None."""
    status = _status(session)
    return status if status is not None and status.paused else None


def pause(work: UnitOfWork, code: str, reason: str, actor: str = "system") -> None:
    status = _status(work.session)
    if status is None:
        status = GatewayStatus(scope=SCOPE)
        work.session.add(status)
    if status.paused and status.pause_code == code:
        return
    status.paused, status.pause_code, status.pause_reason, status.paused_at = True, code, reason[:500], utcnow()
    work.record("issuing_paused", actor=actor, data={"code": code, "reason": reason[:500]})
    log.warning("issuing paused (%s): %s", code, reason)


def resume(work: UnitOfWork, actor: str) -> bool:
    """Operations confirm the cause is gone (e.g. the tax-bureau login was renewed); the
    backlog is queued in order. False when issuing was not paused."""
    status = _status(work.session)
    if status is None or not status.paused:
        return False
    work.record("issuing_resumed", actor=actor, data={"code": status.pause_code})
    status.paused, status.resumed_at, status.resumed_by = False, utcnow(), actor
    status.failure_streak = 0
    queue_backlog(work, limit=None)
    return True


def queue_backlog(work: UnitOfWork, limit: int | None = 2000) -> int:
    """Queue the invoices waiting to be sent that are due, oldest first (drains a backlog in order)."""
    now = utcnow()
    query = (select(Invoice.id).where(Invoice.status.in_(sorted(SENDABLE)))
             .where((Invoice.next_attempt_at.is_(None)) | (Invoice.next_attempt_at <= now))
             .order_by(Invoice.id))
    ids = work.session.scalars(query.limit(limit) if limit else query).all()
    for invoice_id in ids:
        queue_issue(work, invoice_id)
    return len(ids)


def record_streak(work: UnitOfWork, trailing: int | None, leading: int) -> str | None:
    """Keep the deployment-wide count of failed calls in a row; returns the reason to pause
    for an outage once it reaches OUTAGE_THRESHOLD. ``trailing``: failures after this job's
    last success (None: no success, so ``leading`` extends the earlier count). Written only
    when it changes, so the steady state costs one read."""
    session = work.session
    status = _status(session)
    before = status.failure_streak if status is not None else 0
    if (trailing is None and leading == 0) or trailing == before:
        return None
    if status is None:
        status = GatewayStatus(scope=SCOPE, failure_streak=0)
        session.add(status)
        session.flush()
    # Atomic in the database: several workers record at once.
    value = GatewayStatus.failure_streak + leading if trailing is None else trailing
    after = session.execute(update(GatewayStatus).where(GatewayStatus.id == status.id)
                            .values(failure_streak=value).returning(GatewayStatus.failure_streak)
                            .execution_options(synchronize_session=False)).scalar_one()
    if after >= OUTAGE_THRESHOLD and leading + (trailing or 0) > 0:
        return f"{after} consecutive failed calls to the provider"
    return None


def probe(session: Session, settings: Settings) -> bool:
    """Is the provider there? A cheap call, the monthly credit (授信额度) left, whose answer is
    recorded for the operations view."""
    seller = session.scalar(select(SellerEntity).order_by(SellerEntity.id).limit(1))
    if seller is None:
        return False
    try:
        credit = gateway_for(seller, settings).remaining_credit()
    except TaxGatewayError:
        return False
    status = _status(session)
    if status is None:
        status = GatewayStatus(scope=SCOPE)
        session.add(status)
    status.credit_remaining, status.credit_checked_at = credit, utcnow()
    return True


def refresh_credit(settings: Settings) -> bool:
    """Periodic: record the provider's remaining monthly credit."""
    with db.transaction() as session:
        return probe(session, settings)
