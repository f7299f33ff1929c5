"""What the operations page shows from the database (it survives a Redis flush or outage):
the outbox backlog, statuses with the age of their oldest row, throughput per minute and
hour, the issuing switches of the seller entities (paused, or failing calls in a row), the
monthly credit used and left per seller entity, invoices whose outcome is overdue, held
requests, failed invoices and open job failures. Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Integer, cast, extract, func, literal_column, select
from sqlalchemy.orm import Session

from app.engine.clock import BEIJING
from app.engine.states import ISSUED_INVOICE
from app.engine.states import InvoiceStatus as I
from app.engine.states import RequestStatus as R
from app.models import (
    GatewayStatus,
    Invoice,
    InvoiceRequest,
    JobFailure,
    Merchant,
    Order,
    OutboxMessage,
    SellerEntity,
)
from app.services.issuing_control import scope_of, seller_id_of

LIST_LIMIT = 100


@dataclass
class StateRow:
    status: str
    count: int
    oldest_age: timedelta | None


@dataclass
class Backlog:
    count: int
    oldest_age: timedelta | None


@dataclass
class Bar:
    start: datetime  # UTC start of the bucket
    count: int


@dataclass
class Seller:
    """Who a switch belongs to: a seller entity, or nobody (the default scope)."""

    scope: str
    id: int | None = None
    name: str | None = None
    tax_id: str | None = None
    merchant: str | None = None


@dataclass
class Switch:
    """A seller entity's issuing switch that needs an eye: paused, or failing calls in a row."""

    seller: Seller
    paused: bool
    pause_code: str | None
    pause_reason: str | None
    paused_at: datetime | None
    failure_streak: int


@dataclass
class SellerCredit:
    """One seller entity's month: what it issued, and the credit its provider account has left."""

    seller: Seller
    issued_total: Decimal
    issued_count: int
    credit_remaining: Decimal | None
    credit_checked_at: datetime | None
    paused: bool


@dataclass
class CreditUse:
    """The month over every seller entity (``credit_remaining``: the sum of what each account
    had left when last asked; ``credit_checked_at``: the oldest of those answers) and per
    seller entity (at most LIST_LIMIT of them: paused first, then the largest users)."""

    month: str  # YYYY-MM in Asia/Shanghai
    issued_total: Decimal
    issued_count: int
    credit_remaining: Decimal | None
    credit_checked_at: datetime | None
    sellers: list[SellerCredit]


def age(now: datetime, then: datetime | None) -> timedelta | None:
    """How long since ``then`` (naive = UTC, as SQLite gives it back), never negative."""
    if then is not None and then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return _age(now, then)


def _age(now: datetime, then: datetime | None) -> timedelta | None:
    return None if then is None else max(now - then, timedelta(0))


def outbox_backlog(session: Session, now: datetime) -> Backlog:
    count, oldest = session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.dispatched_at.is_(None))
    ).one()
    return Backlog(count=count, oldest_age=_age(now, oldest))


def states_with_age(session: Session, model: type[Invoice] | type[InvoiceRequest], now: datetime) -> list[StateRow]:
    """Count per status and how long the oldest row has been sitting in it."""
    rows = session.execute(
        select(model.status, func.count(), func.min(model.updated_at)).group_by(model.status).order_by(model.status)
    ).all()
    return [StateRow(status, count, _age(now, oldest)) for status, count, oldest in rows]


def _bucket_expr(dialect: str, seconds: int) -> Any:
    """Whole buckets since the epoch, in SQL, so the grouping happens in the database.

    The divisor is a literal so SELECT and GROUP BY render the identical expression
    (PostgreSQL refuses two differently-numbered bound parameters)."""
    divisor = literal_column(str(int(seconds)), Integer)
    if dialect == "postgresql":
        return cast(func.floor(extract("epoch", Invoice.issued_at) / divisor), BigInteger)
    # SQLite keeps UTCDateTime as naive UTC text; strftime('%s') reads it as UTC.
    # ``//`` is integer division (SQLAlchemy 2 makes ``/`` true division).
    return cast(func.strftime("%s", Invoice.issued_at), Integer) // divisor


def throughput(session: Session, now: datetime, seconds: int, buckets: int) -> list[Bar]:
    """Invoices issued per ``seconds``-long bucket, the last ``buckets`` of them (newest last,
    the current partial bucket included, empty buckets as zero)."""
    last = int(now.timestamp()) // seconds
    first = last - buckets + 1
    since = datetime.fromtimestamp(first * seconds, UTC)
    expr = _bucket_expr(session.get_bind().dialect.name, seconds)
    rows = session.execute(
        select(expr.label("bucket"), func.count()).where(Invoice.issued_at >= since).group_by(expr)
    ).all()
    counts = {int(bucket): count for bucket, count in rows}
    return [Bar(datetime.fromtimestamp(b * seconds, UTC), counts.get(b, 0)) for b in range(first, last + 1)]


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    """This calendar month in Asia/Shanghai (the tax bureau's month), as UTC instants."""
    local = now.astimezone(BEIJING)
    start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return start.astimezone(UTC), end.astimezone(UTC)


def _seller_id(scope: str) -> int | None:
    try:
        return seller_id_of(scope)
    except ValueError:  # not a scope this version writes: shown as it is, never a broken page
        return None


