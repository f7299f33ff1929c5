"""The sandbox's SQLite store: one file, safe across threads and processes.

Every write runs in ``BEGIN IMMEDIATE`` (one writer at a time, no lost updates between the
check and the insert). Each thread keeps one connection of its own (``threading.local``, opened
on first use, never handed to another thread, reopened after a fork); other processes are kept
out by SQLite's file locks as before. A ``tx()`` opened inside another one on the same thread is
a SAVEPOINT of the outer transaction, so one HTTP call (nonce, fault decision, operation) or a
whole batch commits once. Money is integer fen. The unique constraints (serial, number, nonce)
are the last line of defence for idempotency even if two processes race.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS invoices (
    serial_no       TEXT PRIMARY KEY,
    provider_serial TEXT NOT NULL UNIQUE,
    color           TEXT NOT NULL,            -- blue | red
    kind            TEXT NOT NULL,            -- normal | special
    payload_hash    TEXT NOT NULL,
    payload         TEXT NOT NULL,            -- canonical JSON as accepted
    seller_tax_id   TEXT NOT NULL,
    buyer_name      TEXT NOT NULL,
    buyer_tax_id    TEXT,
    buyer_enterprise INTEGER NOT NULL,
    status          TEXT NOT NULL,            -- pending | issued | failed | cancelled
    number          TEXT UNIQUE,
    accepted_at     REAL NOT NULL,
    ready_at        REAL NOT NULL,
    issued_at       REAL,
    amount_fen      INTEGER NOT NULL,
    tax_fen         INTEGER NOT NULL,
    gross_fen       INTEGER NOT NULL,
    credit_month    TEXT NOT NULL,
    blue_number     TEXT,                     -- red: the blue invoice it reverses
    confirm_id      TEXT,
    red_reason      TEXT,
    fail_code       TEXT,
    fail_reason     TEXT
);
CREATE INDEX IF NOT EXISTS invoices_blue ON invoices(blue_number);
CREATE TABLE IF NOT EXISTS red_confirms (
    confirm_id   TEXT PRIMARY KEY,
    bill_no      TEXT NOT NULL UNIQUE,
    bill_uuid    TEXT NOT NULL UNIQUE,
    blue_number  TEXT NOT NULL,
    reason       TEXT NOT NULL,
    lines        TEXT NOT NULL,              -- canonical red lines JSON
    gross_fen    INTEGER NOT NULL,
    amount_fen   INTEGER NOT NULL,
    tax_fen      INTEGER NOT NULL,
    status       TEXT NOT NULL,              -- fapiao.md §8.2 codes
    created_at   REAL NOT NULL,
    confirm_at   REAL,                       -- when the simulated buyer confirms (NULL: admin only)
    red_serial   TEXT                        -- the red invoice that used it
);
CREATE TABLE IF NOT EXISTS seller_credit (  -- 授信额度 used, per seller (tax id) and Beijing month
    seller_tax_id TEXT NOT NULL,
    month         TEXT NOT NULL,
    used_fen      INTEGER NOT NULL,
    PRIMARY KEY (seller_tax_id, month)
);
CREATE TABLE IF NOT EXISTS nonces (
    app_key TEXT NOT NULL,
    nonce   TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (app_key, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_seen ON nonces(seen_at);  -- pruning must not scan the table
CREATE TABLE IF NOT EXISTS tokens (
    token      TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS retries (       -- 开票重试 per serial and Beijing day (the daily cap)
    serial_no TEXT NOT NULL,
    day       TEXT NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (serial_no, day)
);
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class Store:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves; timeout waits out other writers.
        # check_same_thread (the default) makes sharing a connection across threads an error.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        # WAL + NORMAL survives a crash of the process (what the tests inflict); only a power
        # loss could drop the last commits — acceptable for a sandbox, and no fsync per call.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _state(self) -> _ThreadState:
        """This thread's connection (opened on first use; a forked child opens its own)."""
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None or state.pid != os.getpid():
            if state is not None:
                # Never close (or use) a connection inherited through fork(): SQLite forbids it.
                _INHERITED.append(state.conn)
            state = _ThreadState(conn=self._connect(), pid=os.getpid())
            self._local.state = state
        return state

    def _discard(self, state: _ThreadState) -> None:
        """Drop a connection that may be in an unknown state; the next use opens a fresh one."""
        self._local.state = None
        try:
            state.conn.close()
        except sqlite3.Error:
            pass

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is not None and state.pid == os.getpid() and state.depth == 0:
            self._discard(state)

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from the start.

        Inside another ``tx()`` on the same thread it is a SAVEPOINT of that transaction: its
        writes commit with the outer one, and an exception undoes only its own part."""
        state = self._state()
        if state.depth:
            yield from self._savepoint(state)
            return
        conn = state.conn
        if conn.in_transaction:  # left open by an earlier failure we could not clean up
            self._discard(state)
            state = self._state()
            conn = state.conn
        conn.execute("BEGIN IMMEDIATE")  # raises (busy) before anything is open: nothing to undo
        state.depth = 1
        try:
            try:
                yield conn
            except BaseException as exc:
                # A provider refusal keeps what was written before it (refusal counters, lazy
                # status transitions); anything else undoes the transaction.
                self._finish(state, commit=getattr(exc, "commit_transaction", False))
                raise
            self._finish(state, commit=True)
        finally:
            state.depth = 0

    def _savepoint(self, state: _ThreadState) -> Iterator[sqlite3.Connection]:
        conn = state.conn
        name = f"sp{state.depth}"
        conn.execute(f"SAVEPOINT {name}")
        state.depth += 1
        try:
            yield conn
        except BaseException as exc:
            if not getattr(exc, "commit_transaction", False):
                conn.execute(f"ROLLBACK TO {name}")
            conn.execute(f"RELEASE {name}")
            raise
        finally:
            state.depth -= 1
        conn.execute(f"RELEASE {name}")

    def _finish(self, state: _ThreadState, *, commit: bool) -> None:
        conn = state.conn
        try:
            if commit:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            elif conn.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            if conn.in_transaction:
                # Neither COMMIT nor ROLLBACK worked: this connection cannot be trusted again.
                self._discard(state)
            raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection for reads (autocommit: each statement sees the latest
        commit; inside a ``tx()`` it sees that transaction's writes)."""
        yield self._state().conn


@dataclass
class _ThreadState:
    conn: sqlite3.Connection
    pid: int
    depth: int = 0  # 0: no transaction; 1: BEGIN IMMEDIATE; n > 1: n - 1 savepoints inside it


# Connections a forked child inherited: kept referenced so they are never closed in the child.
_INHERITED: list[sqlite3.Connection] = []


def bump(conn: sqlite3.Connection, name: str, by: int = 1) -> None:
    conn.execute(
        "INSERT INTO counters(name, value) VALUES (?, ?) "
        "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
        (name, by),
    )


def kv_get(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return None if row is None else row["value"]


def kv_set(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO kv(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        (key, value),
    )
