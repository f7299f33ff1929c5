"""The README's first command: `kaipiao run` on embedded defaults (SQLite file + embedded
Redis) migrates, loads the demo, starts the sandbox tax service, workers and scheduler,
feeds orders, and they get decided and issued while the admin is reachable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from app.jobs.processes import kaipiao_cmd

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_demo_runs_on_embedded_defaults(tmp_path: Path):
    instance = Path(f"/tmp/kp-demo-{os.getpid()}")  # short: the embedded Redis socket lives here
    port, tax_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIPIAO_")}
    env.update(KAIPIAO_INSTANCE_PATH=str(instance), KAIPIAO_TAX_GATEWAY_URL=f"http://127.0.0.1:{tax_port}")
    log = (tmp_path / "demo.log").open("wb")
    proc = subprocess.Popen([*kaipiao_cmd(), "run", "--port", str(port), "--demo-orders", "40", "--demo-rate", "20"],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/login", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.5)
        page = requests.get(f"{base}/login", timeout=5)
        assert page.status_code == 200 and "登录" in page.text
        engine = create_engine(f"sqlite:///{instance / 'kaipiao.sqlite3'}")
        issued = 0
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                issued = conn.execute(text("SELECT count(*) FROM invoice WHERE status = 'issued'")).scalar()
            if issued >= 10:
                break
            time.sleep(1)
        engine.dispose()
        assert issued >= 10, (tmp_path / "demo.log").read_text()[-3000:]
        session = requests.Session()
        session.post(f"{base}/login", data={"username": "demo_operations", "password": "operations-demo-2026",
                                            "csrf_token": _csrf(session, base)}, timeout=5)
        invoices = session.get(f"{base}/admin/invoices/", timeout=10)
        assert invoices.status_code == 200 and "issued" in invoices.text
        output = (tmp_path / "demo.log").read_text()
        assert "demo_tax_specialist" in output and "/admin/" in output  # one login per role, where to look
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        from app.redis_conn import stop_embedded_server

        stop_embedded_server(instance)
        subprocess.run(["rm", "-rf", str(instance)], check=False)


def _csrf(session: requests.Session, base: str) -> str:
    import re

    html = session.get(f"{base}/login", timeout=5).text
    return re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html).group(1)
