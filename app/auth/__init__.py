"""Login and roles. Every endpoint declares who may use it; anything unsaid is denied.

- ``@roles_required("operations", ...)`` on a view (admin may do everything).
- ``@public`` for the few endpoints anyone may call (login page, health, buyer H5 pages).
- A ``before_request`` hook refuses any endpoint that declares neither.
- Flask-Admin views inherit ``app.admin.base.SecureView`` whose ``roles`` default to none.

Who is asking: a request with ``Authorization: Bearer <token>`` is that token's user (or
anonymous), whatever cookie it carries, and never gets a login session. Otherwise the signed
session cookie names a server-side session (app/services/user_sessions.py), which must be open:
logout, a password change or deactivation end it, so a copied cookie stops working. No
"remember me" cookie is issued; one alone would not do either, as it carries no session.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Request, abort, current_app, g, jsonify, request, session
from flask_login import LoginManager, current_user, login_user, logout_user

from app import db
from app.models.user import ROLES, User
from app.services import accounts, user_sessions
from app.settings import LoginPolicy

F = TypeVar("F", bound=Callable[..., Any])
PUBLIC = ("*public*",)
SESSION_KEY = "_kaipiao_session"  # the server-side session's token, in the signed cookie


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


def login_policy() -> LoginPolicy:
    return current_app.config["KAIPIAO"].login


def start_session(user: User, token: str) -> None:
    """Log ``user`` in on this browser with the server-side session ``token`` (from sign-in)."""
    lang = session.get("lang")
    session.clear()  # nothing from before the login carries over (but the language)
    if lang is not None:
        session["lang"] = lang
    session[SESSION_KEY] = token
    login_user(user)


def end_session() -> None:
    """Log out: the server-side session is revoked (committed), the cookie forgets it."""
    token = session.pop(SESSION_KEY, None)
    if isinstance(token, str):
        user_sessions.revoke(db.session(), token)
        db.session.commit()
    logout_user()


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
        token = session.get(SESSION_KEY)
        if not isinstance(token, str) or not user_id.isdigit():
            return None
        return user_sessions.user_for_session(db.session(), token, int(user_id), login_policy())

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
