"""`kaipiao run`: everything a merchant needs on one machine, on embedded defaults.

Migrates the database, loads demo data, starts the sandbox tax service, RQ workers and the
web app, feeds demo orders, and prints where to look and one login per role.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
from flask import Flask

from app import db
from app.migrate import upgrade
from app.redis_conn import redis_url


def _kaipiao_cmd() -> list[str]:
    exe = shutil.which("kaipiao", path=str(Path(sys.executable).parent)) or shutil.which("kaipiao")
    return [exe] if exe else [sys.executable, "-m", "app.cli"]


class Children:
    """Child processes that die with the demo."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        atexit.register(self.stop)

    def start(self, name: str, args: list[str], log: Path) -> subprocess.Popen:
        fh = open(log, "ab")  # noqa: SIM115 - lives as long as the child
        proc = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy(),
                                start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.procs.clear()


def available_commands() -> set[str]:
    from app.cli import cli

    return set(cli.list_commands(None))  # type: ignore[arg-type]


def run(app: Flask, *, host: str, port: int, workers: int, demo: bool) -> None:
    settings = app.config["KAIPIAO"]
    instance: Path = settings.instance_path
    logs = instance / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    url = app.config["DATABASE_URL"]
    click.echo(f"• database: {'SQLite file ' + url.split('///', 1)[-1] if url.startswith('sqlite') else 'PostgreSQL'}")
    upgrade(url)
    click.echo("• schema migrated to head")
    rurl = redis_url(settings)
    click.echo(f"• redis: {'embedded ' if not settings.redis_url else ''}{rurl}")
    os.environ.setdefault("KAIPIAO_INSTANCE_PATH", str(instance))
    if not settings.redis_url:
        os.environ["KAIPIAO_REDIS_URL"] = rurl  # children share the running embedded server

    commands = available_commands()
    children = Children()
    if demo:
        from app.seed import demo_logins, seed_demo

        with app.app_context():
            seed_demo(db.session)
            if "rules" in commands:
                from app.rules.store import load_shipped_defaults

                load_shipped_defaults(db.session)
            db.session.commit()
        click.echo("• demo merchant, seller entities, 5 shops and one login per role loaded")
    if "sandbox-tax" in commands and settings.tax_gateway == "sandbox":
        children.start("sandbox-tax", [*_kaipiao_cmd(), "sandbox-tax", "--db", str(instance / "sandbox-tax.sqlite3")],
                       logs / "sandbox-tax.log")
        click.echo(f"• sandbox tax service on {settings.tax_gateway_url} (log: {logs / 'sandbox-tax.log'})")
    if "worker" in commands:
        for i in range(workers):
            children.start(f"worker-{i}", [*_kaipiao_cmd(), "worker", "--with-scheduler"], logs / f"worker-{i}.log")
        click.echo(f"• {workers} RQ worker(s) started (logs in {logs})")
    if demo and "demo-feed" in commands:
        children.start("demo-feed", [*_kaipiao_cmd(), "demo-feed"], logs / "demo-feed.log")
        click.echo("• demo orders are being synced from the sandbox shops")

    click.echo("")
    click.echo(f"Kaipiao is running: http://{host}:{port}/   (admin: http://{host}:{port}/admin/)")
    if demo:
        from app.seed import demo_logins

        click.echo("Logins (username / password):")
        for login in demo_logins():
            click.echo(f"  {login.role:<15} {login.username:<22} {login.password}")
    if host in ("127.0.0.1", "localhost", "::1") and "COOKIE_SECURE" not in settings.extra:
        # Plain http on loopback: browsers would drop Secure cookies on 127.0.0.1.
        app.config["SESSION_COOKIE_SECURE"] = app.config["REMEMBER_COOKIE_SECURE"] = False
        click.echo("(cookies not marked Secure: plain http on loopback; set KAIPIAO_COOKIE_SECURE=1 behind TLS)")
    click.echo("Press Ctrl-C to stop.")
    try:
        from werkzeug.serving import run_simple

        run_simple(host, port, app, threaded=True, use_reloader=False)
    finally:
        children.stop()
        time.sleep(0.1)
