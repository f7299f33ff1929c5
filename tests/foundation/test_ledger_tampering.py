"""Every tampering the audit tried is detected and its first bad row named (app/services/log_verification.py).

The tamperer is a database owner: on SQLite the test drops the triggers, on PostgreSQL it
connects as the owner and disables them; what stops it is the hash chains, the checkpoint
file in the instance folder and, when set, the checkpoints' HMAC key.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import select, text, update

from app import db as kdb
from app import ledger
from app.models import AdminAuditLog, Order
from app.services import ledger_sealing
from app.services.log_verification import Report, last_report, save_report, summary, verify_all
from app.services.rule_versions import load_shipped_defaults
from app.services.unit_of_work import UnitOfWork
from tests.factories import gen_order_doc, gen_shop
from tests.tampering import rehash_from, tamper

KEY = "checkpoint-key-kept-outside-the-database"


def _events(session, n: int, actor: str = "system") -> None:
    work = UnitOfWork(session)
    for i in range(n):
        work.record("transition", from_state="received", to_state=f"s{i}", actor=actor,
                    data={"i": i, "amount": "9.90"})
    session.commit()


def _seal_and_checkpoint(settings) -> None:
    """What the periodic job does: seal the backlog, then checkpoint the heads."""
    ledger_sealing.seal_backlog(settings=settings)


def _check(db_session, settings, key: str | None = None) -> Report:
    db_session.rollback()  # see what the tamperer committed
    return verify_all(db_session, settings.instance_path, key)


def _section(report: Report, name: str):
    return next(s for s in report.sections if s.name == name)


def _event_id(db_session, seq: int) -> int:
    table = ledger.INVOICE_EVENTS.table
    return db_session.execute(select(table.c.id).where(table.c.chain_seq == seq)).scalar_one()


@pytest.fixture
def sealed_log(db_session, settings):
    """8 events sealed in two runs (checkpoints at seq 4 and 8), 2 audit rows, the shipped rules."""
    _events(db_session, 4)
    _seal_and_checkpoint(settings)
    _events(db_session, 4)
    db_session.add_all([AdminAuditLog(username="alice", action="edit", target="Shop:1", details={"name": "x"}),
                        AdminAuditLog(username="bob", action="create", target="TaxCode:2", details={})])
    load_shipped_defaults(db_session)
    db_session.commit()
    _seal_and_checkpoint(settings)
    report = _check(db_session, settings)
    assert report.ok, summary(report)
    return report


# ---------------------------------------------------------------------------------- clean


def test_a_clean_log_verifies_and_checkpoints_follow_the_heads(db_session, settings, sealed_log):
    lines = ledger.checkpoint_path(settings.instance_path).read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["heads"]["invoice_event"]["seq"] == 4 and second["heads"]["invoice_event"]["seq"] == 8
    assert second["prev"] == ledger.line_hash(lines[0])
    assert second["heads"]["admin_audit_log"]["seq"] == 2
    assert second["heads"]["rule_set_version"]["seq"] == 2
    assert "hmac" not in second
    _seal_and_checkpoint(settings)  # nothing moved: no new line
    assert len(ledger.checkpoint_path(settings.instance_path).read_text().splitlines()) == 2
    assert {s.name: s.rows for s in sealed_log.sections}["invoice_event"] == 8


def test_the_periodic_job_seals_and_checkpoints(db_session, settings):
    from app.jobs import tasks

    _events(db_session, 3)
    assert tasks.seal_ledger() == 3
    line = json.loads(ledger.checkpoint_path(settings.instance_path).read_text())
    assert line["n"] == 1 and line["heads"]["invoice_event"]["seq"] == 3


def test_every_column_that_matters_is_hashed_and_guarded():
    from app.guards import GUARDED

    for chain in ledger.LEDGERS:
        table = chain.table
        assert set(chain.columns) == set(table.c.keys()) - {"chain_seq", "prev_hash", "hash"}
        assert set(GUARDED[chain.name].immutable) == set(chain.columns)


# ----------------------------------------------------------------------- the invoice log


def test_edited_event_payload_is_named(db_session, settings, owner_url, sealed_log):
    target = _event_id(db_session, 3)
    with tamper(owner_url, "invoice_event") as conn:
        conn.execute(text("UPDATE invoice_event SET data = :d WHERE chain_seq = 3"),
                     {"d": json.dumps({"i": 2, "amount": "0.01"})})
    report = _check(db_session, settings)
    first = _section(report, "invoice_event").first
    assert not report.ok
    assert (first.row_id, first.chain_seq, first.code) == (target, 3, "hash_mismatch")
    assert "edited" in first.message


def test_edited_event_actor_is_named(db_session, settings, owner_url, sealed_log):
    target = _event_id(db_session, 5)
    with tamper(owner_url, "invoice_event") as conn:
        conn.execute(text("UPDATE invoice_event SET actor = 'mallory' WHERE chain_seq = 5"))
    first = _section(_check(db_session, settings), "invoice_event").first
    assert (first.row_id, first.chain_seq, first.code) == (target, 5, "hash_mismatch")


def test_deleted_middle_event_is_named(db_session, settings, owner_url, sealed_log):
    after = _event_id(db_session, 4)
    with tamper(owner_url, "invoice_event") as conn:
        conn.execute(text("DELETE FROM invoice_event WHERE chain_seq = 3"))
    first = _section(_check(db_session, settings), "invoice_event").first
    assert (first.row_id, first.chain_seq, first.code) == (after, 4, "missing_rows")
    assert "seq 3 missing" in first.message


def test_deleted_last_five_events_are_caught_by_the_checkpoint(db_session, settings, owner_url, sealed_log):
    last = _event_id(db_session, 8)
    with tamper(owner_url, "invoice_event") as conn:
        conn.execute(text("DELETE FROM invoice_event WHERE chain_seq > 3"))
    db_session.rollback()
    ok, _message = ledger.verify(db_session)
    assert ok  # what is left is a consistent chain: only the checkpoint knows
    first = _section(_check(db_session, settings), "invoice_event").first
    assert (first.row_id, first.chain_seq, first.code) == (last, 4, "rows_deleted")
    assert "seq 4..8" in first.message


def test_edit_and_rehash_is_caught_by_the_checkpoint(db_session, settings, owner_url, sealed_log):
    at_checkpoint = _event_id(db_session, 8)
    with tamper(owner_url, "invoice_event") as conn:
        conn.execute(text("UPDATE invoice_event SET actor = 'mallory' WHERE chain_seq = 6"))
        rehash_from(conn, ledger.INVOICE_EVENTS, 6)
    db_session.rollback()
    assert ledger.verify(db_session)[0]  # the chain alone looks fine
    first = _section(_check(db_session, settings), "invoice_event").first
    assert (first.row_id, first.chain_seq, first.code) == (at_checkpoint, 8, "chain_rewritten")
    assert "between seq 5 and seq 8" in first.message  # the checkpoint at seq 4 still matches


def test_rewritten_checkpoints_fail_their_hmac(db_session, settings, owner_url):
    """With the key, an attacker who rewrites the chain and the checkpoint file to match is caught."""
    keyed = dataclasses.replace(settings, ledger_hmac_key=KEY)
    _events(db_session, 6)
    _seal_and_checkpoint(keyed)
    assert verify_all(db_session, settings.instance_path, KEY).ok
    with tamper(owner_url, "invoice_event") as conn:
        conn.execute(text("UPDATE invoice_event SET actor = 'mallory' WHERE chain_seq = 2"))
        rehash_from(conn, ledger.INVOICE_EVENTS, 2)
    # ... and writes a checkpoint file of its own, without the key
    path = ledger.checkpoint_path(settings.instance_path)
    path.unlink()
    with kdb.transaction() as session:
        ledger.write_checkpoint(session, path, hmac_key="a guess")
    report = _check(db_session, settings, KEY)
    assert report.hmac_checked
    first = _section(report, ledger.CHECKPOINT_FILE).first
    assert (first.row_id, first.code) == (1, "bad_hmac")
    # Without the key configured the forged file would pass: the key is what stops this attacker.
    assert _check(db_session, settings).ok


def test_checkpoint_lines_are_chained(db_session, settings, sealed_log):
    path = ledger.checkpoint_path(settings.instance_path)
    lines = path.read_text().splitlines()
    forged = json.loads(lines[0])
    forged["heads"]["invoice_event"]["hash"] = "f" * 64
    path.write_text(json.dumps(forged) + "\n" + lines[1] + "\n")
    first = _section(_check(db_session, settings), ledger.CHECKPOINT_FILE).first
    assert (first.row_id, first.code) == (2, "broken_link")


def test_a_missing_checkpoint_file_is_reported(db_session, settings, sealed_log):
    ledger.checkpoint_path(settings.instance_path).unlink()
    first = _section(_check(db_session, settings), "invoice_event").first
    assert first.code == "no_checkpoints"


# ------------------------------------------------------------------ audit log and rule versions


def test_edited_audit_row_is_named(db_session, settings, owner_url, sealed_log):
    target = db_session.scalar(select(AdminAuditLog.id).where(AdminAuditLog.username == "alice"))
    with tamper(owner_url, "admin_audit_log") as conn:
        conn.execute(text("UPDATE admin_audit_log SET username = 'bob' WHERE id = :i"), {"i": target})
    first = _section(_check(db_session, settings), "admin_audit_log").first
    assert (first.row_id, first.code) == (target, "hash_mismatch")


def test_edited_published_rule_version_is_named(db_session, settings, owner_url, sealed_log):
    table = ledger.RULE_VERSIONS.table
    published = db_session.execute(select(table.c.id, table.c.document).where(table.c.published.is_(True))).one()
    document = {**published.document, "description": "issue everything at once"}
    with tamper(owner_url, "rule_set_version") as conn:
        conn.execute(update(table).where(table.c.id == published.id).values(document=document))
    section = _section(_check(db_session, settings), "rule_set_version")
    assert (section.first.row_id, section.first.code) == (published.id, "hash_mismatch")
    assert {(f.row_id, f.code) for f in section.findings} == {(published.id, "hash_mismatch"),
                                                              (published.id, "document_hash")}


def test_rule_version_document_hash_is_checked_before_sealing(db_session, settings, owner_url):
    load_shipped_defaults(db_session)
    db_session.commit()
    table = ledger.RULE_VERSIONS.table
    with tamper(owner_url, "rule_set_version") as conn:
        conn.execute(update(table).where(table.c.number == 1).values(document_hash="0" * 64))
    first = _section(_check(db_session, settings), "rule_set_version").first
    assert first.code == "document_hash" and first.chain_seq is None


def test_edited_order_document_is_named(db_session, settings, owner_url):
    from app.services.intake import document_hash

    shop = gen_shop(db_session)
    doc = gen_order_doc(shop_code=shop.shop_code)
    order = Order(platform=shop.platform, shop_code=shop.shop_code, order_no=doc["order_id"], shop_id=shop.id,
                  status="received", document=doc, document_hash=document_hash(doc))
    db_session.add(order)
    db_session.commit()
    assert _check(db_session, settings).ok
    engine = kdb.make_engine(owner_url)
    with engine.begin() as conn:
        conn.execute(update(Order.__table__).where(Order.__table__.c.id == order.id)
                     .values(document={**doc, "buyer_note": "改过"}))
    engine.dispose()
    first = _section(_check(db_session, settings), "sales_order").first
    assert (first.row_id, first.code) == (order.id, "document_hash")


# ------------------------------------------------------------------------------ the command


def _commands():
    import click

    from app.cli.ledger import register

    @click.group()
    def kaipiao() -> None:
        pass

    register(kaipiao)
    return kaipiao


def test_verify_log_command(db_session, settings, owner_url, sealed_log, app, runner):
    result = runner.invoke(cli=_commands(), args=["verify-log"])
    assert result.exit_code == 0, result.output
    assert "ledger check: all ledgers verified" in result.output
    assert last_report(settings.instance_path)["ok"] is True
    target = _event_id(db_session, 2)
    with tamper(owner_url, "invoice_event") as conn:
        conn.execute(text("UPDATE invoice_event SET to_state = 'issued' WHERE chain_seq = 2"))
    result = runner.invoke(cli=_commands(), args=["verify-log"])
    assert result.exit_code == 1
    assert "invoice_event: BAD" in result.output and f"row {target} (seq 2)" in result.output
    assert "ledger check FAILED: invoice_event" in result.output
    saved = last_report(settings.instance_path)
    assert saved["ok"] is False
    bad = next(s for s in saved["sections"] if s["name"] == "invoice_event")
    assert bad["first"]["row_id"] == target


def test_save_report_round_trips(db_session, settings):
    report = verify_all(db_session, settings.instance_path)
    save_report(report, settings.instance_path)
    assert last_report(settings.instance_path)["checked_at"] == report.checked_at.isoformat()
