"""The web app through the production server (gunicorn with its default processes and threads), driven by
32 concurrent HTTP clients (threads with keep-alive ``requests`` sessions) on this machine.

Figures: the preview API (``POST /api/v1/preview``; target ≥ 300 requests/s, p95 ≤ 100 ms)
and order intake in batches of 100 (``POST /api/v1/orders`` with an operations user's API
token; target ≥ 1,000 orders/s), each with its error count (target 0). The clients share the
machine's cores with the server: on a small machine they take a good part of them.

Database: ``KAIPIAO_BENCH_DATABASE_URL``, else a fresh ``kaipiao_bench_web`` database on the
local PostgreSQL, else a SQLite file. Redis: ``KAIPIAO_BENCH_REDIS_URL``, else the local
server (db 14), else the embedded one. No workers run: intake only stores and queues.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import bench_database, bench_redis, cores, header, report

from app.web.gunicorn_config import default_workers

CONCURRENCY = int(os.environ.get("KAIPIAO_BENCH_CONCURRENCY", "32"))
PREVIEW_SECONDS = float(os.environ.get("KAIPIAO_BENCH_SECONDS", "15"))
ORDER_BATCHES = int(os.environ.get("KAIPIAO_BENCH_BATCHES", "100"))
BATCH = 100
ROOT = Path(__file__).resolve().parents[1]
SELLER = {"name": "杭州青禾电子商务有限公司", "tax_id": "91110000600037341L"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    if len(values) < 2:
        return values[0] if values else 0.0
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _drive(name: str, concurrency: int, make_request, *, seconds: float | None = None,
           count: int | None = None, headers: dict[str, str] | None = None) -> tuple[int, int, float, list[float]]:
    """``make_request(session, n)`` → response, from ``concurrency`` threads, for ``seconds`` or
    ``count`` requests in all. Returns (done, errors, elapsed seconds, latencies in ms)."""
    import requests

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(count if count is not None else 10**12))
    stop_at = time.monotonic() + seconds if seconds else None

    def client() -> None:
        session = requests.Session()
        session.headers.update(headers or {})
        mine: list[float] = []
        failed = 0
        while stop_at is None or time.monotonic() < stop_at:
            with lock:
                n = next(counter, None)
            if n is None:
                break
            start = time.perf_counter()
            try:
                response = make_request(session, n)
                ok = response.status_code == 200
            except requests.RequestException:
                ok = False
            mine.append((time.perf_counter() - start) * 1000)
            failed += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=client, name=f"{name}-{i}") for i in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), errors[0], time.perf_counter() - start, latencies


# wrk (C, event loop) measures the server, where 32 Python client threads would take much of a
# small machine's cores and add their own GIL queueing to every latency. One body per line.
_WRK_SCRIPT = """
local bodies = {}
for line in io.lines("%(bodies)s") do bodies[#bodies + 1] = line end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%.6f %%.3f %%.3f\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000))
end
"""


def _wrk_preview(url: str, bodies: list[dict], tmp: Path) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p95 ms, errors: failed connections and non-2xx answers)."""
    import json

    lines = tmp / "preview-bodies.jsonl"
    lines.write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bodies), encoding="utf-8")
    script = tmp / "preview.lua"
    script.write_text(_WRK_SCRIPT % {"bodies": lines}, encoding="utf-8")
    out = subprocess.run(["wrk", f"-t{cores()}", f"-c{CONCURRENCY}", f"-d{int(PREVIEW_SECONDS)}s", "--timeout", "10s",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    fields = next(line for line in out.splitlines() if line.startswith("WRK ")).split()
    requests, errors, seconds, p50, p95 = int(fields[1]), int(fields[2]), *map(float, fields[3:])
    return requests / seconds, p50, p95, errors


def main() -> None:
    header("web")
    tmp = Path(tempfile.mkdtemp(prefix="kp-benchweb-"))
    db_url, redis_url = bench_database(tmp, "kaipiao_bench_web"), bench_redis(14, "kp-benchweb")
    print(f"database: {'PostgreSQL' if db_url.startswith('postgres') else 'SQLite'}")
    web_workers = int(os.environ.get("KAIPIAO_WEB_WORKERS") or default_workers())
    os.environ.update({
        "KAIPIAO_DATABASE_URL": db_url, "KAIPIAO_REDIS_URL": redis_url, "KAIPIAO_INSTANCE_PATH": str(tmp),
        "KAIPIAO_SECRET_KEY": "bench", "KAIPIAO_ENCRYPTION_KEY": "bench",
    })
    from app import crypto, db
    from app.migrate import upgrade
    from app.models import Merchant, SellerEntity, Shop
    from app.services.accounts import create_user, issue_api_token
    from app.settings import Settings
    from sandbox.orders import random_order

    upgrade(db_url)
    settings = Settings.from_env()
    crypto.configure(settings.encryption_keys)
    db.configure(db_url)
    with db.transaction() as session:
        merchant = Merchant(name="基准测试商户")
        session.add(merchant)
        session.flush()
        seller = SellerEntity(merchant_id=merchant.id, code="main", name="基准测试商户有限公司",
                              tax_id="91110000600037341L", is_default=True)
        session.add(seller)
        session.flush()
        session.add(Shop(merchant_id=merchant.id, seller_entity_id=seller.id, platform="tmall", shop_code="bench",
                         name="基准店", options={}))
        user = create_user(session, "bench_operations", ["operations"], "bench-operations-password-2026")
        token = issue_api_token(user)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "KAIPIAO_WEB_BIND": f"127.0.0.1:{port}", "KAIPIAO_WEB_WORKERS": str(web_workers)}
    log = (tmp / "gunicorn.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "wsgi:app"], cwd=ROOT, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import requests

        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"the web server did not start; see {tmp / 'gunicorn.log'}")
            time.sleep(0.3)
        print(f"server: gunicorn, {web_workers} web process(es) × {os.environ.get('KAIPIAO_WEB_THREADS', '2')} "
              f"threads; {CONCURRENCY} concurrent clients")
        rng = random.Random(1)
        previews = [{"order": {**random_order(rng, "tmall", "elsewhere", f"P{n:06d}", max_lines=3),
                               "status": "received"}, "seller": SELLER} for n in range(500)]

        def preview(session, n):
            return session.post(f"{base}/api/v1/preview", json=previews[n % len(previews)], timeout=30)

        _drive("warm", CONCURRENCY, preview, count=CONCURRENCY * 4)
        if shutil.which("wrk") and not os.environ.get("KAIPIAO_BENCH_PYTHON_CLIENT"):
            rate, p50, p95, errors = _wrk_preview(f"{base}/api/v1/preview", previews, tmp)
            print(f"preview client: wrk, {CONCURRENCY} connections")
        else:
            done, errors, elapsed, latencies = _drive("preview", CONCURRENCY, preview, seconds=PREVIEW_SECONDS)
            rate, p50, p95 = done / elapsed, _percentile(latencies, 50), _percentile(latencies, 95)
            print(f"preview client: {CONCURRENCY} Python threads (install wrk for a client that takes "
                  "less of the machine)")
        report("preview_requests_per_s", rate, "req/s")
        report("preview_p50", p50, "ms")
        report("preview_p95", p95, "ms")
        report("preview_errors", errors, "count")

        batches = [{"orders": [{**random_order(rng, "tmall", "bench", f"B{b:04d}-{i:03d}", max_lines=3),
                                "status": "received"} for i in range(BATCH)]} for b in range(ORDER_BATCHES)]

        def intake(session, n):
            return session.post(f"{base}/api/v1/orders", json=batches[n], timeout=120)

        done, errors, elapsed, latencies = _drive("orders", CONCURRENCY, intake, count=ORDER_BATCHES,
                                                  headers={"Authorization": f"Bearer {token}"})
        report("orders_per_s", (done - errors) * BATCH / elapsed, "orders/s")
        report("orders_batch_p50", _percentile(latencies, 50), "ms")
        report("orders_batch_p95", _percentile(latencies, 95), "ms")
        report("orders_errors", errors, "count")
        report("cores", cores(), "cpu")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
