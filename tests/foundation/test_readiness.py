"""GET /healthz and /readyz, and `kaipiao status`: ready only with the database at head, Redis,
a live worker and scheduler, a healthy provider and issuing not paused; 503 / exit 1 otherwise."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
import redis

from app.cli.jobs import status
from app.jobs.readiness import ALIVE_PREFIX, Pulse
from app.models import GatewayStatus
from app.services.issuing_control import OUTAGE_THRESHOLD

CHECKS = {"database", "migrations", "tax_provider", "issuing", "redis", "workers", "scheduler"}


@pytest.fixture
def alive(redis_url: str) -> None:
    """One RQ worker and the periodic scheduler registered, with a fresh heartbeat."""
    from rq import Worker
    from rq.cron import CronScheduler

    conn = redis.Redis.from_url(redis_url)
    worker = Worker(["decide"], connection=conn, name="readiness-test")
    worker.register_birth()
    worker.heartbeat()
    conn.set(ALIVE_PREFIX + "readiness-test", "1", ex=30)  # its process's pulse
    cron = CronScheduler(connection=conn)
    cron.register_birth()
    cron.heartbeat()


def _ready(client) -> tuple[int, dict]:
    response = client.get("/readyz")
    assert response.headers["Cache-Control"] == "no-store"
    return response.status_code, response.get_json()


def test_healthz_answers_without_the_database(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_ready_with_everything_up(client, alive):
    code, body = _ready(client)
    assert code == 200 and body["ready"] is True, body
    assert set(body["checks"]) == CHECKS
    for check in body["checks"].values():
        assert check["ok"] is True and check["latency_ms"] >= 0


def test_no_worker_is_not_ready(client, redis_url):
    code, body = _ready(client)
    assert code == 503 and body["ready"] is False
    assert body["checks"]["workers"]["ok"] is False and "worker" in body["checks"]["workers"]["detail"]
    assert body["checks"]["database"]["ok"] is True


def test_a_killed_worker_is_not_ready_once_its_pulse_lapses(client, redis_url, alive):
    """kill -9 leaves RQ's registration and its recent heartbeat behind for minutes; the
    process's own pulse key lapses within seconds, and then the worker counts as gone."""
    redis.Redis.from_url(redis_url).delete(ALIVE_PREFIX + "readiness-test")  # its TTL ran out
    code, body = _ready(client)
    assert code == 503 and body["checks"]["workers"]["ok"] is False


def test_the_pulse_keeps_its_key_alive_until_stopped(redis_url):
    conn = redis.Redis.from_url(redis_url)
    key = ALIVE_PREFIX + "pulse-test"
    pulse = Pulse(conn, "pulse-test", every=0.05, ttl=1).start()
    try:
        conn.pexpire(key, 300)  # only a refresh brings it back above 900 ms
        deadline = time.monotonic() + 5
        while conn.pttl(key) < 900 and time.monotonic() < deadline:  # refreshed by the thread
            time.sleep(0.02)
        assert conn.exists(key) and conn.pttl(key) >= 900
    finally:
        pulse.stop()
    assert not conn.exists(key)  # a clean stop is gone at once


def test_paused_issuing_and_failing_provider_are_not_ready(client, db_session, alive):
    db_session.add(GatewayStatus(scope="seller:1", paused=True, pause_code="auth_expired", pause_reason="x"))
    db_session.add(GatewayStatus(scope="seller:2", failure_streak=OUTAGE_THRESHOLD))
    db_session.commit()
    code, body = _ready(client)
    assert code == 503
    assert body["checks"]["issuing"] == {**body["checks"]["issuing"], "ok": False}
    assert body["checks"]["tax_provider"]["ok"] is False
    assert "seller:" not in json.dumps(body) and "x" != body["checks"]["issuing"]["detail"]


def test_database_down_is_not_ready(settings, db_session, tmp_path, alive):
    from app import create_app

    bad = dataclasses.replace(settings, database_url=f"sqlite:///{tmp_path}/missing/dir/kaipiao.sqlite3")
    app = create_app({"TESTING": True, "DATABASE_URL": bad.database_url}, settings=bad)
    code, body = _ready(app.test_client())
    assert code == 503
    assert body["checks"]["database"]["ok"] is False and "missing" not in body["checks"]["database"]["detail"]
    assert body["checks"]["migrations"]["ok"] is False and body["checks"]["redis"]["ok"] is True


def test_migrations_behind_is_not_ready(client, owner_url, alive):
    from sqlalchemy import text

    from app.db import make_engine

    engine = make_engine(owner_url)  # the owner: the app role may not touch alembic_version
    with engine.begin() as conn:
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        conn.execute(text("UPDATE alembic_version SET version_num = 'older'"))
    try:
        code, body = _ready(client)
        assert code == 503 and body["checks"]["migrations"]["ok"] is False
        assert "older" in body["checks"]["migrations"]["detail"]
    finally:  # PostgreSQL tests share the schema: put the head back
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": head})
        engine.dispose()


def test_redis_down_is_not_ready(settings, db_session, tmp_path):
    from app import create_app

    bad = dataclasses.replace(settings, redis_url="redis://127.0.0.1:1/0")
    app = create_app({"TESTING": True, "DATABASE_URL": bad.database_url}, settings=bad)
    code, body = _ready(app.test_client())
    assert code == 503 and body["checks"]["redis"]["ok"] is False
    assert body["checks"]["workers"]["ok"] is False and body["checks"]["scheduler"]["ok"] is False


def test_status_command_exits_non_zero_when_not_ready(runner, redis_url):
    result = runner.invoke(status)
    assert result.exit_code == 1 and "NOT READY" in result.output and "FAIL  workers" in result.output


def test_status_command_ready(runner, alive):
    result = runner.invoke(status, ["--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ready"] is True
