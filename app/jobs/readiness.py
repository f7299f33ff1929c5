"""Is this deployment ready to take work: the database checks (app.services.readiness) plus
Redis reachable and at least one RQ worker with a recent heartbeat whose process is still
alive (its ``Pulse``). Used by ``GET /readyz``
and ``kaipiao status``."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from rq import Worker

from app.redis_conn import probe_client
from app.services.readiness import Check, _NotReady, database_checks, timed
from app.settings import Settings

# An idle RQ worker refreshes its heartbeat about every worker_ttl (420 s by default) minus 15 s;
# its registration expires 60 s after a missed one. Older than this: the worker is gone.
HEARTBEAT_MAX_AGE = timedelta(seconds=480)

# RQ's heartbeat alone would call a kill -9'd worker alive for minutes (and a SimpleWorker does
# not beat while a job runs): each worker process also keeps a short-lived key of its own alive,
# refreshed by a thread, so a dead process drops out within ALIVE_TTL seconds.
ALIVE_PREFIX = "kaipiao:worker-alive:"
ALIVE_TTL = 30
ALIVE_EVERY = 10.0

class Pulse:
    """Keeps ``ALIVE_PREFIX + name`` alive while the worker process runs; ``stop`` removes it,
    so a worker stopped cleanly is gone at once."""

    def __init__(self, conn: redis.Redis, name: str, every: float = ALIVE_EVERY, ttl: int = ALIVE_TTL) -> None:
        self._conn, self._key, self._every, self._ttl = conn, ALIVE_PREFIX + name, every, ttl
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pulse-{name}", daemon=True)

    def start(self) -> Pulse:
        self._beat()
        self._thread.start()
        return self

    def _beat(self) -> None:
        try:
            self._conn.set(self._key, "1", ex=self._ttl)
        except redis.RedisError:
            pass  # Redis away: readiness says so by its own check

    def _run(self) -> None:
        while not self._stopped.wait(self._every):
            self._beat()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        try:
            self._conn.delete(self._key)
        except redis.RedisError:
            pass


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {"ready": self.ok, "checks": {check.name: check.as_dict() for check in self.checks}}


def redis_checks(settings: Settings, now: datetime | None = None) -> list[Check]:
    conn = probe_client(settings)

    def ping() -> str:
        conn.ping()
        return "reachable"

    checks = [timed("redis", ping)]
    if not checks[0].ok:
        return [*checks, *(Check(name, False, 0.0, "not checked: redis unreachable")
                           for name in ("workers", "scheduler"))]
    cutoff = (now or datetime.now(UTC)) - HEARTBEAT_MAX_AGE

    def workers() -> str:
        alive = 0
        for worker in Worker.all(connection=conn):
            beat = worker.last_heartbeat
            if (beat is not None and (beat if beat.tzinfo else beat.replace(tzinfo=UTC)) >= cutoff
                    and conn.exists(ALIVE_PREFIX + worker.name)):
                alive += 1
        if not alive:
            raise _NotReady("no worker with a recent heartbeat")
        return f"{alive} worker(s) alive"

    def scheduler() -> str:
        from rq.cron import CronScheduler

        if not any((beat := cron.last_heartbeat) is not None and beat >= cutoff
                   for cron in CronScheduler.all(conn)):
            raise _NotReady("no periodic scheduler with a recent heartbeat")
        return "alive"

    return [*checks, timed("workers", workers), timed("scheduler", scheduler)]


def readiness(settings: Settings) -> Report:
    return Report(database_checks() + redis_checks(settings))
