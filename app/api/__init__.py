"""JSON API ``/api/v1``: every error is ``{"errors": [{"path", "code", "message"}]}``.

Authentication: a session cookie (then the ``X-CSRFToken`` header is required on writes)
or ``Authorization: Bearer <token>`` (see ``kaipiao users token``).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, current_app, g, jsonify, render_template, request
from flask_babel import gettext as _
from flask_login import current_user
from flask_wtf.csrf import CSRFError, validate_csrf
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from wtforms.validators import ValidationError

from app.engine.json_input import load_json
from app.errors import Forbidden, KaipiaoError, Problem

# What makes a body unreadable (400); a readable one with wrong content is 422.
BAD_REQUEST = frozenset({"not_json", "invalid_json", "not_utf8"})

bp = Blueprint("api", __name__, url_prefix="/api/v1")


def errors(problems: list[Problem], status: int = 422) -> tuple[Any, int]:
    return jsonify({"errors": [p.as_dict() for p in problems]}), status


def json_body(what: str = "body", *, check: bool = True) -> Any:
    """The request's JSON, or a 400/413/422 naming what is wrong and where (never a stack
    trace): not JSON, not UTF-8, too large, too deep, text that is not Unicode (app.engine.json_input).

    ``check=False``: only what makes the body unreadable as a whole is refused here; the
    caller checks each document in it (a batch: one bad order never refuses the others)."""
    if not request.is_json:
        raise KaipiaoError(Problem(what, "not_json", "send Content-Type: application/json"))
    return load_json(request.get_data(cache=True), what, check=check)


@bp.before_request
def _csrf_for_cookie_sessions() -> Any:
    # Bearer-token clients carry no ambient credentials; cookie sessions need the CSRF header.
    if request.method in ("GET", "HEAD", "OPTIONS") or getattr(g, "kaipiao_token_auth", False):
        return None
    if not current_user.is_authenticated:
        return None  # anonymous callers reach only public endpoints, which hold no session state
    try:
        if current_app.config.get("WTF_CSRF_ENABLED", True):
            validate_csrf(request.headers.get("X-CSRFToken", ""))
    except (ValidationError, CSRFError) as exc:
        return errors([Problem("headers.X-CSRFToken", "csrf", str(exc))], 400)
    return None


@bp.errorhandler(KaipiaoError)
def _domain_error(exc: KaipiaoError):
    if isinstance(exc, Forbidden):
        return errors(exc.problems, 403)
    status = 400 if any(p.code in BAD_REQUEST for p in exc.problems) else 422
    return errors(exc.problems, status)


def _http_error(exc: HTTPException):
    if isinstance(exc, RequestEntityTooLarge):
        return too_large()
    if not request.path.startswith("/api/"):
        return exc
    code = (exc.name or "error").lower().replace(" ", "_")
    return errors([Problem(request.path, code, exc.description or exc.name)], exc.code or 500)


def too_large() -> Any:
    """413, naming the limit: JSON for the API, a page for people."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.path.startswith("/api/"):
        return errors([Problem("body", "too_large", f"the request is larger than the limit of {limit} bytes "
                                                    "(KAIPIAO_MAX_REQUEST_BYTES)")], 413)
    message = _("The request is larger than the limit of %(size)s.", size=f"{limit / 1024 / 1024:.1f} MB")
    return render_template("web/error.html", title=_("Too large"), message=message), 413


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
