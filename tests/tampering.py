"""Tampering as a database owner would, for the ledger tests: guards off, rows changed, guards on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, text, update
from sqlalchemy.engine import Connection

from app import db as kdb
from app import ledger
from app.guards import guard_statements


@contextmanager
def tamper(owner_url: str, *tables: str) -> Iterator[Connection]:
    """A connection of the owner with the guards of ``tables`` off, on again afterwards."""
    engine = kdb.make_engine(owner_url)
    try:
        with engine.begin() as conn:
            for table in tables:
                if conn.dialect.name == "sqlite":
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
                    conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
                else:
                    conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            yield conn
            for table in tables:
                if conn.dialect.name != "sqlite":
                    conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
            if conn.dialect.name == "sqlite":
                for stmt in guard_statements("sqlite"):
                    conn.execute(text(stmt))
    finally:
        engine.dispose()


def rehash_from(conn: Connection, chain: ledger.Ledger, seq: int) -> None:
    """What an attacker without the checkpoints does after an edit: hash the rest of the chain again."""
    table = chain.table
    prev = conn.execute(select(table.c.hash).where(table.c.chain_seq == seq - 1)).scalar() or ledger.GENESIS
    rows = conn.execute(select(*[table.c[c] for c in chain.columns], table.c.chain_seq)
                        .where(table.c.chain_seq >= seq).order_by(table.c.chain_seq)).all()
    for row in rows:
        digest = ledger.row_hash(chain, prev, row)
        conn.execute(update(table).where(table.c.id == row.id).values(prev_hash=prev, hash=digest))
        prev = digest
