"""Platform invoicing deadlines: alarm operations before a deadline passes.

The deadline of a request comes from the rule set that decides its shop (its ``deadlines``
table, counted from the buyer's request or payment) and is stored on the request when it
is decided. The periodic check raises each alarm once, as an event in the invoice log that
the operations view lists: at 50 % and 80 % of the window, and when it has passed.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.engine.clock import utcnow
from app.engine.states import OPEN_REQUEST
from app.models import InvoiceEvent, InvoiceRequest
from app.services.unit_of_work import unit_of_work

log = logging.getLogger(__name__)
LEVELS = (("passed", 1.0), ("80%", 0.8), ("50%", 0.5))  # strongest first


def _window_start(request: InvoiceRequest) -> datetime | None:
    return request.requested_at or (request.order.paid_at if request.order else None) or request.created_at


def level_of(request: InvoiceRequest, now: datetime) -> str | None:
    if request.deadline_at is None:
        return None
    start = _window_start(request)
    if start is None or request.deadline_at <= start:
        return "passed" if now >= request.deadline_at else None
    elapsed = (now - start) / (request.deadline_at - start)
    for name, share in LEVELS:
        if elapsed >= share:
            return name
    return None


def check_deadlines(now: datetime | None = None) -> dict[str, int]:
    now = now or utcnow()
    raised: dict[str, int] = {}
    with unit_of_work() as work:
        session = work.session
        requests = session.scalars(
            select(InvoiceRequest).where(InvoiceRequest.status.in_(sorted(OPEN_REQUEST)),
                                         InvoiceRequest.deadline_at.is_not(None))
        ).all()
        for request in requests:
            level = level_of(request, now)
            if level is None or request.deadline_at is None or _already(session, request.id, level):
                continue
            due = request.deadline_at.isoformat()
            work.record("deadline_alarm", order_pk=request.order_pk, request_id=request.id,
                        data={"level": level, "deadline_at": due, "status": request.status})
            log.warning("invoicing deadline %s for request %s (%s, due %s)", level, request.id, request.status, due)
            raised[level] = raised.get(level, 0) + 1
    return raised


def _already(session: Session, request_id: int, level: str) -> bool:
    events = session.scalars(select(InvoiceEvent.data).where(InvoiceEvent.request_id == request_id,
                                                             InvoiceEvent.kind == "deadline_alarm")).all()
    return any((data or {}).get("level") == level for data in events)


def open_alarms(session: Session, limit: int = 100) -> list[tuple[InvoiceRequest, str]]:
    """Requests still open whose deadline raised an alarm (for the operations view)."""
    now = utcnow()
    rows = session.scalars(
        select(InvoiceRequest).where(InvoiceRequest.status.in_(sorted(OPEN_REQUEST)), InvoiceRequest.deadline_at.is_not(None))
        .order_by(InvoiceRequest.deadline_at).limit(limit * 5)
    ).all()
    out = [(r, level) for r in rows if (level := level_of(r, now))]
    return out[:limit]
