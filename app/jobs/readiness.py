"""Is this deployment ready to take work: the database checks (app.services.readiness) plus
Redis reachable and at least one RQ worker with a recent heartbeat. Used by ``GET /readyz``
and ``kaipiao status``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from rq import Worker

from app.services.readiness import Check, _NotReady, database_checks, timed
from app.settings import Settings

# An idle RQ worker refreshes its heartbeat about every worker_ttl (420 s by default) minus 15 s;
# its registration expires 60 s after a missed one. Older than this: the worker is gone.
HEARTBEAT_MAX_AGE = timedelta(seconds=480)

_clients: dict[str, redis.Redis] = {}


def _redis(settings: Settings) -> redis.Redis:
    """A client with short timeouts (a probe must not hang); never starts the embedded server."""
    from app.redis_conn import embedded_url

    url = settings.redis_url or embedded_url(settings.instance_path)
    client = _clients.get(url)
    if client is None:
        client = _clients[url] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    return client


@dataclass(frozen=True)
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, object]:
        return {"ready": self.ok, "checks": {check.name: check.as_dict() for check in self.checks}}


def redis_checks(settings: Settings, now: datetime | None = None) -> list[Check]:
    conn = _redis(settings)

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
            if beat is not None and (beat if beat.tzinfo else beat.replace(tzinfo=UTC)) >= cutoff:
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
