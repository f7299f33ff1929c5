"""RQ's own view of the job system (queue depths, workers, its failed registry), for the
operations page. Read-only, and it never fails the page: when Redis does not answer the
snapshot says so (``ok=False``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import redis
from rq import Queue, Worker
from rq.job import Job

from app.jobs import queues

REDIS_ERRORS = (redis.RedisError, OSError)


@dataclass
class QueueRow:
    name: str
    queued: int
    started: int
    failed: int
    scheduled: int
    deferred: int


@dataclass
class WorkerRow:
    name: str
    state: str
    current_job: str | None
    queues: list[str]
    last_heartbeat: datetime | None
    successful: int
    failed: int
    host: str


@dataclass
class RQFailedJob:
    job_id: str
    queue: str
    func: str
    args: str
    ended_at: datetime | None
    reason: str


@dataclass
class RedisSnapshot:
    ok: bool
    error: str | None = None
    queues: list[QueueRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    failed_jobs: list[RQFailedJob] = field(default_factory=list)


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def queue_rows(conn: redis.Redis) -> list[QueueRow]:
    rows = []
    for spec in queues.QUEUES:
        q = Queue(spec.name, connection=conn)
        # cleanup=False: a read-only page must not run RQ's abandoned-job handling, which
        # would fail jobs without our mirror_failure handler (no job_failure row).
        rows.append(QueueRow(
            name=spec.name, queued=q.count,
            started=q.started_job_registry.get_job_count(cleanup=False),
            failed=q.failed_job_registry.get_job_count(cleanup=False),
            scheduled=q.scheduled_job_registry.get_job_count(cleanup=False),
            deferred=q.deferred_job_registry.get_job_count(cleanup=False),
        ))
    return rows


def worker_rows(conn: redis.Redis) -> list[WorkerRow]:
    rows = []
    for worker in Worker.all(connection=conn):
        rows.append(WorkerRow(
            name=worker.name, state=worker.get_state(), current_job=worker.get_current_job_id(),
            queues=worker.queue_names(), last_heartbeat=_aware(worker.last_heartbeat),
            successful=worker.successful_job_count, failed=worker.failed_job_count,
            host=f"{worker.hostname or '?'}:{worker.pid or '?'}",
        ))
    return sorted(rows, key=lambda w: w.name)


def rq_failed_jobs(conn: redis.Redis, limit: int = 50) -> list[RQFailedJob]:
    """The newest entries of every queue's failed registry (RQ keeps them a year)."""
    found: list[RQFailedJob] = []
    for spec in queues.QUEUES:
        registry = Queue(spec.name, connection=conn).failed_job_registry
        ids = registry.get_job_ids(0, limit - 1, desc=True, cleanup=False)
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=conn), strict=True):
            if job is None:
                found.append(RQFailedJob(job_id, spec.name, "?", "", None, "job data expired"))
                continue
            try:
                func_name, args = job.func_name or "?", repr(list(job.args))[:200]
            except Exception:  # an undeserialisable payload must not break the page
                func_name, args = "?", "?"
            try:
                result = job.latest_result()
                reason = _last_line(result.exc_string if result else None)
            except Exception:
                reason = ""
            found.append(RQFailedJob(job_id, spec.name, func_name, args, _aware(job.ended_at), reason))
    found.sort(key=lambda j: j.ended_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return found[:limit]


def redis_snapshot() -> RedisSnapshot:
    """RQ's view of the pipeline, or ``ok=False`` with the error when Redis does not answer."""
    try:
        conn = queues.connection()
        conn.ping()
        return RedisSnapshot(ok=True, queues=queue_rows(conn), workers=worker_rows(conn),
                             failed_jobs=rq_failed_jobs(conn))
    except REDIS_ERRORS as exc:
        return RedisSnapshot(ok=False, error=f"{type(exc).__name__}: {exc}"[:300])
