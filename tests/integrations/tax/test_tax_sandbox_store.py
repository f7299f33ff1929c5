"""The sandbox store: one connection per thread, nested transactions as savepoints, and a
connection that stays usable after a failed transaction."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from sandbox.tax.service import ProviderError
from sandbox.tax.store import Store, bump


def counter(store: Store, name: str) -> int | None:
    with store.read() as conn:
        row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
    return None if row is None else row["value"]


def test_one_connection_per_thread_never_shared(tmp_path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    with store.tx() as first:
        pass
    with store.read() as again:
        assert again is first
    seen: list[sqlite3.Connection] = []

    def other() -> None:
        with store.tx() as conn:
            seen.append(conn)
        with pytest.raises(sqlite3.ProgrammingError):  # SQLite's own same-thread check is on
            first.execute("SELECT 1")

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert len(seen) == 1 and seen[0] is not first


def test_failed_transaction_rolls_back_and_the_connection_stays_usable(tmp_path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    with pytest.raises(RuntimeError), store.tx() as conn:
        bump(conn, "lost")
        raise RuntimeError("boom")
    assert counter(store, "lost") is None
    with pytest.raises(sqlite3.OperationalError), store.tx() as conn:
        bump(conn, "lost")
        conn.execute("SELECT * FROM no_such_table")
    with store.tx() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
        bump(conn, "kept")
    assert counter(store, "kept") == 1 and counter(store, "lost") is None


def test_refusal_commits_what_was_written_before_it(tmp_path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    with pytest.raises(ProviderError), store.tx() as conn:
        bump(conn, "refusals")
        raise ProviderError("NOT_FOUND", "x")
    assert counter(store, "refusals") == 1


def test_nested_tx_is_a_savepoint(tmp_path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    with store.tx() as outer:
        bump(outer, "outer")
        with pytest.raises(RuntimeError), store.tx() as inner:
            assert inner is outer
            bump(inner, "inner_undone")
            raise RuntimeError("inner bug")
        with pytest.raises(ProviderError), store.tx() as inner:
            bump(inner, "inner_refusal")
            raise ProviderError("NOT_FOUND", "x")
        with store.tx() as inner:
            bump(inner, "inner_ok")
    assert [counter(store, n) for n in ("outer", "inner_undone", "inner_refusal", "inner_ok")] == [1, None, 1, 1]
    with pytest.raises(RuntimeError), store.tx() as outer:  # an outer failure undoes its savepoints too
        with store.tx() as inner:
            bump(inner, "released_then_undone")
        raise RuntimeError("outer bug")
    assert counter(store, "released_then_undone") is None


def test_a_transaction_left_open_is_discarded(tmp_path) -> None:
    store = Store(tmp_path / "s.sqlite3")
    with store.read() as conn:
        conn.execute("BEGIN")  # as if a failure had left it open
    with store.tx() as fresh:
        assert fresh is not conn
        bump(fresh, "ok")
    assert counter(store, "ok") == 1
