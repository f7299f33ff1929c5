"""Security headers on every response: one policy, set here and nowhere else.

- ``Content-Security-Policy``: everything from our own origin; no inline script or style
  except an element carrying this request's nonce (Flask-Admin's few inline scripts get it
  through ``Admin.csp_nonce_generator``; our own templates need none: their scripts and
  styles are static files). ``frame-ancestors 'none'`` unless the view is ``@frameable``.
- ``X-Frame-Options: DENY`` for browsers that ignore ``frame-ancestors`` (dropped on a
  ``@frameable`` page: it cannot name several origins).
- ``Referrer-Policy: same-origin``, ``X-Content-Type-Options: nosniff``.
- ``Cache-Control: no-store`` on everything but static files: pages, API answers, previews
  and downloads carry personal data and session-bound CSRF tokens, so no browser or proxy
  keeps them. Static files keep Flask's conditional caching (ETag, revalidated).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response, g, request

F = TypeVar("F", bound=Callable[..., Any])

FRAME_DENY = "'none'"


def csp_nonce() -> str:
    """This request's nonce (made on first use); a tag carrying it may be inline."""
    nonce = g.get("kaipiao_csp_nonce")
    if nonce is None:
        nonce = g.kaipiao_csp_nonce = secrets.token_urlsafe(18)
    return nonce


def frameable(view: F) -> F:
    """The page may be framed by the origins of ``KAIPIAO_PANEL_FRAME_ORIGINS`` (the
    customer-service panel inside a helpdesk tool); with none configured it stays unframeable."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.kaipiao_frameable = True
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def cacheable(view: F) -> F:
    """A response with nothing personal (a stylesheet served by a view): cached like a static
    file, by the view's own Cache-Control or ETag, instead of no-store."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        g.kaipiao_cacheable = True
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def content_security_policy(nonce: str | None, frame_ancestors: str = FRAME_DENY) -> str:
    inline = f" 'nonce-{nonce}'" if nonce else ""
    directives = [
        "default-src 'self'",
        f"script-src 'self'{inline}",
        f"style-src 'self'{inline}",
        # Bootstrap's stylesheet draws icons (toggler, selects) as data: SVGs.
        "img-src 'self' data:",
        "font-src 'self' data:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        f"frame-ancestors {frame_ancestors}",
    ]
    return "; ".join(directives)


def _is_static(endpoint: str | None) -> bool:
    # ``static`` is ours, ``admin.static`` Flask-Admin's; blueprints name theirs ``<bp>.static``.
    return endpoint is not None and (endpoint == "static" or endpoint.endswith(".static"))


def init_app(app: Flask) -> None:
    """Register the headers (call it last in create_app: it hands Flask-Admin the nonce)."""
    origins: tuple[str, ...] = app.config["KAIPIAO"].panel_frame_origins
    frame_origins = " ".join(origins) if origins else FRAME_DENY
    app.jinja_env.globals["csp_nonce"] = csp_nonce
    admin = app.extensions.get("kaipiao_admin")
    if admin is not None:
        admin.csp_nonce_generator = csp_nonce

    @app.after_request
    def _security_headers(response: Response) -> Response:
        framed = g.get("kaipiao_frameable", False) and frame_origins != FRAME_DENY
        headers = response.headers
        headers["Content-Security-Policy"] = content_security_policy(
            g.get("kaipiao_csp_nonce"), frame_origins if framed else FRAME_DENY)
        if framed:
            headers.pop("X-Frame-Options", None)
        else:
            headers["X-Frame-Options"] = "DENY"
        headers["Referrer-Policy"] = "same-origin"
        headers["X-Content-Type-Options"] = "nosniff"
        if not (_is_static(request.endpoint) or g.get("kaipiao_cacheable", False)):
            headers["Cache-Control"] = "no-store"
            headers.pop("Expires", None)
        return response
