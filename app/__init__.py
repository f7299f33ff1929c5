"""Kaipiao application factory."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter, Map

from app.settings import Settings


def create_app(test_config: dict[str, Any] | None = None, settings: Settings | None = None) -> Flask:
    settings = settings or Settings.from_env()
    app = Flask(__name__, instance_path=str(settings.instance_path), instance_relative_config=False)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        KAIPIAO=settings,
        DATABASE_URL=settings.database_url,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        WTF_CSRF_TIME_LIMIT=None,
        # A body beyond this is refused (413) before it is read; form fields likewise.
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        MAX_FORM_MEMORY_SIZE=settings.max_request_bytes,
        JSON_AS_ASCII=False,
    )
    if test_config:
        app.config.update(test_config)
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.url_map.converters["int"] = _RowId


    from app import crypto, db, logging_setup

    logging_setup.configure_from(settings)
    crypto.configure(settings.encryption_keys)
    db.configure(app.config["DATABASE_URL"])
    from app.jobs import queues

    queues.configure(settings)

    @app.teardown_appcontext
    def _remove_session(_exc: BaseException | None) -> None:
        db.session.remove()

    from flask_wtf.csrf import CSRFProtect

    from app.web import request_id

    request_id.init_app(app)  # first: every other hook's log lines carry the request id
    csrf = CSRFProtect(app)
    app.extensions["kaipiao_csrf"] = csrf

    from app import auth, i18n, web
    from app.auth.views import bp as auth_bp

    i18n.init_app(app)
    auth.init_app(app)
    app.register_blueprint(auth_bp)
    web.init_app(app)

    # Feature packages register their blueprints / admin views here.
    for name in ("app.api", "app.web.pages", "app.web.metrics", "app.admin"):
        _init_optional(app, name)
    from app.web import headers

    headers.init_app(app)  # last: it hands the admin registered above its CSP nonce
    return app


class _RowId(IntegerConverter):
    """``<int:...>`` in every route stops at the largest row id: a longer number is a 404, not
    a database error (PostgreSQL refuses to compare an integer column with it)."""

    def __init__(self, map: Map, fixed_digits: int = 0, min: int | None = None,
                 max: int | None = None, signed: bool = False) -> None:
        from app.models.types import MAX_ROW_ID

        super().__init__(map, fixed_digits, min, MAX_ROW_ID if max is None else max, signed)


def _init_optional(app: Flask, name: str) -> None:
    import importlib

    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        return
    init = getattr(module, "init_app", None)
    if init is not None:
        init(app)
