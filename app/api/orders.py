"""``POST /api/v1/orders``: one order or a batch, through the one intake service."""

from __future__ import annotations

from flask import jsonify
from flask_login import current_user

from app.api import bp, errors, json_body
from app.auth import roles_required
from app.errors import KaipiaoError, Problem
from app.services.intake import OtherMerchant, ingest
from app.services.unit_of_work import unit_of_work

MAX_BATCH = 1000


@bp.route("/orders", methods=["POST"])
@roles_required("operations", "cs_agent")
def post_orders():
    body = json_body(check=False)  # each order is checked on its own by intake
    batch = isinstance(body, dict) and "orders" in body
    if isinstance(body, dict) and "orders" in body:
        docs = body["orders"]
        if not isinstance(docs, list):
            raise KaipiaoError(Problem("orders", "invalid", "orders must be a list of order objects"))
        unknown = sorted(repr(k)[1:-1] for k in body if k != "orders")
        if unknown:
            raise KaipiaoError([Problem(k, "unknown_field", "unknown field (a batch is {\"orders\": [...]})")
                                for k in unknown])
    else:
        docs = [body]
    if len(docs) > MAX_BATCH:
        raise KaipiaoError(Problem("orders", "too_many", f"at most {MAX_BATCH} orders per call, got {len(docs)}"))
    try:
        with unit_of_work() as work:
            result = ingest(work, docs, source="api", actor=f"api:{current_user.username}",
                            merchant_id=current_user.merchant_scope())
    except OtherMerchant as exc:  # a merchant-scoped caller named another merchant's shop
        return errors([Problem(f"orders[{i}].{p.path}" if batch else p.path, p.code, p.message)
                       for i, p in exc.refused], 403)
    status = 200 if result.accepted or not result.rejected else 422
    return jsonify(result.as_dict()), status
