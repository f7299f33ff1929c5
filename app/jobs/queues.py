"""RQ queues (app.models.job.Queue) with their timeouts and batch sizes, and the settings of
the process that runs jobs. Jobs take ids (never ORM objects) and call services; see tasks.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from rq import Queue

from app.models.job import Queue as QueueName
from app.redis_conn import get_redis
from app.services import unit_of_work
from app.settings import Settings


@dataclass(frozen=True)
class QueueSpec:
    name: str
    timeout: int  # seconds a job may run before RQ kills it
    batch: int  # ids per job when the outbox dispatches in bulk


# Order = priority a worker listens in: finishing work beats starting new work.
QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(QueueName.ISSUE, timeout=300, batch=50),
    QueueSpec(QueueName.DECIDE, timeout=300, batch=100),
    QueueSpec(QueueName.DELIVER, timeout=300, batch=20),
    QueueSpec(QueueName.RENDER, timeout=120, batch=10),
    QueueSpec(QueueName.SYNC, timeout=600, batch=1),
    QueueSpec(QueueName.PERIODIC, timeout=120, batch=1),
)
QUEUE_NAMES = tuple(q.name for q in QUEUES)
SPECS = {q.name: q for q in QUEUES}

_settings: Settings | None = None


def configure(settings: Settings) -> None:
    """The settings of this process, and work queued by a unit of work reaches the workers
    right after its commit (app.services.unit_of_work)."""
    global _settings
    _settings = settings
    from app.jobs.outbox import dispatch_pending

    unit_of_work.dispatch_after_commit(dispatch_pending)


def current_settings() -> Settings:
    if _settings is None:
        configure(Settings.from_env())
    assert _settings is not None
    return _settings


def connection():
    return get_redis(current_settings())


def queue(name: str) -> Queue:
    if name not in SPECS:
        raise ValueError(f"unknown queue {name!r}; known: {', '.join(QUEUE_NAMES)}")
    return Queue(name, connection=connection(), default_timeout=SPECS[name].timeout)
