"""The issuing switches, one per seller entity: pause (an expired tax-bureau login, exhausted
monthly credit, an outage) and resume, the count of failed provider calls in a row that detects
an outage, and the probe that checks the provider is back (its answer, the monthly credit left,
is what the operations view shows).

A seller entity issues through its own provider account (its own login, its own 授信额度), so
one merchant's trouble must not stop the others: each switch is a ``gateway_status`` row whose
``scope`` names a seller entity (``seller:<id>``); invoices without a seller entity share the
``default`` scope. While a seller is paused nothing of it is sent: its invoices wait as
``ready`` / ``retry_ready`` and drain in order (oldest first) when that seller resumes; the
other sellers keep issuing.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app import db
from app.engine.clock import utcnow
from app.engine.states import SENDABLE
from app.integrations.tax.base import TaxGateway, TaxGatewayError
from app.models import GatewayStatus, Invoice, SellerEntity
from app.services.context import gateway_for
from app.services.queueing import queue_issue
from app.services.unit_of_work import UnitOfWork
from app.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_SCOPE = "default"  # invoices without a seller entity: the deployment's own provider account
_SELLER_PREFIX = "seller:"
OUTAGE_THRESHOLD = 5  # failed calls in a row to one seller's provider account, across jobs and workers


# ------------------------------------------------------------------------------- scopes


def scope_of(seller_id: int | None) -> str:
    """The switch of a seller entity (``seller:<id>``); ``default`` without one."""
    return DEFAULT_SCOPE if seller_id is None else f"{_SELLER_PREFIX}{int(seller_id)}"


def seller_id_of(scope: str) -> int | None:
    """The seller entity a scope names; None for the default scope. ValueError for anything else."""
    if scope == DEFAULT_SCOPE:
        return None
    if scope.startswith(_SELLER_PREFIX) and scope[len(_SELLER_PREFIX):].isdigit():
        return int(scope[len(_SELLER_PREFIX):])
    raise ValueError(f"not an issuing scope: {scope!r}")


def sending_allowed(paused: Collection[str]) -> Any:
    """SQL condition on ``Invoice``: its seller entity's switch is not among ``paused``."""
    if not paused:
        return true()
    seller_ids = [i for i in (seller_id_of(s) for s in paused) if i is not None]
    others = Invoice.seller_entity_id.notin_(seller_ids) if seller_ids else true()
    # NOT IN is never true for NULL: invoices without a seller follow the default switch.
    if DEFAULT_SCOPE in paused:
        return Invoice.seller_entity_id.is_not(None) & others
    return Invoice.seller_entity_id.is_(None) | others


# ------------------------------------------------------------------------------- switches


def _status(session: Session, scope: str) -> GatewayStatus | None:
    return session.scalar(select(GatewayStatus).where(GatewayStatus.scope == scope))


def _switch(session: Session, scope: str) -> GatewayStatus:
    """The switch of ``scope``, created if it is not there yet. A seller's first failure, pause
    or credit answer may come from two workers at once: the row is inserted unless it exists
    (no unique-key error to fail the recording of their answers), then read."""
    status = _status(session, scope)
    if status is not None:
        return status
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(insert(GatewayStatus).values(scope=scope).on_conflict_do_nothing(index_elements=["scope"]))
    status = _status(session, scope)
    assert status is not None
    return status


def paused_scopes(session: Session) -> dict[str, GatewayStatus]:
    """Every paused switch by scope: one read, once per job."""
    rows = session.scalars(select(GatewayStatus).where(GatewayStatus.paused.is_(True))
                           .order_by(GatewayStatus.paused_at, GatewayStatus.id)).all()
    return {row.scope: row for row in rows}


def pause_status(session: Session, scope: str | None = None) -> GatewayStatus | None:
    """The switch of ``scope`` when it is paused, else None; without a scope, the first paused
    switch of any seller (None: nobody is paused)."""
    if scope is None:
        return next(iter(paused_scopes(session).values()), None)
    status = _status(session, scope)
    return status if status is not None and status.paused else None


def pause(work: UnitOfWork, code: str, reason: str, actor: str = "system", *, scope: str) -> None:
    status = _switch(work.session, scope)
    if status.paused and status.pause_code == code:
        return
    status.paused, status.pause_code, status.pause_reason, status.paused_at = True, code, reason[:500], utcnow()
    work.record("issuing_paused", actor=actor, data={"scope": scope, "code": code, "reason": reason[:500]})
    log.warning("issuing paused for %s (%s): %s", scope, code, reason)


def resume(work: UnitOfWork, actor: str, *, scope: str) -> bool:
    """Operations confirm the cause is gone (e.g. the seller's tax-bureau login was renewed);
    that seller's backlog is queued in order. False when it was not paused."""
    status = _status(work.session, scope)
    if status is None or not status.paused:
        return False
    work.record("issuing_resumed", actor=actor, data={"scope": scope, "code": status.pause_code})
    status.paused, status.resumed_at, status.resumed_by = False, utcnow(), actor
    status.failure_streak = 0
    queue_backlog(work, scope=scope, limit=None)
    return True


def queue_backlog(work: UnitOfWork, *, scope: str, limit: int | None = 2000) -> int:
    """Queue the invoices of ``scope``'s seller entity waiting to be sent that are due, oldest
    first (drains a backlog in order)."""
    now = utcnow()
    seller_id = seller_id_of(scope)
    query = (select(Invoice.id).where(Invoice.status.in_(sorted(SENDABLE)))
             .where((Invoice.next_attempt_at.is_(None)) | (Invoice.next_attempt_at <= now))
             .where(Invoice.seller_entity_id.is_(None) if seller_id is None
                    else Invoice.seller_entity_id == seller_id)
             .order_by(Invoice.id))
    ids = work.session.scalars(query.limit(limit) if limit else query).all()
    for invoice_id in ids:
        queue_issue(work, invoice_id)
    return len(ids)


