"""The RQ worker as Kaipiao runs it: heavy imports and mapper configuration before the
fork, a fresh DB pool in every work-horse, failures mirrored into the database."""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

from rq import Queue, Worker
from rq.worker import BaseWorker
from sqlalchemy.orm import configure_mappers

from app import db
from app.jobs import queues, sender
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
    from rq import SimpleWorker

    names = queue_names or list(queues.QUEUE_NAMES)
    conn = queues.connection()
    qs = [Queue(n, connection=conn, default_timeout=queues.SPECS[n].timeout) for n in names]
    cls: type[BaseWorker] = Worker if fork else SimpleWorker
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
    try:
        return worker.work(burst=burst, with_scheduler=with_scheduler, max_jobs=max_jobs, logging_level="INFO")
    finally:
        if running is not None:
            running.stop()  # what is in flight is sent and recorded before the process ends
