"""Failed jobs brought back by hand: requeued in RQ while it still has them, otherwise their
work re-created through the outbox (one row per id, which the dispatcher batches again). The
job failure rows are closed in the same unit of work (app.services.operator_actions)."""

from __future__ import annotations

from typing import Any

from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

from app.errors import Refused
from app.jobs import queues
from app.jobs.monitor import REDIS_ERRORS
from app.models.job import JobFailure, JobName, Queue
from app.services.operator_actions import open_job_failure, resolve_job_failures
from app.services.unit_of_work import UnitOfWork


def retry_failure(work: UnitOfWork, failure_id: int, actor: str) -> tuple[str, str]:
    """Requeue or re-create the work of a mirrored job failure; returns (how: "requeued" or
    "recreated", the job id)."""
    failure = open_job_failure(work, failure_id)
    how = _requeue_or_recreate(work, failure)
    resolve_job_failures(work, failure.job_id, how, actor)
    return how, failure.job_id


def requeue_rq_job(work: UnitOfWork, job_id: str, actor: str) -> None:
    """A job in RQ's failed registry with no job_failure row (the database was down when it failed)."""
    if not job_id:
        raise Refused("no_job", "no job id given")
    try:
        Job.fetch(job_id, connection=queues.connection()).requeue()
    except (NoSuchJobError, InvalidJobOperation):
        raise Refused("not_in_registry", f"job {job_id} is not in RQ's failed registry", job=job_id) from None
    resolve_job_failures(work, job_id, "requeued", actor)


def _ids_of(args: list[Any]) -> list[int | str]:
    """JobFailure.args is the job's first argument: a list of ids for the batch jobs."""
    first = list(args or [])[:1]
    if not first:
        return []
    value = first[0]
    return list(value) if isinstance(value, list | tuple) else [value]


def _requeue_or_recreate(work: UnitOfWork, failure: JobFailure) -> str:
    try:
        Job.fetch(failure.job_id, connection=queues.connection()).requeue()
        return "requeued"
    except (NoSuchJobError, InvalidJobOperation, *REDIS_ERRORS):
        pass
    func_name = failure.func.rsplit(".", 1)[-1]
    ids = _ids_of(failure.args)
    job = JobName(func_name) if func_name in JobName.__members__.values() else None
    if job is None or not job.takes_ids or not ids:
        raise Refused("not_recreatable", f"{failure.func} cannot be re-created from its arguments (periodic "
                      "jobs run again on their own schedule); mark it resolved instead", func=failure.func)
    if failure.queue not in Queue.__members__.values():
        raise Refused("unknown_queue", f"unknown queue {failure.queue}", queue=failure.queue)
    for item_id in ids:
        work.queue_job(job, item_id)
    return "recreated"