# ------------------------------------------------------------------------------- outages


@dataclass(frozen=True)
class Streak:
    """What one job saw of a seller's provider account: ``trailing``, failed calls after its
    last success (None: no success, so ``leading`` extends the count recorded earlier);
    ``leading``, failed calls before its first success."""

    trailing: int | None
    leading: int


def record_streaks(work: UnitOfWork, streaks: Mapping[str, Streak]) -> dict[str, str]:
    """Keep each seller's count of failed calls in a row (across jobs and workers); returns, by
    scope, the reason to pause for an outage once a count reaches OUTAGE_THRESHOLD. The job's
    scopes are read in one query and a row is written only when it changes, so the steady
    state costs one read per job."""
    session = work.session
    rows = {row.scope: row for row in session.scalars(
        select(GatewayStatus).where(GatewayStatus.scope.in_(sorted(streaks))))} if streaks else {}
    outages: dict[str, str] = {}
    for scope in sorted(streaks):
        trailing, leading = streaks[scope].trailing, streaks[scope].leading
        status = rows.get(scope)
        before = status.failure_streak if status is not None else 0
        if (trailing is None and leading == 0) or trailing == before:
            continue
        if status is None:
            status = _switch(session, scope)
        # Atomic in the database: several workers record at once.
        value = GatewayStatus.failure_streak + leading if trailing is None else trailing
        after = session.execute(update(GatewayStatus).where(GatewayStatus.id == status.id)
                                .values(failure_streak=value).returning(GatewayStatus.failure_streak)
                                .execution_options(synchronize_session=False)).scalar_one()
        if after >= OUTAGE_THRESHOLD and leading + (trailing or 0) > 0:
            outages[scope] = f"{after} consecutive failed calls to the provider"
    return outages


# ------------------------------------------------------------------------------- probe and credit
# Provider calls are made outside any database transaction (a slow provider must not hold a row
# lock the issue jobs need); their answers are written afterwards, in one short transaction.

@contextmanager
def _reading() -> Iterator[Session]:
    """A read-only transaction (on SQLite it takes no write lock: the tick reads every second)."""
    session = db.SessionFactory()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


PROBES_PER_TICK = 4  # sellers out for an outage whose provider account one tick asks (longest unasked first)


def _gateway(seller: SellerEntity | None, settings: Settings) -> TaxGateway | None:
    try:
        return gateway_for(seller, settings)
    except ValueError:  # no provider account configured (the default scope without settings)
        log.info("no tax gateway for seller entity %s", seller.id if seller else None, exc_info=True)
        return None


def _ask_credit(gateway: TaxGateway | None) -> Decimal | None:
    if gateway is None:
        return None
    try:
        return gateway.remaining_credit()
    except TaxGatewayError:
        return None
    except Exception:  # one seller's broken account must not stop the probes of the others
        log.exception("asking %s for its credit failed", type(gateway).__name__)
        return None


def record_credit(session: Session, scope: str, credit: Decimal) -> None:
    status = _switch(session, scope)
    status.credit_remaining, status.credit_checked_at = credit, utcnow()


def probe_outages(settings: Settings, limit: int = PROBES_PER_TICK) -> dict[str, Decimal | None]:
    """Is the provider back? For the sellers paused for an outage (at most ``limit``, those
    probed longest ago first), a cheap call to each one's provider account: the monthly credit
    (授信额度) left, or None where it still does not answer. Nothing is written here: the
    tick records the answers (``record_probes``)."""
    with _reading() as session:
        scopes = session.scalars(
            select(GatewayStatus.scope).where(GatewayStatus.paused.is_(True), GatewayStatus.pause_code == "outage")
            .order_by(GatewayStatus.updated_at, GatewayStatus.id).limit(limit)).all()
        gateways: dict[str, TaxGateway | None] = {}
        for scope in scopes:
            seller_id = seller_id_of(scope)
            seller = session.get(SellerEntity, seller_id) if seller_id is not None else None
            gateways[scope] = None if seller_id is not None and seller is None else _gateway(seller, settings)
    return {scope: _ask_credit(gateway) for scope, gateway in gateways.items()}


def record_probes(work: UnitOfWork, probed: Mapping[str, Decimal | None]) -> list[str]:
    """Resume each seller whose provider answered the probe (if it is still paused for an
    outage), alone, its backlog queued in order; a seller still out goes to the back of the
    probing line. Returns the scopes resumed."""
    resumed = []
    for scope, credit in sorted(probed.items()):
        status = _status(work.session, scope)
        if status is None or not status.paused or status.pause_code != "outage":
            continue
        if credit is None:
            status.updated_at = utcnow()
            continue
        record_credit(work.session, scope, credit)
        resume(work, actor="system:probe", scope=scope)
        resumed.append(scope)
    return resumed


def refresh_credit(settings: Settings) -> bool:
    """Periodic: record every seller entity's remaining monthly credit (one call per provider
    account). True when at least one answered."""
    with _reading() as session:
        sellers = session.scalars(select(SellerEntity).order_by(SellerEntity.id)).all()
        gateways = [(scope_of(seller.id), _gateway(seller, settings)) for seller in sellers]
    asked: dict[int, Decimal | None] = {}  # by gateway: sellers sharing one account ask once
    answers: dict[str, Decimal] = {}
    for scope, gateway in gateways:
        if id(gateway) not in asked:
            asked[id(gateway)] = _ask_credit(gateway)
        credit = asked[id(gateway)]
        if credit is not None:
            answers[scope] = credit
    if answers:
        with db.transaction() as session:
            for scope, credit in answers.items():
                record_credit(session, scope, credit)
    return bool(answers)
