"""The sandbox's SQLite store: one file, safe across threads and processes.

Every write runs in ``BEGIN IMMEDIATE`` (one writer at a time, no lost updates between the
check and the insert); a fresh connection per transaction keeps threads independent. Money is
integer fen. The unique constraints (serial, number, nonce) are the last line of defence for
idempotency even if two processes race.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
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
CREATE TABLE IF NOT EXISTS credit (
    month     TEXT PRIMARY KEY,
    used_fen  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nonces (
    app_key TEXT NOT NULL,
    nonce   TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (app_key, nonce)
);
CREATE TABLE IF NOT EXISTS tokens (
    token      TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
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
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves; timeout waits out other writers.
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        # WAL + NORMAL survives a crash of the process (what the tests inflict); only a power
        # loss could drop the last commits — acceptable for a sandbox, and no fsync per call.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding the database's write lock from the start."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException as exc:
                # A provider refusal keeps what was written before it (refusal counters, lazy
                # status transitions); anything else undoes the transaction.
                conn.execute("COMMIT" if getattr(exc, "commit_transaction", False) else "ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()


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
