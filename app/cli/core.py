"""Core commands: database, users, demo data, the demo (`kaipiao run`) and benchmarks."""

from __future__ import annotations

import getpass
import sys

import click
from flask import current_app
from flask.cli import with_appcontext

from app import db
from app.models import User
from app.models.user import ROLES, is_merchant_scoped
from app.services.demo_seed import DemoLogin


def _settings():
    return current_app.config["KAIPIAO"]


@click.group("db")
def db_group() -> None:
    """Database schema (Alembic migrations are the only way it is made)."""


@db_group.command("upgrade")
@click.option("--revision", default="head")
@with_appcontext
def db_upgrade(revision: str) -> None:
    from app.migrate import app_role, upgrade

    settings = _settings()
    role = app_role(settings)
    upgrade(settings.migration_url, revision, role)
    granted = f" (rights granted to {role})" if role else ""
    click.echo(f"database at {revision}: {_redacted(settings.migration_url)}{granted}")


@db_group.command("downgrade")
@click.option("--revision", default="-1")
@with_appcontext
def db_downgrade(revision: str) -> None:
    from app.migrate import app_role, downgrade

    settings = _settings()
    downgrade(settings.migration_url, revision, app_role(settings))


@db_group.command("current")
@with_appcontext
def db_current() -> None:
    from app.migrate import current

    click.echo(current(_settings().migration_url) or "(empty)")


@click.group("users")
def users_group() -> None:
    """Create users and API tokens."""


@users_group.command("create")
@click.argument("username")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(ROLES))
@click.option("--password", envvar="KAIPIAO_NEW_USER_PASSWORD", help="or KAIPIAO_NEW_USER_PASSWORD; prompted if absent")
@click.option("--merchant-id", type=int, help="required for the merchant-scoped roles (merchant, cs_agent)")
@with_appcontext
def users_create(username: str, roles: tuple[str, ...], password: str | None, merchant_id: int | None) -> None:
    from app.errors import KaipiaoError
    from app.services.accounts import create_user

    if is_merchant_scoped(roles) and not merchant_id:
        raise click.UsageError("the roles merchant and cs_agent need --merchant-id (they see and write only their "
                               "own merchant's data)")
    if not password:
        password = getpass.getpass("password: ")
    try:
        create_user(db.session(), username, list(roles), password, merchant_id)
    except KaipiaoError as exc:
        raise click.ClickException(str(exc)) from exc
    db.session.commit()
    click.echo(f"created {username} ({', '.join(roles)})")


@users_group.command("token")
@click.argument("username")
@with_appcontext
def users_token(username: str) -> None:
    """Issue a new API token (the old one stops working); shown once."""
    from app.services.accounts import issue_api_token

    user = db.session.query(User).filter_by(username=username).one_or_none()
    if user is None:
        raise click.ClickException(f"no user {username!r}")
    token = issue_api_token(user)
    db.session.commit()
    click.echo(token)


@click.command("seed")
@click.option("--generate", is_flag=True,
              help="generate random passwords and print them once (the default when stdin is not a terminal)")
@with_appcontext
def seed(generate: bool) -> None:
    """Load the demo merchant, shops and one login per role (idempotent).

    Outside the demo (`kaipiao run`) the demo's published passwords are never used: each
    new demo user (or one still with its published password) gets a password typed at the
    prompt, or a random one printed once.
    """
    from app.services.demo_seed import generated_logins, roles_needing_password, seed_demo

    session = db.session()
    roles = roles_needing_password(session)
    generate = generate or not _interactive()
    if generate:
        logins = generated_logins(roles)
    else:
        logins = [_prompted_login(role) for role in roles]
    seed_demo(session, logins)
    session.commit()
    click.echo("demo data loaded")
    if not logins:
        click.echo("every demo user exists already with a password of its own (unchanged)")
    elif generate:
        click.echo("New logins (username / password), shown only this once:")
        for login in logins:
            click.echo(f"  {login.role:<15} {login.username:<22} {login.password}")
    else:
        click.echo("passwords set for: " + ", ".join(login.username for login in logins))


def _interactive() -> bool:
    return sys.stdin.isatty()


def _prompted_login(role: str) -> DemoLogin:
    from app.services.demo_seed import demo_username, generate_password, published_password

    username = demo_username(role)
    while True:
        password = getpass.getpass(f"password for {username} ({role}; empty: generate one): ")
        if not password:
            password = generate_password()
            click.echo(f"  {username}: {password}")
            return DemoLogin(role, username, password)
        problem = _password_problem(password, published_password(role))
        if problem:
            click.echo(f"  {problem}; try again", err=True)
        elif getpass.getpass(f"again for {username}: ") != password:
            click.echo("  the two entries differ; try again", err=True)
        else:
            return DemoLogin(role, username, password)


def _password_problem(password: str, published: str) -> str | None:
    if password == published:
        return "that is the demo's published password"
    try:
        User(username="-").set_password(password)  # the model's own rules (length)
    except ValueError as exc:
        return str(exc)
    return None


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.command("run")
@click.option("--bind", envvar="KAIPIAO_WEB_BIND", help="host:port to serve on (or KAIPIAO_WEB_BIND) [127.0.0.1:5000]")
@click.option("--host", help="host to serve on (with --port; instead of --bind)")
@click.option("--port", type=int, help="port to serve on")
@click.option("--web-workers", envvar="KAIPIAO_WEB_WORKERS", type=int,
              help="web processes (or KAIPIAO_WEB_WORKERS) [twice the machine's cores]")
@click.option("--threads", envvar="KAIPIAO_WEB_THREADS", type=int, help="threads per web process (or KAIPIAO_WEB_THREADS) [2]")
@click.option("--timeout", envvar="KAIPIAO_WEB_TIMEOUT", type=int,
              help="seconds a request may take before its web process is replaced (or KAIPIAO_WEB_TIMEOUT) [30]")
@click.option("--dev", is_flag=True, help="Werkzeug's development server instead of gunicorn (never in production)")
@click.option("--workers", default=1, type=int, help="RQ worker processes to start")
@click.option("--no-demo", is_flag=True, help="do not load demo data or generate orders")
@click.option("--demo-orders", default=200, show_default=True, help="how many demo orders to feed")
@click.option("--demo-rate", default=2.0, show_default=True, help="demo orders per second")
@with_appcontext
def run(bind: str | None, host: str | None, port: int | None, web_workers: int | None, threads: int | None,
        timeout: int | None, dev: bool, workers: int, no_demo: bool, demo_orders: int, demo_rate: float) -> None:
    """Run Kaipiao: migrate, (demo data), web app (gunicorn) + workers + scheduler (+ sandbox tax service).

    The web app is served by gunicorn; SIGHUP restarts its web processes gracefully, SIGTERM
    or Ctrl-C stops everything."""
    from app.cli import demo
    from app.web.gunicorn_config import DEFAULT_BIND

    if host is not None or port is not None or not bind:
        default_host, _, default_port = DEFAULT_BIND.rpartition(":")
        bind = f"{host or default_host}:{port or default_port}"
    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the real app, not the proxy
    demo.run(app, bind=bind, workers=workers, demo=not no_demo, demo_orders=demo_orders, demo_rate=demo_rate,
             dev=dev, web={"workers": web_workers, "threads": threads, "timeout": timeout})


def register(group: click.Group) -> None:
    group.add_command(db_group)
    group.add_command(users_group)
    group.add_command(seed)
    group.add_command(run)

