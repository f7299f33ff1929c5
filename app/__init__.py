"""Kaipiao application factory."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.settings import Settings


def create_app(test_config: dict[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__, instance_path=str(settings.instance_path), instance_relative_config=False)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        KAIPIAO=settings,
    )
    if test_config:
        app.config.update(test_config)

    from app import crypto, db

    crypto.configure(settings.encryption_key)
    db.configure(app.config.get("DATABASE_URL", settings.database_url))

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        db.session.remove()

    return app
