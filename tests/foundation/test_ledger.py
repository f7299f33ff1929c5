"""The invoice event log is append-only in the database and hash-chained."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from app import db as kdb
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


def test_database_refuses_rewriting_history(db_session, owner_url):
    _events(db_session, 2)
    ledger.seal(db_session)
    db_session.commit()
    # The triggers refuse even the owner (the app role lacks the right: test_db_roles.py).
    engine = kdb.make_engine(owner_url)
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE invoice_event SET to_state = 'forged' WHERE id = 1"))
    engine.dispose()


def test_verify_detects_tampering_that_bypassed_the_guards(db_session, owner_url):
    _events(db_session, 4)
    ledger.seal(db_session)
    db_session.commit()
    # Simulate someone with DDL rights (the owner) dropping the guard, editing a row and restoring it.
    engine = kdb.make_engine(owner_url)
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.execute(text("DROP TRIGGER invoice_event_no_update"))
        else:
            conn.execute(text("ALTER TABLE invoice_event DISABLE TRIGGER invoice_event_append_only"))
        conn.execute(text("UPDATE invoice_event SET to_state = 'forged' WHERE chain_seq = 2"))
        if conn.dialect.name != "sqlite":
            conn.execute(text("ALTER TABLE invoice_event ENABLE TRIGGER invoice_event_append_only"))
    engine.dispose()
    db_session.rollback()
    ok, message = ledger.verify(db_session)
    assert not ok
    assert "seq 2" in message


def test_every_ledger_table_is_guarded():
    assert {"invoice_event", "admin_audit_log", "rule_set_version"} <= set(GUARDED)
