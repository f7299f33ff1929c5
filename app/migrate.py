"""Programmatic Alembic: the only way Kaipiao's schema is made, on SQLite and PostgreSQL.

Migrations run as the owner of the tables (``Settings.migration_url``:
``KAIPIAO_MIGRATION_DATABASE_URL``, else ``KAIPIAO_DATABASE_URL``). On PostgreSQL, when the
application connects as another role, every upgrade ends by granting that role exactly its
rights (app/guards.py ``grant_app_role``, called by migrations/env.py).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def alembic_config(url: str, app_role: str | None = None) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["url"] = url
    cfg.attributes["app_role"] = app_role
    return cfg


def app_role(settings: Settings) -> str | None:
    """The role the application connects as, when migrations connect as another one:
    ``KAIPIAO_DATABASE_APP_ROLE``, else the user of ``KAIPIAO_DATABASE_URL`` if it is not the
    migration URL's user. None: one role does both (SQLite, the embedded default)."""
    if settings.database_app_role:
        return settings.database_app_role
    from sqlalchemy.engine import make_url

    app_user = make_url(settings.database_url).username
    owner = make_url(settings.migration_url).username
    return app_user if app_user and app_user != owner else None


def upgrade(url: str, revision: str = "head", app_role: str | None = None) -> None:
    """Migrate the database at ``url`` (the owner's); ``app_role``: grant it the application's rights."""
    command.upgrade(alembic_config(url, app_role), revision)


def upgrade_for(settings: Settings, revision: str = "head") -> None:
    """Migrate as the owner and grant the application role, as the settings say."""
    upgrade(settings.migration_url, revision, app_role(settings))


def downgrade(url: str, revision: str = "-1", app_role: str | None = None) -> None:
    command.downgrade(alembic_config(url, app_role), revision)


def heads(url: str = "sqlite://") -> list[str]:
    return list(ScriptDirectory.from_config(alembic_config(url)).get_heads())


def current(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    from app.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
