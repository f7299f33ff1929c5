"""What the operations page shows from the database (it survives a Redis flush or outage):
the outbox backlog, statuses with the age of their oldest row, throughput per minute and
hour, the monthly credit used, invoices whose outcome is overdue, held requests, failed
invoices and open job failures. Read-only."""

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
from app.models import GatewayStatus, Invoice, InvoiceRequest, JobFailure, Order, OutboxMessage
from app.services.issuing_control import DEFAULT_SCOPE as SCOPE

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
class CreditUse:
    month: str  # YYYY-MM in Asia/Shanghai
    issued_total: Decimal
    issued_count: int
    credit_remaining: Decimal | None
    credit_checked_at: datetime | None


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


def credit_use(session: Session, now: datetime) -> CreditUse:
    start, end = month_bounds(now)
    total, count = session.execute(
        select(func.sum(Invoice.total), func.count()).where(
            Invoice.color == "blue", Invoice.status.in_(sorted(ISSUED_INVOICE)),
            Invoice.issued_at >= start, Invoice.issued_at < end)
    ).one()
    status = session.scalar(select(GatewayStatus).where(GatewayStatus.scope == SCOPE))
    return CreditUse(
        month=start.astimezone(BEIJING).strftime("%Y-%m"), issued_total=total or Decimal("0.00"),
        issued_count=count, credit_remaining=status.credit_remaining if status else None,
        credit_checked_at=status.credit_checked_at if status else None,
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
