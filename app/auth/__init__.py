"""Login and roles. Every endpoint declares who may use it; anything unsaid is denied.

- ``@roles_required("operations", ...)`` on a view (admin may do everything).
- ``@public`` for the few endpoints anyone may call (login page, health, buyer H5 pages).
- A ``before_request`` hook refuses any endpoint that declares neither.
- Flask-Admin views inherit ``app.admin.base.SecureView`` whose ``roles`` default to none.

A request with ``Authorization: Bearer <token>`` is that token's user (or anonymous),
whatever cookie it carries.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Request, abort, g, jsonify, request
from flask_login import LoginManager, current_user

from app import db
from app.models.user import ROLES, User
from app.services import accounts

F = TypeVar("F", bound=Callable[..., Any])
PUBLIC = ("*public*",)


def _bearer_token(req: Request) -> str | None:
    header = req.headers.get("Authorization", "")
    return header[7:] if header.startswith("Bearer ") else None


class _LoginManager(LoginManager):
    def _load_user(self) -> None:
        # A bearer request is its token's user before and instead of any cookie: Flask-Login
        # would first apply "strong" session protection to a stray anonymous (or logged-out)
        # session cookie and give up there, never asking the request loader; and a cookie
        # must not stand in for a wrong token either.
        if _bearer_token(request) is not None:
            return self._update_request_context_with_user(self._load_user_from_request(request))
        return super()._load_user()


login_manager = _LoginManager()
login_manager.login_view = "auth.login"
login_manager.session_protection = "strong"


def roles_required(*roles: str) -> Callable[[F], F]:
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return view(*args, **kwargs)

        wrapper._kaipiao_roles = tuple(roles)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorator


def public(view: F) -> F:
    view._kaipiao_roles = PUBLIC  # type: ignore[attr-defined]
    return view


def user_may(user: Any, roles: tuple[str, ...]) -> bool:
    if roles == PUBLIC:
        return True
    if not getattr(user, "is_authenticated", False):
        return False
    return user.has_role("admin", *roles)


def _wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


def _deny(status: int) -> Any:
    if _wants_json():
        code = "unauthenticated" if status == 401 else "forbidden"
        message = "log in or send an API token" if status == 401 else "your roles do not allow this"
        return jsonify({"errors": [{"path": request.path, "code": code, "message": message}]}), status
    if status == 401:
        return login_manager.unauthorized()
    abort(status)


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    admin_blueprints: set[str] = app.extensions.setdefault("kaipiao_admin_blueprints", set())

    @login_manager.user_loader
    def _load(user_id: str) -> User | None:
        user = db.session.get(User, int(user_id))
        return user if user and user.active else None

    @login_manager.request_loader
    def _load_from_token(req: Request) -> User | None:
        token = _bearer_token(req)
        if token is None:
            return None
        user = accounts.user_for_token(db.session(), token)
        if user is not None:
            g.kaipiao_token_auth = True
        return user

    @app.before_request
    def _enforce_roles() -> Any:
        endpoint = request.endpoint
        if endpoint is None or endpoint == "static":
            return None  # 404s and static files
        if request.blueprint in admin_blueprints:
            return None  # Flask-Admin views guard themselves (SecureView.is_accessible)
        view = app.view_functions.get(endpoint)
        roles = getattr(view, "_kaipiao_roles", None)
        if roles is None:
            return _deny(403)  # nobody said who may use it
        if roles == PUBLIC:
            return None
        if not current_user.is_authenticated:
            return _deny(401)
        if not user_may(current_user, roles):
            return _deny(403)
        return None
