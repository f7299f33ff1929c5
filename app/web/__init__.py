"""Server-rendered pages for people (merchants, customer service, buyers' H5)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, Flask, Response, jsonify, render_template, request, send_from_directory, url_for
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from app.auth import public, roles_required, user_may
from app.web.headers import cacheable

bp = Blueprint("web", __name__)


@dataclass(frozen=True)
class NavEntry:
    endpoint: str
    label: object
    help: object
    roles: tuple[str, ...]


# Pages appear in the menu for the roles that may open them; packages append theirs.
NAV: list[NavEntry] = [
    NavEntry("admin.index", _l("Back office"), _l("Orders, invoices, rules, shops"),
             ("tax_specialist", "operations", "auditor", "merchant", "cs_agent")),
]


def nav_items() -> list[dict[str, object]]:
    items = []
    for entry in NAV:
        if user_may(current_user, entry.roles):
            try:
                url = url_for(entry.endpoint)
            except Exception:  # endpoint not registered in this app (e.g. a partial test app)
                continue
            items.append({"url": url, "label": entry.label, "help": entry.help,
                          "active": request.path == url})
    return items


@bp.route("/")
@roles_required("tax_specialist", "operations", "auditor", "merchant", "cs_agent")
def home():
    return render_template("web/home.html")


@bp.route("/healthz")
@public
def healthz():
    """Liveness: the process answers (the database is /readyz's business: a database outage
    must not make an orchestrator restart every web process)."""
    return jsonify({"status": "ok"})


@bp.route("/readyz")
@public
def readyz():
    """Readiness: database and migrations, Redis, a live worker, the provider, issuing not
    paused; each check with its latency. 503 when any fails. No personal data."""
    from flask import current_app

    from app.jobs.readiness import readiness

    report = readiness(current_app.config["KAIPIAO"])
    response = jsonify(report.as_dict())
    response.status_code = 200 if report.ok else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/render/face.css")
@public
@cacheable
def face_css() -> Response:
    """The invoice face's stylesheet, linked by the pages that show a face (no inline style)."""
    from app.render import STATIC_DIR

    return send_from_directory(STATIC_DIR, "face.css", mimetype="text/css")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.jinja_env.globals["nav_items"] = nav_items
