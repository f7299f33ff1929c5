"""Engine and session handling shared by the web app, the CLI and the workers.

Plain SQLAlchemy 2 (no Flask-SQLAlchemy) so that workers, the CLI and the web app use the
same session factory.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import MetaData, Table, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, scoped_session, sessionmaker

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


SessionFactory = sessionmaker(expire_on_commit=False)
# One session per thread / request; the web app removes it at teardown.
session: scoped_session[Session] = scoped_session(SessionFactory)
_engine: Engine | None = None


BUSY_TIMEOUT_MS = 10000


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # Take transaction control away from pysqlite (its implicit BEGIN breaks SAVEPOINT);
    # SQLAlchemy's "begin" event below emits our own BEGIN.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()


_READ_ONLY = "kaipiao_read_only"  # conn.info: in a deferred transaction that has not written yet


def _sqlite_begin(conn) -> None:
    # Units of work (``transaction()``) take the write lock up front, so two processes never
    # both read-then-write and fail with SQLITE_BUSY_SNAPSHOT; other transactions (web
    # requests) begin deferred, so reads never block writers, and take the lock at their
    # first write (``_sqlite_before_write``).
    immediate = conn.get_execution_options().get("kaipiao_write", False)
    conn.info[_READ_ONLY] = False
    if immediate:
        _begin_immediate(conn.exec_driver_sql)
    else:
        conn.exec_driver_sql("BEGIN")
        conn.info[_READ_ONLY] = True


def _sqlite_before_write(conn, cursor, statement, _parameters, context, _executemany) -> None:
    # A deferred transaction that has read cannot wait for the write lock: SQLite answers
    # its first write with SQLITE_BUSY at once while another connection writes (the busy
    # handler is not used for that upgrade) and with SQLITE_BUSY_SNAPSHOT when one has
    # committed since its read. So before its first statement that is not a SELECT, it ends
    # its read snapshot and begins IMMEDIATE, which waits. What it read may then be older
    # than what it writes, as under PostgreSQL's READ COMMITTED. Cheaper than the
    # alternatives: BEGIN IMMEDIATE for every POST would hold writers off through read-only
    # POSTs (replay, dry-run, the password check), and retrying a failed request would
    # repeat what it did outside the database.
    if not conn.info.get(_READ_ONLY):
        return
    compiled = getattr(context, "compiled", None)
    if statement.lstrip()[:6].upper() == "SELECT" or getattr(getattr(compiled, "statement", None),
                                                               "is_select", False):
        return
    conn.info[_READ_ONLY] = False
    cursor.execute("COMMIT")  # it has only read: nothing is lost
    _begin_immediate(cursor.execute)


def _begin_immediate(execute: Callable[[str], object]) -> None:
    # Waits for the write lock up to busy_timeout, trying every millisecond: SQLite's own
    # busy handler backs off to one try every 100 ms, and so loses nearly every race against
    # workers that take the lock again right after releasing it, and times out under load.
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                execute("BEGIN IMMEDIATE")
                return
            except (sqlite3.OperationalError, OperationalError) as exc:
                code = getattr(getattr(exc, "orig", exc), "sqlite_errorcode", 0)
                if code & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(0.001)
    finally:
        execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def table_of(model: Any) -> Table:
    """A mapped class's Core table, for bulk statements (executemany) that skip the ORM."""
    return cast(Table, model.__table__)


def make_engine(url: str, **kwargs: Any) -> Engine:
    # A database error's message never carries the statement's values (buyer titles, tax ids,
    # e-mail addresses): it is logged, and shown on the operations page.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"timeout": 30})
        eng = create_engine(url, **kwargs)
        event.listen(eng, "connect", _sqlite_pragmas)
        event.listen(eng, "begin", _sqlite_begin)
        event.listen(eng, "before_cursor_execute", _sqlite_before_write)
        return eng
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


def configure(url: str, **kwargs) -> Engine:
    """Bind the global session factory to ``url`` (idempotent for the same URL)."""
    global _engine
    if _engine is not None and str(_engine.url) == str(make_url_safe(url)) and not kwargs:
        return _engine
    if _engine is not None:
        _engine.dispose()
    _engine = make_engine(url, **kwargs)
    session.remove()
    SessionFactory.configure(bind=_engine)
    return _engine


def make_url_safe(url: str):
    from sqlalchemy.engine import make_url

    return make_url(url)


def get_engine() -> Engine:
    if _engine is None:
        raise RuntimeError("database not configured; call app.db.configure(url) or create_app()")
    return _engine


@contextmanager
def transaction() -> Iterator[Session]:
    """A unit of work in its own session: commit on success, roll back on error."""
    s = SessionFactory()
    if s.get_bind().dialect.name == "sqlite":
        s.connection(execution_options={"kaipiao_write": True})
    try:
        yield s
        s.commit()
    except BaseException:
        s.rollback()
        raise
    finally:
        s.close()
