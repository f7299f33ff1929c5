"""The durable-rules evaluator: sessions, threads, memory, versions, swallowed exceptions."""

from __future__ import annotations

import os
import threading

import pytest

from app.rules import compile_ruleset, decide
from app.rules.engine import RuleEngineError, get_evaluator
from tests.rules.helpers import NOW, gen_order, rule, ruleset

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def rss_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KB


def test_unmatched_orders_do_not_leak_sessions() -> None:
    # Without the catch-all rule the 1025th unmatched order raises MemoryError (sessions leak),
    # and deleting an unmatched session segfaults.
    doc = ruleset(rule("jd-only", 1, [{"action": "issue"}], {"m": {"platform": "jd"}}))
    for i in range(1500):
        assert decide(gen_order(order_id=f"u{i}"), ruleset=doc, now=NOW).action == "skip"


def test_same_order_decided_repeatedly() -> None:
    doc = ruleset(rule("a", 1, [{"action": "issue"}]))
    for _ in range(2000):
        assert decide(gen_order(), ruleset=doc, now=NOW).action == "issue"


def test_new_version_is_used_without_restart() -> None:
    v1 = ruleset(rule("r", 1, [{"action": "hold", "reason": "v1 holds"}]), name="shop-rules")
    v2 = ruleset(rule("r", 1, [{"action": "issue"}]), name="shop-rules")
    d1 = decide(gen_order(), ruleset=v1, now=NOW)
    d2 = decide(gen_order(), ruleset=v2, now=NOW)
    assert (d1.action, d2.action) == ("hold", "issue")
    assert d1.rules_version != d2.rules_version and d1.rules_version.startswith("shop-rules@")
    assert decide(gen_order(), ruleset=v1, now=NOW).action == "hold"  # old versions stay usable
    labelled = compile_ruleset(v2, label="shop-rules@v2")
    assert decide(gen_order(), ruleset=labelled, now=NOW).rules_version == "shop-rules@v2"


def test_exception_swallowed_by_durable_rules_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    rs = compile_ruleset(ruleset(rule("a", 1, [{"action": "issue"}])))
    host = get_evaluator()._host
    real = host.get_state
    monkeypatch.setattr(host, "get_state", lambda name, sid: {**real(name, sid), "exception": "boom"})
    with pytest.raises(RuleEngineError, match="boom"):
        decide(gen_order(), ruleset=rs, now=NOW)
    monkeypatch.undo()
    assert decide(gen_order(), ruleset=rs, now=NOW).action == "issue"  # the session was still deleted


def test_eight_threads_get_correct_decisions() -> None:
    docs = [
        ruleset(
            rule("skip-jd", 1, [{"action": "skip", "reason": "jd"}], {"m": {"platform": "jd"}}),
            rule(
                "hold-big", 2, [{"action": "hold", "reason": "big"}], {"m": {"$gt": {"amount_fen": 100000}}}
            ),
            rule("issue", 3, [{"action": "issue"}]),
        ),
        ruleset(rule("all-wait", 1, [{"action": "wait_for", "event": "shipped", "delay": "P30D"}])),
    ]
    for d in docs:
        compile_ruleset(d)

    def expected(i: int) -> str:
        if i % 2:
            return "wait"
        if i % 3 == 0:
            return "skip"
        return "hold" if i % 5 == 0 else "issue"

    def order(i: int) -> dict:
        price = "2000.00" if i % 5 == 0 else "10.00"
        lines = [{"line_id": "1", "name": "x", "quantity": "1", "unit_price": price}]
        return gen_order(
            order_id=f"t{i}",
            platform="jd" if i % 3 == 0 else "tmall",
            lines=lines,
            shipped_at="2026-11-14T00:00:00+08:00",
        )

    errors: list[str] = []

    def work(thread: int) -> None:
        for n in range(600):
            i = thread * 1000 + n
            try:
                got = decide(order(i), ruleset=docs[i % 2], now=NOW).action
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(repr(exc))
                return
            if got != expected(i):
                errors.append(f"order {i}: {got} != {expected(i)}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.slow
def test_100k_evaluations_flat_memory() -> None:
    doc = ruleset(
        rule("skip-jd", 1, [{"action": "skip", "reason": "jd"}], {"m": {"platform": "jd"}}),
        rule("face", 2, [{"action": "set_gift_mode", "mode": "discount_line"}]),
        rule("issue", 3, [{"action": "wait_for", "event": "received"}], {"m": {"has_request": True}}),
    )
    orders = [gen_order(order_id=f"m{i}", platform=("jd", "tmall", "pdd")[i % 3]) for i in range(300)]
    rs = compile_ruleset(doc)
    for i in range(5000):  # warm up allocator pools and caches
        decide(orders[i % 300], ruleset=rs, now=NOW)
    before = rss_kb()
    for i in range(100_000):
        decide(orders[i % 300], ruleset=rs, now=NOW)
    grown = rss_kb() - before
    assert grown < 2048, f"RSS grew by {grown} KB over 100,000 evaluations"
