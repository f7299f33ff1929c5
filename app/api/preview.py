"""``POST /api/v1/preview``: the draft an order would be invoiced as (contracts/README.md).

Public and stateless for an order whose shop Kaipiao does not know (``seller`` required,
shipped default rules). For a configured shop the merchant's seller data and published
rules apply — but only for a logged-in user who may see that shop; anyone else gets the
stateless preview, so stored merchant data never leaks to an anonymous caller.
"""

from __future__ import annotations

from flask import jsonify
from flask_login import current_user

from app.api import bp, json_body
from app.auth import public
from app.errors import KaipiaoError, Problem
from app.services.preview import preview_order

ALLOWED_KEYS = {"order", "seller", "options"}


@bp.route("/preview", methods=["POST"])
@public
def post_preview():
    body = json_body()
    if not isinstance(body, dict):
        raise KaipiaoError(Problem("", "invalid", "the body must be an object with an order"))
    unknown = sorted(set(body) - ALLOWED_KEYS)
    if unknown:
        raise KaipiaoError([Problem(k, "unknown_field", "unknown field") for k in unknown])
    if "order" not in body:
        raise KaipiaoError(Problem("order", "required", "required"))
    draft = preview_order(body["order"], body.get("seller"), body.get("options"), user=current_user)
    return jsonify(draft)
