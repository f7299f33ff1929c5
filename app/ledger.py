"""The tamper-evident invoice event log.

Events are appended inside the business transaction (no hash yet, so concurrent workers never
contend for the chain head): services record them through their unit of work
(app/services/unit_of_work.py), which inserts them with ``insert_rows``. ``seal`` — run by one writer at a time —
links unsealed events into the chain in id order: ``hash = sha256(prev_hash + canonical
event)``. ``verify`` recomputes the whole chain; any edit that slipped past the database
guards breaks it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.orm import Session

from app.db import table_of
from app.engine.clock import utcnow
from app.models.event_log import InvoiceEvent

GENESIS = "0" * 64


def event_row(
    kind: str,
    *,
    order_pk: int | None = None,
    request_id: int | None = None,
    invoice_id: int | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    actor: str = "system",
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An event as a row to insert (no hash yet: ``seal`` chains it later)."""
    return {"occurred_at": utcnow(), "kind": kind, "order_pk": order_pk, "request_id": request_id,
            "invoice_id": invoice_id, "from_state": from_state, "to_state": to_state, "actor": actor,
            "data": data or {}}


def insert_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert events made by ``event_row`` in one statement, in order (ids keep each story's order)."""
    session.connection().execute(table_of(InvoiceEvent).insert(), rows)


def _canonical(event: Any, chain_seq: int | None = None) -> bytes:
    """``event``: an InvoiceEvent or a row with the same attributes; ``chain_seq`` overrides
    the event's own (a row being sealed has none yet)."""
    occurred: datetime = event.occurred_at
    payload = {
        "id": event.id,
        "occurred_at": occurred.isoformat(timespec="microseconds"),
        "order_pk": event.order_pk,
        "request_id": event.request_id,
        "invoice_id": event.invoice_id,
        "kind": event.kind,
        "from_state": event.from_state,
        "to_state": event.to_state,
        "actor": event.actor,
        "data": event.data,
        "chain_seq": event.chain_seq if chain_seq is None else chain_seq,
    }
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def event_hash(prev_hash: str, event: Any, chain_seq: int | None = None) -> str:
    return hashlib.sha256(prev_hash.encode() + _canonical(event, chain_seq)).hexdigest()


def _lock_chain(session: Session) -> None:
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        # One sealer at a time across hosts; released at commit.
        session.execute(text("SELECT pg_advisory_xact_lock(7411001)"))


def seal(session: Session, limit: int = 5000) -> int:
    """Chain up to ``limit`` unsealed events; returns how many were sealed. Commit after."""
    _lock_chain(session)
    head = session.execute(
        select(InvoiceEvent.chain_seq, InvoiceEvent.hash)
        .where(InvoiceEvent.chain_seq.is_not(None))
        .order_by(InvoiceEvent.chain_seq.desc())
        .limit(1)
    ).first()
    seq, prev = 0, GENESIS
    if head is not None and head[0] is not None and head[1] is not None:  # sealed rows carry both
        seq, prev = head[0], head[1]
    # Plain rows and one executemany UPDATE: sealing keeps pace with ~10 events per invoice
    # at full load (ORM objects cost several times more per event).
    table = table_of(InvoiceEvent)
    columns = [table.c[name] for name in ("id", "occurred_at", "order_pk", "request_id", "invoice_id", "kind",
                                          "from_state", "to_state", "actor", "data")]
    session.flush()
    pending = session.execute(select(*columns).where(table.c.hash.is_(None)).order_by(table.c.id).limit(limit)).all()
    updates = []
    for row in pending:
        seq += 1
        digest = event_hash(prev, row, chain_seq=seq)
        updates.append({"b_id": row.id, "b_seq": seq, "b_prev": prev, "b_hash": digest})
        prev = digest
    if updates:
        session.connection().execute(
            update(table).where(table.c.id == bindparam("b_id"))
            .values(chain_seq=bindparam("b_seq"), prev_hash=bindparam("b_prev"), hash=bindparam("b_hash")),
            updates)
    return len(pending)


def verify(session: Session) -> tuple[bool, str]:
    """Recompute the chain. Returns (ok, message naming the first broken link)."""
    prev = GENESIS
    expected_seq = 0
    count = 0
    for event in session.scalars(
        select(InvoiceEvent).where(InvoiceEvent.chain_seq.is_not(None)).order_by(InvoiceEvent.chain_seq)
    ).yield_per(1000):
        expected_seq += 1
        if event.chain_seq != expected_seq:
            return False, f"gap in the chain before event {event.id} (seq {event.chain_seq}, expected {expected_seq})"
        if event.prev_hash != prev or event_hash(prev, event) != event.hash:
            return False, f"event {event.id} (seq {event.chain_seq}) does not match its hash"
        prev = event.hash
        count += 1
    unsealed = session.scalar(select(func.count()).select_from(InvoiceEvent).where(InvoiceEvent.hash.is_(None)))
    return True, f"{count} events verified, {unsealed} awaiting sealing"
