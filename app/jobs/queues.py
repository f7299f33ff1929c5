"""RQ queues named by purpose, with their timeouts.

Jobs take ids (never ORM objects) and call service functions in app/engine; see tasks.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from rq import Queue

from app.redis_conn import get_redis
from app.settings import Settings


@dataclass(frozen=True)
class QueueSpec:
    name: str
    timeout: int  # seconds a job may run before RQ kills it
    batch: int  # ids per job when the outbox dispatches in bulk


# Order = priority a worker listens in: finishing work beats starting new work.
QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec("issue", timeout=300, batch=50),
    QueueSpec("decide", timeout=300, batch=100),
    QueueSpec("deliver", timeout=300, batch=20),
    QueueSpec("render", timeout=120, batch=10),
    QueueSpec("sync", timeout=600, batch=1),
    QueueSpec("periodic", timeout=120, batch=1),
)
QUEUE_NAMES = tuple(q.name for q in QUEUES)
SPECS = {q.name: q for q in QUEUES}

_settings: Settings | None = None


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def current_settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.from_env()
    return _settings


def connection():
    return get_redis(current_settings())


def queue(name: str) -> Queue:
    if name not in SPECS:
        raise ValueError(f"unknown queue {name!r}; known: {', '.join(QUEUE_NAMES)}")
    return Queue(name, connection=connection(), default_timeout=SPECS[name].timeout)
