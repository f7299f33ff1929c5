"""`kaipiao run`: everything a merchant needs on one machine, on embedded defaults.

Migrates the database, loads demo data, starts the sandbox tax service, RQ workers and the
web app, feeds demo orders, and prints where to look and one login per role.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import click
from flask import Flask

from app import db
from app.jobs.processes import Children, kaipiao_cmd
from app.migrate import app_role, upgrade
from app.redis_conn import redis_url


def available_commands() -> set[str]:
    from app.cli import cli

    return set(cli.commands)


def run(app: Flask, *, bind: str, workers: int, demo: bool, demo_orders: int = 200,
        demo_rate: float = 2.0, dev: bool = False, web: dict[str, Any] | None = None) -> None:
    """``bind`` is ``host:port``; ``web`` the gunicorn options (web_workers, threads, timeout);
    ``dev`` serves through Werkzeug's development server instead (never in production)."""
    host, _, port_text = bind.rpartition(":")
    host, port = host.strip("[]") or "127.0.0.1", int(port_text)
    settings = app.config["KAIPIAO"]
    instance: Path = settings.instance_path
    logs = instance / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    url = app.config["DATABASE_URL"]
    click.echo(f"• database: {'SQLite file ' + url.split('///', 1)[-1] if url.startswith('sqlite') else 'PostgreSQL'}")
    upgrade(settings.migration_database_url or url, app_role=app_role(settings))  # as the owner
    click.echo("• schema migrated to head")
    rurl = redis_url(settings)
    click.echo(f"• redis: {'embedded ' if not settings.redis_url else ''}{rurl}")
    os.environ.setdefault("KAIPIAO_INSTANCE_PATH", str(instance))
    if not settings.redis_url:
        os.environ["KAIPIAO_REDIS_URL"] = rurl  # children share the running embedded server

    commands = available_commands()
    children = Children()
    published: set[str] = set()  # roles whose demo user has the published password
    with app.app_context():
        from app.services.rule_versions import load_shipped_defaults
        from app.services.tax_catalogue import seed_catalogue

        seed_catalogue(db.session())  # first start: the shipped 税收分类编码 seed
        load_shipped_defaults(db.session())  # first start: the shipped rule sets
        if demo:
            from app.services.demo_seed import demo_logins, roles_with_published_password, seed_demo

            # Demo mode: the published passwords, printed below (never outside the demo).
            seed_demo(db.session(), demo_logins(), tax_gateway_url=settings.tax_gateway_url)
            published.update(roles_with_published_password(db.session()))
        db.session.commit()
    if demo:
        click.echo("• demo merchant, seller entities, 5 shops and one login per role loaded")
    if "sandbox-tax" in commands and settings.tax_gateway == "sandbox":
        from urllib.parse import urlsplit

        tax = urlsplit(settings.tax_gateway_url)
        children.start("sandbox-tax", [*kaipiao_cmd(), "sandbox-tax", "--db", str(instance / "sandbox-tax.sqlite3"),
                                       "--host", tax.hostname or "127.0.0.1", "--port", str(tax.port or 8765)],
                       logs / "sandbox-tax.log")
        click.echo(f"• sandbox tax service on {settings.tax_gateway_url} (log: {logs / 'sandbox-tax.log'})")
    if "worker" in commands and workers > 0:  # --workers 0: the web app alone (deploy/: units of their own)
        for i in range(workers):
            children.start(f"worker-{i}", [*kaipiao_cmd(), "worker"], logs / f"worker-{i}.log")
        children.start("scheduler", [*kaipiao_cmd(), "scheduler"], logs / "scheduler.log")
        click.echo(f"• {workers} RQ worker(s) and the periodic scheduler started (logs in {logs})")
    if demo:
        children.start("demo-feed", [*kaipiao_cmd(), "orders", "generate", "--rate", str(demo_rate),
                                     "--count", str(demo_orders)], logs / "demo-feed.log")
        click.echo(f"• {demo_orders} demo orders are being fed into the sandbox shops ({demo_rate}/s)")

    click.echo("")
    click.echo(f"Kaipiao is running: http://{host}:{port}/   (admin: http://{host}:{port}/admin/)")
    if demo:
        from app.services.demo_seed import demo_logins

        click.echo("Logins (username / password):")
        for login in demo_logins():
            password = login.password if login.role in published else "(its own password, set outside the demo)"
            click.echo(f"  {login.role:<15} {login.username:<22} {password}")
    if host in ("127.0.0.1", "localhost", "::1") and "COOKIE_SECURE" not in settings.extra:
        # Plain http on loopback: browsers would drop Secure cookies on 127.0.0.1.
        app.config["SESSION_COOKIE_SECURE"] = app.config["REMEMBER_COOKIE_SECURE"] = False
        click.echo("(cookies not marked Secure: plain http on loopback; set KAIPIAO_COOKIE_SECURE=1 behind TLS)")
    click.echo("Press Ctrl-C to stop.")

    def _terminate(*_args) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the demo like Ctrl-C: children included

    signal.signal(signal.SIGTERM, _terminate)  # gunicorn's arbiter installs its own (graceful stop)
    owner = os.getpid()
    try:
        if dev:
            from werkzeug.serving import run_simple

            click.echo("(Werkzeug development server: --dev, never in production)")
            run_simple(host, port, app, threaded=True, use_reloader=False)
        else:
            from app.web.server import serve

            serve(app, bind=f"[{host}]:{port}" if ":" in host else f"{host}:{port}", **(web or {}))
    except KeyboardInterrupt:
        pass
    finally:
        if os.getpid() == owner:  # not in a forked web worker leaving
            children.stop()
            if not settings.redis_url:
                from app.redis_conn import stop_embedded_server

                stop_embedded_server(instance)
            time.sleep(0.1)
