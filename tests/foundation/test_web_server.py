"""The production web server: `gunicorn wsgi:app` with the shared settings, KAIPIAO_WEB_*
from the environment, a graceful restart on SIGHUP that keeps answering."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from app.web.gunicorn_config import settings

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_settings_come_from_options_then_environment(monkeypatch):
    monkeypatch.setenv("KAIPIAO_WEB_WORKERS", "3")
    monkeypatch.setenv("KAIPIAO_WEB_THREADS", "1")
    monkeypatch.setenv("KAIPIAO_WEB_BIND", "0.0.0.0:8080")
    conf = settings()
    assert conf["workers"] == 3 and conf["worker_class"] == "sync" and conf["bind"] == ["0.0.0.0:8080"]
    conf = settings(bind="127.0.0.1:9", workers=2, threads=8, timeout=5)
    assert conf["workers"] == 2 and conf["threads"] == 8 and conf["worker_class"] == "gthread"
    assert conf["bind"] == ["127.0.0.1:9"] and conf["timeout"] == 5


def test_embedded_server_takes_every_setting():
    from flask import Flask

    from app.web.server import KaipiaoServer

    server = KaipiaoServer(Flask("x"), settings(bind="127.0.0.1:9", workers=2, threads=3, timeout=7))
    assert server.cfg.workers == 2 and server.cfg.threads == 3 and server.cfg.timeout == 7
    assert server.cfg.bind == ["127.0.0.1:9"] and server.cfg.post_fork.__name__ == "post_fork"


def _get(url: str, deadline: float) -> requests.Response:
    while True:
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_gunicorn_wsgi_app_serves_and_restarts_on_hup(tmp_path: Path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIPIAO_")}
    env.update(KAIPIAO_INSTANCE_PATH=str(tmp_path), KAIPIAO_WEB_BIND=f"127.0.0.1:{port}", KAIPIAO_WEB_WORKERS="1")
    log = tmp_path / "gunicorn.log"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gunicorn"), "wsgi:app"], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        assert _get(url, time.monotonic() + 30).status_code == 200
        os.kill(proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 30
        while log.read_text().count("Booting worker") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.read_text().count("Booting worker") >= 2, log.read_text()
        assert _get(url, deadline).status_code == 200
        assert "gthread" in log.read_text()  # the shared config file was used (threads)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
