"""The RQ worker as Kaipiao runs it: heavy imports and mapper configuration before the
fork, a fresh DB pool in every work-horse, failures mirrored into the database."""

from __future__ import annotations

import logging
import os
import time
import traceback
from typing import Any

from rq import Queue, SimpleWorker, Worker
from rq.worker import BaseWorker
from sqlalchemy.orm import configure_mappers

from app import db, logging_setup
from app.jobs import queues, readiness, sender
from app.settings import Settings

log = logging.getLogger(__name__)


def prepare_process(settings: Settings) -> None:
    """Everything a job needs, loaded once in the parent so forks start warm."""
    from app import crypto

    crypto.configure(settings.encryption_keys)
    db.configure(settings.database_url)
    queues.configure(settings)
    import app.jobs.tasks
    import app.models  # noqa: F401

    configure_mappers()
    # A forked work-horse must not reuse the parent's pooled connections.
    os.register_at_fork(after_in_child=_dispose_pool_in_child)


def _dispose_pool_in_child() -> None:
    try:
        db.get_engine().dispose(close=False)
    except RuntimeError:
        pass


def mirror_failure(job, exc_type, exc_value, tb) -> bool:
    """RQ exception handler: keep the failure in the database (Redis results expire,
    and a flushed Redis must not make a failure disappear from view)."""
    from app.models.job import JobFailure

    try:
        with db.transaction() as session:
            session.add(JobFailure(
                job_id=job.id, queue=job.origin, func=job.func_name, args=list(job.args or [])[:1],
                exc_type=exc_type.__name__, message=str(exc_value)[:2000],
                traceback="".join(traceback.format_exception(exc_type, exc_value, tb))[-8000:],
            ))
    except Exception:  # the database itself is down: RQ's failed registry still has it
        log.exception("could not mirror job failure %s", job.id)
    return True  # let RQ's default handler move the job to the failed registry too


# The ids a job's arguments are, by job: bound to its log lines beside the job id.
_ID_KEYS = {"issue_invoices": "invoice_ids", "poll_invoices": "invoice_ids",
            "decide_requests": "invoicing_request_ids"}


def job_log_context(job) -> dict[str, Any]:
    """The logging context of ``job``: its id, the request id(s) that caused it (from its
    ``meta``, set by app/jobs/outbox.py) and the ids it works on."""
    values: dict[str, Any] = {"job_id": job.id}
    request_ids = (job.meta or {}).get("request_ids") or []
    if request_ids:
        shown = request_ids[:10]
        values["request_id"] = ",".join(shown) + (f",+{len(request_ids) - len(shown)}" if len(request_ids) > 10 else "")
    key = _ID_KEYS.get((job.func_name or "").rsplit(".", 1)[-1])
    if key and job.args and isinstance(job.args[0], list):
        values[key] = job.args[0][:50]
    return values


class _LoggingContext:
    """Binds ``job_log_context`` while RQ performs a job (in the worker, or in a work-horse)."""

    def perform_job(self, job, queue, *args: Any, **kwargs: Any) -> bool:
        with logging_setup.context(**job_log_context(job)):
            started = time.monotonic()
            log.info("job %s started", job.func_name)
            ok = super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc]
            log.info("job %s %s in %.3f s", job.func_name, "finished" if ok else "failed",
                     time.monotonic() - started)
            return ok


class KaipiaoWorker(_LoggingContext, Worker):
    pass


class KaipiaoSimpleWorker(_LoggingContext, SimpleWorker):
    pass


def warm_up() -> None:
    """Compile the shipped rules and load the shipped catalogue once, so neither a forked
    work-horse nor the first job of a simple worker pays for it."""
    from app.engine.taxcodes import default_catalogue
    from app.rules import default_ruleset

    default_catalogue()
    default_ruleset()


def build_worker(settings: Settings, queue_names: list[str] | None = None, name: str | None = None,
                 maintenance_interval: int = 60, fork: bool = False) -> BaseWorker:
    """``fork=False`` (default): RQ's SimpleWorker runs jobs in the worker process, which keeps
    the DB pool, the compiled rule sets, the caches and the providers' keep-alive connections
    warm across jobs (a forked horse starts cold: ~120 ms a job measured here, which dominated
    small batches). Job timeouts still apply (SIGALRM); recycle with ``--max-jobs``.
    ``fork=True``: a fresh work-horse per job, for isolation."""
    names = queue_names or list(queues.QUEUE_NAMES)
    conn = queues.connection()
    qs = [Queue(n, connection=conn, default_timeout=queues.SPECS[n].timeout) for n in names]
    cls: type[BaseWorker] = KaipiaoWorker if fork else KaipiaoSimpleWorker
    # A kill -9'd worker's job is noticed by another worker's maintenance pass;
    # 60 s instead of RQ's 600 s default keeps abandoned jobs short-lived.
    return cls(qs, connection=conn, name=name, exception_handlers=[mirror_failure],
               maintenance_interval=maintenance_interval)


def run_worker(settings: Settings, queue_names: list[str] | None = None, *, burst: bool = False,
               with_scheduler: bool = True, max_jobs: int | None = None, **kwargs: Any) -> bool:
    prepare_process(settings)
    warm_up()
    # Jobs hand their provider calls to sender threads and take the next job (a forked
    # work-horse ends with its job, so there every job makes its own calls).
    running = None if kwargs.get("fork") or settings.sender_threads <= 0 else sender.start(
        settings, settings.sender_threads)
    worker = build_worker(settings, queue_names, **kwargs)
    pulse = readiness.Pulse(worker.connection, worker.name).start()
    try:
        return worker.work(burst=burst, with_scheduler=with_scheduler, max_jobs=max_jobs, logging_level=settings.log_level)
    finally:
        pulse.stop()
        if running is not None:
            running.stop()  # what is in flight is sent and recorded before the process ends
