"""The invoice event log is append-only in the database and hash-chained."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from app import ledger
from app.guards import GUARDED
from app.models import InvoiceEvent
from app.services.unit_of_work import UnitOfWork


def _events(session, n: int) -> None:
    work = UnitOfWork(session)
    for i in range(n):
        work.record("transition", from_state="received", to_state=f"s{i}", data={"i": i, "amount": "9.90"})
    session.commit()  # writes what the unit of work holds


def test_seal_and_verify(db_session):
    _events(db_session, 5)
    assert ledger.seal(db_session) == 5
    db_session.commit()
    _events(db_session, 3)
    assert ledger.seal(db_session) == 3
    db_session.commit()
    ok, message = ledger.verify(db_session)
    assert ok, message
    assert "8 events verified" in message
    seqs = [e.chain_seq for e in db_session.query(InvoiceEvent).order_by(InvoiceEvent.chain_seq)]
    assert seqs == list(range(1, 9))


def test_database_refuses_rewriting_history(db_session):
    _events(db_session, 2)
    ledger.seal(db_session)
    db_session.commit()
    with pytest.raises(DatabaseError, match="append-only"):
        db_session.execute(text("UPDATE invoice_event SET to_state = 'forged' WHERE id = 1"))
        db_session.commit()
    db_session.rollback()


def test_verify_detects_tampering_that_bypassed_the_guards(db_session):
    _events(db_session, 4)
    ledger.seal(db_session)
    db_session.commit()
    # Simulate someone with DDL rights dropping the guard, editing a row and restoring it.
    dialect = db_session.get_bind().dialect.name
    if dialect == "sqlite":
        db_session.execute(text("DROP TRIGGER invoice_event_no_update"))
    else:
        db_session.execute(text("ALTER TABLE invoice_event DISABLE TRIGGER invoice_event_append_only"))
    db_session.execute(text("UPDATE invoice_event SET to_state = 'forged' WHERE chain_seq = 2"))
    db_session.commit()
    ok, message = ledger.verify(db_session)
    assert not ok
    assert "seq 2" in message
    if dialect != "sqlite":
        db_session.execute(text("ALTER TABLE invoice_event ENABLE TRIGGER invoice_event_append_only"))
        db_session.commit()


def test_every_ledger_table_is_guarded():
    assert {"invoice_event", "admin_audit_log", "rule_set_version"} <= set(GUARDED)
