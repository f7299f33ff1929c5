"""Least privilege: the application's role owns nothing and cannot undo the ledgers' guards.

On PostgreSQL the suite connects as that role (tests/conftest.py ``db_url``) and migrates as
the owner (``owner_url``); on SQLite there are no roles and these tests only check the settings.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from app import db as kdb
from app.migrate import app_role
from app.settings import Settings


def _postgres_only(url: str) -> None:
    if not url.startswith("postgresql"):
        pytest.skip("roles and privileges are PostgreSQL's")


ATTEMPTS = {
    "truncate": "TRUNCATE invoice_event",
    "truncate_audit": "TRUNCATE admin_audit_log",
    "disable_trigger": "ALTER TABLE invoice_event DISABLE TRIGGER invoice_event_append_only",
    "disable_all_triggers": "ALTER TABLE rule_set_version DISABLE TRIGGER USER",
    "drop_trigger": "DROP TRIGGER invoice_event_append_only ON invoice_event",
    "drop_truncate_trigger": "DROP TRIGGER admin_audit_log_no_truncate ON admin_audit_log",
    "replace_guard_function": "CREATE OR REPLACE FUNCTION invoice_event_append_only() RETURNS trigger AS $$ "
                              "BEGIN RETURN NEW; END; $$ LANGUAGE plpgsql",
    "create_table": "CREATE TABLE scratch (id int)",
    "drop_table": "DROP TABLE invoice_event CASCADE",
    "delete_ledger_row": "DELETE FROM invoice_event",
    "update_ledger_column": "UPDATE invoice_event SET actor = 'mallory'",
    "replica_role": "SET session_replication_role = replica",
}


@pytest.mark.parametrize("statement", list(ATTEMPTS.values()), ids=list(ATTEMPTS))
def test_app_role_cannot_undo_the_guards(db_url, statement):
    _postgres_only(db_url)
    engine = kdb.make_engine(db_url)
    with pytest.raises(DatabaseError, match=r"permission denied|must be owner|must be superuser"), \
            engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


def test_app_role_owns_nothing_and_works(db_url, owner_url):
    _postgres_only(db_url)
    engine = kdb.make_engine(db_url)
    with engine.begin() as conn:
        me = conn.execute(text("SELECT current_user")).scalar()
        owned = conn.execute(text("SELECT count(*) FROM pg_tables WHERE tableowner = current_user")).scalar()
        assert conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")).scalar() is False
        # What it needs: read and write business tables, append and seal ledger rows.
        conn.execute(text("INSERT INTO invoice_event (occurred_at, kind, actor, data) "
                          "VALUES (CURRENT_TIMESTAMP, 'note', 'system', '{}')"))
        conn.execute(text("UPDATE invoice_event SET chain_seq = 1, prev_hash = 'p', hash = 'h'"))
        conn.execute(text("INSERT INTO merchant (name, created_at) VALUES ('m', CURRENT_TIMESTAMP)"))
        conn.execute(text("UPDATE merchant SET name = 'n'"))
        conn.execute(text("DELETE FROM merchant"))
    engine.dispose()
    assert owned == 0
    assert me != kdb.make_url_safe(owner_url).username


def test_owner_truncate_is_refused_by_the_guards(owner_url):
    _postgres_only(owner_url)
    engine = kdb.make_engine(owner_url)
    for table in ("invoice_event", "admin_audit_log", "rule_set_version"):
        with pytest.raises(DatabaseError, match=f"{table} is append-only"), engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
    engine.dispose()


def _settings(**kw) -> Settings:
    return Settings(instance_path=kw.pop("instance_path", None), secret_key="s", encryption_key="e",  # type: ignore[arg-type]
                    redis_url=None, **kw)


def test_migrations_connect_as_the_owner_and_grant_the_app_role():
    sqlite = _settings(database_url="sqlite:///x.sqlite3")
    assert sqlite.migration_url == "sqlite:///x.sqlite3" and app_role(sqlite) is None
    split = _settings(database_url="postgresql+psycopg://kaipiao_app@db/kaipiao",
                      migration_database_url="postgresql+psycopg://kaipiao@db/kaipiao")
    assert split.migration_url == "postgresql+psycopg://kaipiao@db/kaipiao"
    assert app_role(split) == "kaipiao_app"
    same = _settings(database_url="postgresql+psycopg://kaipiao@db/kaipiao")
    assert same.migration_url == same.database_url and app_role(same) is None
    named = _settings(database_url="postgresql+psycopg://pgbouncer_user@db/kaipiao",
                      migration_database_url="postgresql+psycopg://kaipiao@db/kaipiao", database_app_role="kaipiao_app")
    assert app_role(named) == "kaipiao_app"


def test_settings_read_the_migration_url_and_role(monkeypatch, tmp_path):
    monkeypatch.setenv("KAIPIAO_DATABASE_URL", "postgresql+psycopg://kaipiao_app@db/kaipiao")
    monkeypatch.setenv("KAIPIAO_MIGRATION_DATABASE_URL", "postgresql+psycopg://kaipiao@db/kaipiao")
    monkeypatch.setenv("KAIPIAO_DATABASE_APP_ROLE", "app")
    monkeypatch.setenv("KAIPIAO_LEDGER_HMAC_KEY", "k")
    settings = Settings.from_env(tmp_path)
    assert settings.migration_url == "postgresql+psycopg://kaipiao@db/kaipiao"
    assert (settings.database_app_role, settings.ledger_hmac_key) == ("app", "k")
