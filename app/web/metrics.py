"""``GET /metrics``: the Prometheus scrape (definitions in app/metrics.py).

Public for the role hook (no user session: a scraper is not a person) but guarded by its own
bearer token, ``KAIPIAO_METRICS_TOKEN``, compared in constant time. Without a token configured
the endpoint answers 404, as if it did not exist; a missing or wrong token gets 401.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Flask, Response, abort, current_app, request

from app.auth import public

bp = Blueprint("metrics", __name__)


@bp.route("/metrics")
@public
def metrics() -> Response:
    expected = current_app.config["KAIPIAO"].metrics_token
    if not expected:
        abort(404)
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return Response("metrics need the bearer token\n", 401, {"WWW-Authenticate": 'Bearer realm="metrics"'},
                        mimetype="text/plain")
    from app import metrics
    from app.jobs.metrics_gauges import GaugeCollector

    body, content_type = metrics.render((GaugeCollector(),))
    return Response(body, 200, {"Cache-Control": "no-store"}, content_type=content_type)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
