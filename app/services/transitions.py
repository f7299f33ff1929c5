"""Writing the moves of the state machines (the statuses and tables: app/engine/states.py).

Every transition is a guarded UPDATE (``WHERE status IN (allowed sources)``): from the wrong
state it changes nothing and raises ``InvalidTransition``. Each successful transition appends
an event to the invoice log in the same transaction. In a batched unit of work the moves of
loaded objects are checked at once and written together (``PendingMoves``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from app.db import table_of
from app.engine.clock import utcnow
from app.engine.states import (
    INVOICE_TRANSITIONS,
    REQUEST_TRANSITIONS,
    InvoiceStatus,
    RequestStatus,
    sources_of,
)
from app.errors import InvalidTransition, Problem
from app.models import Invoice, InvoiceRequest
from app.services.unit_of_work import UnitOfWork

Table = Mapping[Any, frozenset[Any]]
# The allowed sources of every target, sorted (a stable IN list for the statement cache).
_SOURCES: dict[int, dict[str, list[str]]] = {
    id(REQUEST_TRANSITIONS): {str(to): sorted(sources_of(REQUEST_TRANSITIONS, to)) for to in RequestStatus},
    id(INVOICE_TRANSITIONS): {str(to): sorted(sources_of(INVOICE_TRANSITIONS, to)) for to in InvoiceStatus},
}


def _sources(table: Table, to: str) -> list[str]:
    try:
        return _SOURCES[id(table)][to]
    except KeyError:
        raise ValueError(f"unknown state {to!r}") from None


def _guarded(session: Session, model: Any, table: Table, obj_id: int, to: str, expect: str | None,
             values: dict[str, Any], expect_version: int | None = None) -> str:
    allowed = _sources(table, to)
    if expect is not None:
        if expect not in allowed:
            raise InvalidTransition(Problem("status", "invalid_transition", f"{expect} → {to} is not a transition"))
        allowed = [expect]
    current = expect or session.query(model.status).filter(model.id == obj_id).scalar()
    where = [model.id == obj_id, model.status.in_(allowed)]
    if expect_version is not None:
        # Optimistic lock: of two workers that read the same version, one wins.
        where.append(model.state_version == expect_version)
    result = session.execute(
        update(model)
        .where(*where)
        .values(status=to, state_version=model.state_version + 1, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise InvalidTransition(Problem(
            "status", "invalid_transition",
            f"{model.__tablename__} {obj_id}: cannot go to {to} from {current or 'missing'}",
        ))
    return str(current)


@dataclass
class _Move:
    """Several moves of one row inside a batch, written as one guarded UPDATE."""

    table: Any
    row_id: int
    first_status: str
    first_version: int
    to: str = ""
    count: int = 0
    values: dict[str, Any] = field(default_factory=dict)


class PendingMoves:
    """The transitions of a batched unit of work, checked when made and written by ``write``:
    one executemany UPDATE per shape, guarded on each row's status *and* state_version as
    loaded. A row changed by someone else since it was loaded makes ``write`` raise
    ``InvalidTransition`` for the batch."""

    def __init__(self) -> None:
        self.moves: dict[tuple[str, int], _Move] = {}

    @property
    def pending(self) -> bool:
        return bool(self.moves)

    def move(self, obj: Any, table: Table, to: str, expect: str | None, expect_version: int | None,
             values: dict[str, Any]) -> str:
        model = type(obj)
        current = obj.status
        if (expect is not None and expect != current) or current not in _sources(table, to) or (
                expect_version is not None and expect_version != obj.state_version):
            raise InvalidTransition(Problem(
                "status", "invalid_transition", f"{model.__tablename__} {obj.id}: cannot go to {to} from {current}"))
        key = (model.__tablename__, obj.id)
        move = self.moves.get(key)
        if move is None:
            move = self.moves[key] = _Move(table_of(model), obj.id, current, obj.state_version or 0)
        move.to, move.count = to, move.count + 1
        move.values.update(values)
        return str(current)

    def write(self, session: Session) -> None:
        if not self.moves:
            return
        moves, self.moves = list(self.moves.values()), {}
        session.flush()
        now = utcnow()
        shapes: dict[tuple[Any, tuple[str, ...]], list[dict[str, Any]]] = {}
        for move in moves:
            names = tuple(sorted(move.values))
            params = {"b_id": move.row_id, "b_status": move.first_status, "b_version": move.first_version,
                      "b_to": move.to, "b_new_version": move.first_version + move.count, "b_now": now}
            params.update({f"v_{name}": move.values[name] for name in names})
            shapes.setdefault((move.table, names), []).append(params)
        connection = session.connection()
        for (table, names), rows in shapes.items():
            statement = (
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.status == bindparam("b_status"),
                       table.c.state_version == bindparam("b_version"))
                .values(status=bindparam("b_to"), state_version=bindparam("b_new_version"),
                        updated_at=bindparam("b_now", type_=table.c.updated_at.type),
                        **{name: bindparam(f"v_{name}", type_=table.c[name].type) for name in names})
            )
            result = connection.execute(statement, rows)
            if result.rowcount != len(rows):
                raise InvalidTransition(Problem(
                    "status", "invalid_transition",
                    f"{table.name}: {len(rows) - result.rowcount} of {len(rows)} rows changed since they were loaded"))


def _sync(obj: Any, to: str, values: dict[str, Any]) -> None:
    """Mirror the UPDATE onto a loaded object without a reload (no extra SELECT)."""
    set_committed_value(obj, "status", to)
    set_committed_value(obj, "state_version", (obj.state_version or 0) + 1)
    for key, value in values.items():
        set_committed_value(obj, key, value)


def move_request(work: UnitOfWork, request: InvoiceRequest | int, to: RequestStatus, *,
                 expect: RequestStatus | str | None = None, expect_version: int | None = None,
                 actor: str = "system", reason: str | None = None, data: dict[str, Any] | None = None,
                 order_pk: int | None = None, **values: Any) -> None:
    """Transition an invoice request; ``values`` are other columns set in the same UPDATE."""
    session = work.session
    request_id = request if isinstance(request, int) else request.id
    if reason is not None:
        values["status_reason"] = reason[:500]
    if work.moves is not None and isinstance(request, int):
        request = session.get(InvoiceRequest, request_id) or request
    if work.moves is not None and not isinstance(request, int):
        previous = work.moves.move(request, REQUEST_TRANSITIONS, to, expect, expect_version, values)
    else:
        previous = _guarded(session, InvoiceRequest, REQUEST_TRANSITIONS, request_id, to, expect, values,
                            expect_version)
    if order_pk is None:
        order_pk = (request.order_pk if not isinstance(request, int) else
                    session.query(InvoiceRequest.order_pk).filter(InvoiceRequest.id == request_id).scalar())
    work.record("request_transition", order_pk=order_pk, request_id=request_id, from_state=previous,
                to_state=to, actor=actor, data={**(data or {}), **({"reason": reason} if reason else {})})
    if not isinstance(request, int):
        _sync(request, to, values)


_COUNTED = frozenset({"issued", "failed", "delivered"})  # app.metrics.INVOICE_COUNTERS


def move_invoice(work: UnitOfWork, invoice: Invoice | int, to: InvoiceStatus, *,
                 expect: InvoiceStatus | str | None = None, actor: str = "system", reason: str | None = None,
                 data: dict[str, Any] | None = None, **values: Any) -> None:
    session = work.session
    if isinstance(invoice, int):
        # From the identity map when the caller loaded its batch; one SELECT otherwise.
        invoice = session.get(Invoice, invoice) or invoice
    if isinstance(invoice, int):
        _guarded(session, Invoice, INVOICE_TRANSITIONS, invoice, to, expect, values)  # raises: it is missing
        raise InvalidTransition(Problem("status", "invalid_transition", f"invoice {invoice} is missing"))
    if work.moves is not None:
        previous = work.moves.move(invoice, INVOICE_TRANSITIONS, to, expect, None, values)
    else:
        previous = _guarded(session, Invoice, INVOICE_TRANSITIONS, invoice.id, to, expect, values)
    work.record("invoice_transition", order_pk=invoice.order_pk, request_id=invoice.request_id,
                invoice_id=invoice.id, from_state=previous, to_state=to, actor=actor,
                data={**(data or {}), **({"reason": reason} if reason else {})})
    if to in _COUNTED:  # issued, failed, delivered: counted in the metrics at the commit
        work.tally("invoice", invoice.id, invoice.seller_entity_id, invoice.color, str(to))
    _sync(invoice, to, values)
