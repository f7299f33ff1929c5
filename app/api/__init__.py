"""JSON API ``/api/v1``: every error is ``{"errors": [{"path", "code", "message"}]}``.

Authentication: a session cookie (then the ``X-CSRFToken`` header is required on writes)
or ``Authorization: Bearer <token>`` (see ``kaipiao users token``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, g, jsonify, request
from flask_login import current_user
from flask_wtf.csrf import CSRFError, validate_csrf
from werkzeug.exceptions import HTTPException
from wtforms.validators import ValidationError

from app.errors import KaipiaoError, Problem

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def errors(problems: list[Problem], status: int = 422) -> tuple[Any, int]:
    return jsonify({"errors": [p.as_dict() for p in problems]}), status


def json_body(what: str = "body") -> Any:
    """The request's JSON, or a 400/422 with a clear reason (never a stack trace)."""
    if not request.is_json:
        raise KaipiaoError(Problem(what, "not_json", "send Content-Type: application/json"))
    data = request.get_json(silent=True)
    if data is None:
        raise KaipiaoError(Problem(what, "invalid_json", "the body is not valid JSON"))
    return data


@bp.before_request
def _csrf_for_cookie_sessions() -> Any:
    # Bearer-token clients carry no ambient credentials; cookie sessions need the CSRF header.
    if request.method in ("GET", "HEAD", "OPTIONS") or getattr(g, "kaipiao_token_auth", False):
        return None
    if not current_user.is_authenticated:
        return None  # anonymous callers reach only public endpoints, which hold no session state
    try:
        from flask import current_app

        if current_app.config.get("WTF_CSRF_ENABLED", True):
            validate_csrf(request.headers.get("X-CSRFToken", ""))
    except (ValidationError, CSRFError) as exc:
        return errors([Problem("headers.X-CSRFToken", "csrf", str(exc))], 400)
    return None


@bp.errorhandler(KaipiaoError)
def _domain_error(exc: KaipiaoError):
    status = 400 if any(p.code in ("not_json", "invalid_json") for p in exc.problems) else 422
    return errors(exc.problems, status)


def _http_error(exc: HTTPException):
    if not request.path.startswith("/api/"):
        return exc
    code = (exc.name or "error").lower().replace(" ", "_")
    return errors([Problem(request.path, code, exc.description or exc.name)], exc.code or 500)


def init_app(app: Flask) -> None:
    from app.api import openapi, orders, preview  # noqa: F401  (register routes)

    app.extensions["kaipiao_csrf"].exempt(bp)
    app.register_blueprint(bp)
    app.register_error_handler(HTTPException, _http_error)

    @app.errorhandler(500)
    def _internal(exc):
        if request.path.startswith("/api/"):
            return errors([Problem(request.path, "internal_error", "internal error; it has been logged")], 500)
        return exc
