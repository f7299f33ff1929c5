"""Alembic environment: one migration chain for SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context

import app.models  # noqa: F401  (registers every table on Base.metadata)
from app.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    from app.settings import Settings

    return Settings.from_env().migration_url


def _app_role() -> str | None:
    if "app_role" in config.attributes:
        return config.attributes["app_role"]
    from app.migrate import app_role
    from app.settings import Settings

    return app_role(Settings.from_env())


def _render_item(type_, obj, autogen_context):
    """Render our TypeDecorators as their plain storage types so migrations stay frozen
    even if app/models/types.py changes."""
    from sqlalchemy.types import TypeDecorator

    if type_ == "type" and isinstance(obj, TypeDecorator):
        impl = obj.impl_instance if hasattr(obj, "impl_instance") else obj.impl
        return f"sa.{impl!r}"
    return False


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables (and drops
        # triggers: migrations re-create the append-only guards, see app/guards.py).
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()
        role = _app_role()
        if role and connection.dialect.name == "postgresql":
            # The application's role owns nothing: it gets its rights on every table anew
            # after each upgrade (and downgrade), so tables added later are covered.
            from app.guards import grant_app_role

            grant_app_role(connection, role)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