def sellers_by_scope(session: Session, scopes: set[str]) -> dict[str, Seller]:
    """Name, tax id and merchant of the seller entities ``scopes`` name (one query)."""
    ids = {i for i in (_seller_id(s) for s in scopes) if i is not None}
    found = {row.id: row for row in session.execute(
        select(SellerEntity.id, SellerEntity.name, SellerEntity.tax_id, Merchant.name.label("merchant"))
        .join(Merchant, Merchant.id == SellerEntity.merchant_id).where(SellerEntity.id.in_(ids)))} if ids else {}
    out = {}
    for scope in scopes:
        seller_id = _seller_id(scope)
        row = found.get(seller_id) if seller_id is not None else None
        out[scope] = (Seller(scope, row.id, row.name, row.tax_id, row.merchant) if row is not None
                      else Seller(scope, seller_id))
    return out


def _scopes(session: Session) -> dict[str, GatewayStatus]:
    """Every switch, by scope: one row per seller entity that has ever been asked or paused."""
    return {row.scope: row for row in session.scalars(select(GatewayStatus))}


def _aware(value: datetime | None) -> datetime | None:
    """Naive = UTC (as SQLite gives it back)."""
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


_FAR_PAST = datetime.min.replace(tzinfo=UTC)


def issuing_switches(session: Session) -> list[Switch]:
    """The switches that are paused (longest paused first), then those failing calls in a row."""
    rows = session.scalars(select(GatewayStatus).where(
        GatewayStatus.paused.is_(True) | (GatewayStatus.failure_streak > 0))).all()
    sellers = sellers_by_scope(session, {row.scope for row in rows})
    switches = [Switch(sellers[row.scope], row.paused, row.pause_code, row.pause_reason, row.paused_at,
                       row.failure_streak) for row in rows]
    switches.sort(key=lambda s: (not s.paused, _aware(s.paused_at) or _FAR_PAST, -s.failure_streak, s.seller.scope))
    return switches[:LIST_LIMIT]


def credit_use(session: Session, now: datetime) -> CreditUse:
    start, end = month_bounds(now)
    used = session.execute(
        select(Invoice.seller_entity_id, func.sum(Invoice.total), func.count()).where(
            Invoice.color == "blue", Invoice.status.in_(sorted(ISSUED_INVOICE)),
            Invoice.issued_at >= start, Invoice.issued_at < end)
        .group_by(Invoice.seller_entity_id)
    ).all()
    by_scope = {scope_of(seller_id): (total or Decimal("0.00"), count) for seller_id, total, count in used}
    statuses = _scopes(session)
    # Sellers that issued this month, or whose account was asked for its credit, or that are paused.
    shown = set(by_scope) | {scope for scope, status in statuses.items()
                             if status.credit_remaining is not None or status.paused}
    sellers = sellers_by_scope(session, shown)
    rows = []
    for scope in shown:
        total, count = by_scope.get(scope, (Decimal("0.00"), 0))
        status = statuses.get(scope)
        rows.append(SellerCredit(sellers[scope], total, count, status.credit_remaining if status else None,
                                 status.credit_checked_at if status else None, bool(status and status.paused)))
    rows.sort(key=lambda r: (not r.paused, -r.issued_total, r.seller.name or "", r.seller.scope))
    checked = [s for s in statuses.values() if s.credit_remaining is not None]
    checked_at = [_aware(s.credit_checked_at) or _FAR_PAST for s in checked if s.credit_checked_at is not None]
    return CreditUse(
        month=start.astimezone(BEIJING).strftime("%Y-%m"),
        issued_total=sum((total for total, _ in by_scope.values()), Decimal("0.00")),
        issued_count=sum(count for _, count in by_scope.values()),
        credit_remaining=sum((s.credit_remaining or Decimal("0.00") for s in checked), Decimal("0.00"))
        if checked else None,
        credit_checked_at=min(checked_at) if checked_at else None,
        sellers=rows[:LIST_LIMIT],
    )


def stale_outcomes(session: Session, now: datetime, stuck_after: timedelta) -> list[Invoice]:
    """Invoices whose outcome is not known for longer than the tick's stuck threshold."""
    return list(session.scalars(
        select(Invoice).where(Invoice.status.in_((I.UNKNOWN, I.ISSUING)),
                              Invoice.updated_at <= now - stuck_after)
        .order_by(Invoice.updated_at).limit(LIST_LIMIT)
    ))


def held_requests(session: Session) -> list[tuple[InvoiceRequest, str | None]]:
    rows = session.execute(
        select(InvoiceRequest, Order.order_no).join(Order, Order.id == InvoiceRequest.order_pk)
        .where(InvoiceRequest.status == R.HELD).order_by(InvoiceRequest.updated_at).limit(LIST_LIMIT)
    ).all()
    return [(r, order_no) for r, order_no in rows]


def failed_invoices(session: Session) -> list[Invoice]:
    return list(session.scalars(
        select(Invoice).where(Invoice.status == I.FAILED).order_by(Invoice.updated_at).limit(LIST_LIMIT)
    ))


def open_job_failures(session: Session) -> list[JobFailure]:
    return list(session.scalars(
        select(JobFailure).where(JobFailure.resolved_at.is_(None)).order_by(JobFailure.id.desc()).limit(LIST_LIMIT)
    ))
