"""Orders → issued through the sandbox tax service (zero latency) with 2 worker processes.

Figures: invoices per hour at full load (target ≥ 1,000,000/h, i.e. ≥ 280/s) and the latency
from an order's arrival to issued (p50, p95) at 50 orders/s offered (target p95 ≤ 1 s).

Database: ``KAIPIAO_BENCH_DATABASE_URL``, else a fresh ``kaipiao_bench`` database on the local
PostgreSQL (127.0.0.1:5432), else a SQLite file. Redis: ``KAIPIAO_BENCH_REDIS_URL``, else the
local server on 6379 (db 15), else the embedded one. PDF rendering and delivery are measured
separately (`kaipiao bench pdf`).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import bench_database, bench_redis, cpu_snapshot, header, report, report_cpu

THROUGHPUT_ORDERS = int(os.environ.get("KAIPIAO_BENCH_ORDERS", "6000"))
LATENCY_RATE = int(os.environ.get("KAIPIAO_BENCH_LATENCY_RATE", "50"))
LATENCY_SECONDS = 20
WORKERS = int(os.environ.get("KAIPIAO_BENCH_WORKERS", "2"))


def main(*, name: str = "pipeline", latency_ms: int = 0, issue_delay_ms: int = 0) -> None:
    """``latency_ms``: every provider call answers that much later; ``issue_delay_ms``: an
    accepted invoice is issued that long after (the sandbox's own flags)."""
    header(name)
    print(f"provider: {latency_ms} ms a call, issued {issue_delay_ms} ms after acceptance")
    tmp = Path(tempfile.mkdtemp(prefix="kp-bench-"))
    db_url, redis_url = bench_database(tmp, "kaipiao_bench"), bench_redis(15, "kp-bench")
    print(f"database: {'PostgreSQL' if db_url.startswith('postgres') else 'SQLite'}")
    os.environ.update({
        "KAIPIAO_DATABASE_URL": db_url, "KAIPIAO_REDIS_URL": redis_url, "KAIPIAO_INSTANCE_PATH": str(tmp),
        "KAIPIAO_SECRET_KEY": "bench", "KAIPIAO_ENCRYPTION_KEY": "bench",
        "KAIPIAO_TIMING_OUTBOX_GRACE": "0.5", "KAIPIAO_TIMING_FIRST_POLL": "0.1",
    })
    from sqlalchemy import func, select

    from app import crypto, db
    from app.jobs import queues, tasks
    from app.jobs.processes import Children, kaipiao_cmd
    from app.migrate import upgrade
    from app.models import InvoiceEvent, InvoiceRequest, Merchant, SellerEntity, Shop
    from app.services.intake import ingest
    from app.services.unit_of_work import unit_of_work
    from app.settings import Settings
    from sandbox.orders import random_order
    from sandbox.tax.runner import start_sandbox_subprocess

    upgrade(db_url)
    settings = Settings.from_env()
    crypto.configure(settings.encryption_keys)
    db.configure(db_url)
    queues.configure(settings)
    sandbox = start_sandbox_subprocess(tmp / "sandbox.sqlite3", extra_args=[
        "--credit-limit", "999999999999.00", "--latency-ms", str(latency_ms), "--issue-delay-ms", str(issue_delay_ms)])
    with db.transaction() as session:
        merchant = Merchant(name="基准测试商户")
        session.add(merchant)
        session.flush()
        seller = SellerEntity(merchant_id=merchant.id, code="main", name="基准测试商户有限公司",
                              tax_id="91110000600037341L", is_default=True,
                              tax_credentials=json.dumps({"provider": "sandbox", "url": sandbox.base_url,
                                                          "app_key": "sandbox-app", "app_secret": "sandbox-secret"}))
        session.add(seller)
        session.flush()
        session.add(Shop(merchant_id=merchant.id, seller_entity_id=seller.id, platform="tmall", shop_code="bench",
                         name="基准店", options={}))
    children = Children()
    for i in range(WORKERS):
        children.start(f"w{i}", [*kaipiao_cmd(), "worker", "--name", f"bench-{i}-{time.time_ns()}"],
                       tmp / f"worker{i}.log")
    stop = threading.Event()

    def scheduler() -> None:
        # The periodic work a deployment runs beside the workers: the tick, and sealing the
        # invoice log (whose cost grows with throughput, so it belongs in the figure).
        while not stop.wait(0.5):
            try:
                tasks.tick()
                tasks.seal_ledger(budget_seconds=2)
            except Exception as exc:  # keep measuring; the figure will show the damage
                print(f"tick failed: {exc}")

    threading.Thread(target=scheduler, daemon=True).start()
    rng = random.Random(1)

    def order(n: int, prefix: str) -> dict:
        doc = random_order(rng, "tmall", "bench", f"{prefix}{n:08d}", max_lines=3)
        doc["status"] = "received"
        doc.setdefault("received_at", doc["paid_at"])
        doc["invoice_request"] = {"kind": "normal", "title_type": "personal", "title": "个人"}
        return doc

    def issued_count(prefix_ids: tuple[int, int]) -> int:
        with db.transaction() as session:
            return session.scalar(select(func.count()).select_from(InvoiceRequest).where(
                InvoiceRequest.id.between(*prefix_ids), InvoiceRequest.status.in_(("issued", "failed", "held",
                                                                                    "skipped"))))

    def throughput() -> None:
        """Everything arrives at once; count until all are issued."""
        docs = [order(n, "T") for n in range(THROUGHPUT_ORDERS)]
        cpu_before = cpu_snapshot({name: proc.pid for name, proc in children.procs.items()})
        start = time.monotonic()
        ids: list[int] = []
        for i in range(0, len(docs), 500):
            with unit_of_work() as work:
                result = ingest(work, docs[i:i + 500], source="bench")
            ids += [a["request_id"] for a in result.accepted]
        span = (min(ids), max(ids))
        intake_s = time.monotonic() - start
        while issued_count(span) < len(ids) and time.monotonic() - start < 900:
            time.sleep(0.25)
        elapsed = time.monotonic() - start
        with db.transaction() as session:
            states = dict(session.execute(select(InvoiceRequest.status, func.count())
                                          .where(InvoiceRequest.id.between(*span))
                                          .group_by(InvoiceRequest.status)).all())
        issued = states.get("issued", 0)
        workers_cpu = cpu_snapshot({name: proc.pid for name, proc in children.procs.items()})
        report("throughput_orders", len(ids), "orders")
        report("intake_orders_per_second", len(ids) / intake_s, "orders/s")
        report("issued_per_second", issued / elapsed, "invoices/s")
        report("issued_per_hour", issued / elapsed * 3600, "invoices/h")
        # The pace once the pipeline is full: from the 10th to the 90th percentile of the issue
        # times (what the first and last invoices wait for, the provider's settling included,
        # is latency, measured below, not capacity).
        with db.transaction() as session:
            times = sorted(session.scalars(select(InvoiceRequest.updated_at).where(
                InvoiceRequest.id.between(*span), InvoiceRequest.status == "issued")))
        if len(times) >= 10:
            low, high = times[len(times) // 10], times[len(times) * 9 // 10]
            steady = (len(times) * 8 // 10) / max((high - low).total_seconds(), 1e-6)
            report("issued_per_second_steady", steady, "invoices/s")
            report("issued_per_hour_steady", steady * 3600, "invoices/h")
        with db.transaction() as session:
            unsealed = session.scalar(select(func.count()).select_from(InvoiceEvent).where(InvoiceEvent.hash.is_(None)))
        report("log_events_unsealed_at_end", unsealed, "events")
        print(f"final states: {states}")
        # Where the time goes: CPU per issued invoice, by process (intake, the tick and the
        # sealing run in the benchmark process; w0, w1 are the workers).
        report_cpu(cpu_before, workers_cpu, max(issued, 1), "invoice", elapsed)

    try:
        # KAIPIAO_BENCH_ORDERS=0 skips the throughput phase; KAIPIAO_BENCH_LATENCY_RATE sets the offered rate.
        if THROUGHPUT_ORDERS:
            throughput()

        # Latency at LATENCY_RATE orders/s offered (50 by default).
        arrivals: dict[int, datetime] = {}
        total = LATENCY_RATE * LATENCY_SECONDS
        t0 = time.monotonic()
        for n in range(0, total, 5):  # 5 orders every 100 ms
            target = t0 + n / LATENCY_RATE
            time.sleep(max(0.0, target - time.monotonic()))
            with unit_of_work() as work:
                result = ingest(work, [order(n + k, "L") for k in range(5)], source="bench")
            now = datetime.now(UTC)
            for accepted in result.accepted:
                arrivals[accepted["request_id"]] = now
        span = (min(arrivals), max(arrivals))
        deadline = time.monotonic() + 120
        while issued_count(span) < len(arrivals) and time.monotonic() < deadline:
            time.sleep(0.25)
        with db.transaction() as session:
            done = session.execute(select(InvoiceRequest.id, InvoiceRequest.updated_at)
                                   .where(InvoiceRequest.id.between(*span), InvoiceRequest.status == "issued")).all()
        latencies = sorted((row.updated_at - arrivals[row.id]).total_seconds() for row in done)
        report("latency_orders", len(latencies), "orders")
        report("latency_offered_rate", LATENCY_RATE, "orders/s")
        report("latency_p50", statistics.median(latencies) * 1000, "ms")
        report("latency_p95", latencies[int(len(latencies) * 0.95) - 1] * 1000, "ms")
    finally:
        stop.set()
        children.stop()
        sandbox.stop()


if __name__ == "__main__":
    main()
