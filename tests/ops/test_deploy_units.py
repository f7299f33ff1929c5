"""deploy/: the example systemd units start as written, and the environment template names
every setting.

Each unit's ExecStart is run as written, with only the install path's ``kaipiao`` replaced by
this venv's, systemd's ``%H``/``%i`` expanded, and the web port replaced by a free one; the
environment is a temporary instance folder and the test's database and Redis.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTALLED = "/opt/kaipiao/.venv/bin/kaipiao"
KAIPIAO = str(Path(sys.executable).parent / "kaipiao")


def _exec_start(unit: str) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(DEPLOY / unit)
    argv = shlex.split(parser["Service"]["ExecStart"])
    assert argv[0] == INSTALLED, argv
    assert parser["Service"]["EnvironmentFile"] == "/etc/kaipiao/kaipiao.env"
    expand = {"%H": socket.gethostname(), "%i": "1", "%%": "%"}
    return [KAIPIAO] + [re.sub("%[Hi%]", lambda m: expand[m.group()], a) for a in argv[1:]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unit_env(settings, tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIPIAO_")}
    env.update({
        "KAIPIAO_INSTANCE_PATH": str(tmp_path / "unit-instance"),
        "KAIPIAO_DATABASE_URL": settings.database_url,
        "KAIPIAO_MIGRATION_DATABASE_URL": settings.migration_url,
        "KAIPIAO_REDIS_URL": settings.redis_url,
        "KAIPIAO_SECRET_KEY": "unit-test-secret",
        "KAIPIAO_ENCRYPTION_KEYS": "unit-test-key",
        "KAIPIAO_TAX_GATEWAY_URL": f"http://127.0.0.1:{_free_port()}",
        "KAIPIAO_SENDER_THREADS": "1",
    })
    return env


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _stop(proc: subprocess.Popen, log: Path) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(5)
    # kaipiao run's children (sandbox tax, scheduler) are stopped by it on SIGTERM.


def _stays_up(proc: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def test_web_unit_answers_http_on_its_bind(unit_env, tmp_path):
    argv = _exec_start("kaipiao-web.service")
    port = _free_port()
    argv = [f"127.0.0.1:{port}" if a == "127.0.0.1:8000" else a for a in argv]
    assert argv[1:3] == ["run", "--no-demo"]
    log = tmp_path / "web.log"
    proc = _start(argv, unit_env, log)
    try:
        deadline = time.monotonic() + 60
        answer = None
        while time.monotonic() < deadline and answer is None:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/admin/", timeout=2, allow_redirects=False)
            except requests.ConnectionError:
                time.sleep(0.3)
        assert answer is not None, log.read_text()[-3000:]
        assert answer.status_code in {200, 302}, answer.status_code
        _stays_up(proc, log, 3)
    finally:
        _stop(proc, log)
    assert proc.returncode is not None


def test_worker_unit_registers_with_redis(unit_env, settings, tmp_path):
    import redis
    from rq import Worker

    argv = _exec_start("kaipiao-worker@.service")
    log = tmp_path / "worker.log"
    proc = _start(argv, unit_env, log)
    name = f"kaipiao-{socket.gethostname()}-1"
    try:
        connection = redis.Redis.from_url(settings.redis_url)
        deadline = time.monotonic() + 60
        while name not in {w.name for w in Worker.all(connection=connection)}:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        _stays_up(proc, log, 3)
    finally:
        _stop(proc, log)
    assert name not in {w.name for w in Worker.all(connection=connection)}  # warm shutdown deregisters


def test_scheduler_unit_runs(unit_env, tmp_path):
    argv = _exec_start("kaipiao-scheduler.service")
    log = tmp_path / "scheduler.log"
    proc = _start(argv, unit_env, log)
    try:
        deadline = time.monotonic() + 60
        while "scheduling" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.3)
        _stays_up(proc, log, 3)
    finally:
        _stop(proc, log)


def test_the_environment_template_names_every_setting_with_a_comment():
    template = (DEPLOY / "kaipiao.env.example").read_text()
    settings_source = (ROOT / "app" / "settings.py").read_text()
    names = set(re.findall(r'_(?:env|bool)\("([A-Z_]+)"', settings_source)) | {"TAX_APP_KEY", "TAX_APP_SECRET"}
    names |= {"TIMING_" + n for n in ("STUCK_ISSUING", "STALE_UNDECIDED", "REQUEUE_AFTER", "OUTBOX_GRACE",
                                      "FIRST_POLL", "MAX_BACKOFF")}
    missing = sorted(n for n in names if not re.search(rf"^#? ?KAIPIAO_{n}=", template, re.M))
    assert not missing, missing
    lines = template.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"KAIPIAO_\w+=", line):
            assert any(lines[j].startswith("#") for j in range(max(0, i - 6), i)), line
            value = line.split("=", 1)[1]
            if any(w in line for w in ("SECRET", "KEY", "PASSWORD")) and value:
                assert value.startswith("<"), f"a real-looking secret in the template: {line}"
