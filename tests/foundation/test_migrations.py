"""Alembic is the only way the schema is made: it must match the models on both databases."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from app import db as kdb
from app.db import Base
from app.migrate import downgrade, heads, upgrade


def test_single_head():
    assert len(heads()) == 1


def test_head_matches_models(db_url):
    engine = kdb.make_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def _schema_diff(url: str) -> list:
    engine = kdb.make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    engine.dispose()
    return diff


def _app_role(db_url: str, owner_url: str) -> str | None:
    """The role the suite's application connects as, when it is not the owner (PostgreSQL)."""
    app_user = kdb.make_url_safe(db_url).username
    return app_user if app_user != kdb.make_url_safe(owner_url).username else None


def test_downgrade_one_step_and_back(db_url, owner_url):
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config, current

    head = ScriptDirectory.from_config(alembic_config(owner_url)).get_revision(heads()[0])
    downgrade(owner_url, "-1", app_role=_app_role(db_url, owner_url))
    assert current(owner_url) == head.down_revision
    assert _schema_diff(owner_url) != []  # the last migration's changes are gone
    upgrade(owner_url, app_role=_app_role(db_url, owner_url))
    assert current(owner_url) == head.revision
    assert _schema_diff(owner_url) == []


def test_empty_sqlite_file_upgrades_to_head(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
    upgrade(url)
    engine = kdb.make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == heads()[0]
    engine.dispose()


APPEND_ONLY = [
    ("admin_audit_log",
     "INSERT INTO admin_audit_log (at, username, action, target, details) VALUES (CURRENT_TIMESTAMP, 'u', 'a', 't', '{}')",
     "UPDATE admin_audit_log SET username = 'mallory'"),
    ("invoice_event",
     "INSERT INTO invoice_event (occurred_at, kind, actor, data) VALUES (CURRENT_TIMESTAMP, 'note', 'system', '{}')",
     "UPDATE invoice_event SET kind = 'forged'"),
]


@pytest.mark.parametrize(("table", "insert", "update"), APPEND_ONLY, ids=[a[0] for a in APPEND_ONLY])
def test_append_only_guards_fire_after_migrations(owner_url, table, insert, update):
    # As the owner: the triggers themselves refuse (the app role has not even the rights).
    engine = kdb.make_engine(owner_url)
    with engine.begin() as conn:
        conn.execute(text(insert))
    for stmt in (update, f"DELETE FROM {table}"):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text(stmt))
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 1
    engine.dispose()


def test_event_log_allows_sealing_once(db_url):
    engine = kdb.make_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text(APPEND_ONLY[1][1]))
        conn.execute(text("UPDATE invoice_event SET chain_seq = 1, prev_hash = 'p', hash = 'h'"))
    with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
        conn.execute(text("UPDATE invoice_event SET hash = 'other'"))
    engine.dispose()


def test_rows_from_before_0005_are_chained_by_the_next_sealing(db_url, owner_url, db_session):
    from app import ledger

    role = _app_role(db_url, owner_url)
    downgrade(owner_url, "0004", app_role=role)
    engine = kdb.make_engine(owner_url)
    with engine.begin() as conn:
        conn.execute(text(APPEND_ONLY[0][1]))
        conn.execute(text("INSERT INTO rule_set (name, created_at) VALUES ('r', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO rule_set_version (rule_set_id, number, action, published, document, "
                          "document_hash, author, created_at) SELECT id, 1, 'draft', false, '{}', 'h', 'a', "
                          "CURRENT_TIMESTAMP FROM rule_set"))
    engine.dispose()
    upgrade(owner_url, app_role=role)
    assert ledger.seal(db_session) == 2
    db_session.commit()
    for chain in (ledger.AUDIT_LOG, ledger.RULE_VERSIONS):
        ok, message = ledger.verify(db_session, chain)
        assert ok and message.startswith("1 "), message
    # Sealed once: the guards of 0005 refuse a second sealing UPDATE, as for events.
    engine = kdb.make_engine(owner_url)
    for table in ("admin_audit_log", "rule_set_version"):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as conn:
            conn.execute(text(f"UPDATE {table} SET hash = 'other'"))
    engine.dispose()
