"""Core commands: database, users, demo data, the demo (`kaipiao run`) and benchmarks."""

from __future__ import annotations

import getpass

import click
from flask import current_app
from flask.cli import with_appcontext

from app import db
from app.models import User
from app.models.user import ROLES, is_merchant_scoped


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
@with_appcontext
def seed() -> None:
    """Load the demo merchant, shops and one login per role (idempotent)."""
    from app.seed import seed_demo

    seed_demo(db.session())
    db.session.commit()
    click.echo("demo data loaded")


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@click.command("run")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--workers", default=1, type=int, help="RQ worker processes to start")
@click.option("--no-demo", is_flag=True, help="do not load demo data or generate orders")
@click.option("--demo-orders", default=200, show_default=True, help="how many demo orders to feed")
@click.option("--demo-rate", default=2.0, show_default=True, help="demo orders per second")
@with_appcontext
def run(host: str, port: int, workers: int, no_demo: bool, demo_orders: int, demo_rate: float) -> None:
    """Run Kaipiao: migrate, (demo data), web app + workers + scheduler (+ sandbox tax service)."""
    from app.cli import demo

    app = current_app._get_current_object()  # type: ignore[attr-defined]  # the real app, not the proxy
    demo.run(app, host=host, port=port, workers=workers, demo=not no_demo,
             demo_orders=demo_orders, demo_rate=demo_rate)


def register(group: click.Group) -> None:
    group.add_command(db_group)
    group.add_command(users_group)
    group.add_command(seed)
    group.add_command(run)

