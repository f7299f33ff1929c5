"""Shared helpers for benchmarks: every figure is one ``metric: value unit`` line."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cores() -> int:
    return os.cpu_count() or 1


def header(name: str) -> None:
    print(f"benchmark: {name}")
    print(f"cores: {cores()} cpu")
    print(f"python: {platform.python_version()} version")


def report(metric: str, value: float, unit: str) -> None:
    text = f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    print(f"{metric}: {text} {unit}", flush=True)


def cpu_snapshot(children: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of this process, of ``children`` (name → pid; a name groups all its
    pids' children too) and of the machine's PostgreSQL, Redis and sandbox processes."""
    import psutil

    def seconds(proc: psutil.Process) -> float:
        try:
            times = proc.cpu_times()
            return times.user + times.system
        except psutil.Error:
            return 0.0

    out: dict[str, float] = {"benchmark": seconds(psutil.Process())}
    for name, pid in children.items():
        try:
            proc = psutil.Process(pid)
            out[name] = seconds(proc) + sum(seconds(c) for c in proc.children(recursive=True))
        except psutil.Error:
            out[name] = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        label = proc.info["name"] or ""
        cmdline = " ".join(proc.info["cmdline"] or [])
        group = ("postgresql" if label.startswith("postgres") else "redis" if label.startswith("redis")
                 else "sandbox" if "sandbox.tax" in cmdline else None)
        if group:
            out[group] = out.get(group, 0.0) + seconds(proc)
    return out


def report_cpu(before: dict[str, float], after: dict[str, float], items: int, what: str,
               elapsed: float | None = None) -> None:
    """One ``cpu_ms_per_<what>_<process>`` line per process group, the total, and (given the
    wall time) how busy the machine's cores were."""
    total = 0.0
    for name in sorted(after):
        spent = after[name] - before.get(name, 0.0)
        total += spent
        report(f"cpu_ms_per_{what}_{name}", spent / items * 1000, "ms")
    report(f"cpu_ms_per_{what}_total", total / items * 1000, "ms")
    if elapsed:
        report("cpu_busy", total / (elapsed * cores()) * 100, "%")


def bench_database(tmp: Path, name: str) -> str:
    """``KAIPIAO_BENCH_DATABASE_URL``, else a fresh database ``name`` on the local PostgreSQL,
    else a SQLite file in ``tmp``."""
    url = os.environ.get("KAIPIAO_BENCH_DATABASE_URL")
    if url:
        return url
    try:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=2) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name}")
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    except Exception:
        return f"sqlite:///{tmp / 'bench.sqlite3'}"


def bench_redis(db_number: int, tag: str) -> str:
    """``KAIPIAO_BENCH_REDIS_URL``, else database ``db_number`` of the local Redis (emptied), else
    an embedded server."""
    url = os.environ.get("KAIPIAO_BENCH_REDIS_URL")
    if url:
        return url
    import redis

    local = f"redis://127.0.0.1:6379/{db_number}"
    try:
        client = redis.Redis.from_url(local, socket_connect_timeout=1)
        client.ping()
        client.flushdb()
        return local
    except redis.RedisError:
        from app.redis_conn import ensure_embedded_server

        return ensure_embedded_server(Path(f"/tmp/{tag}-{os.getpid()}"))
