"""The OpenAPI 3.1 document of the API, and the JSON schemas it references."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from flask import abort, jsonify

from app.api import bp
from app.auth import public

CONTRACTS = Path(__file__).resolve().parents[1] / "contracts"
SCHEMAS = {"order": "order.schema.json", "invoice-draft": "invoice-draft.schema.json"}

ERRORS = {
    "type": "object",
    "required": ["errors"],
    "properties": {"errors": {"type": "array", "items": {
        "type": "object", "required": ["path", "code", "message"],
        "properties": {"path": {"type": "string", "examples": ["lines[3].unit_price"]},
                       "code": {"type": "string", "examples": ["invalid"]},
                       "message": {"type": "string", "examples": ["not a decimal amount"]}}}}},
}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Errors"}}}}


@cache
def document() -> dict[str, Any]:
    order_ref = {"$ref": "/api/v1/schemas/order.json"}
    draft_ref = {"$ref": "/api/v1/schemas/invoice-draft.json"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Kaipiao API", "version": "1",
                 "description": "Automatic 数电票 invoicing. Money and quantities are decimal strings; "
                                "every error is {\"errors\": [{path, code, message}]}."},
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "token from `kaipiao users token`"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session",
                            "description": "browser session; writes need the X-CSRFToken header"},
            },
            "schemas": {"Errors": ERRORS},
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/v1/preview": {"post": {
                "summary": "Preview the invoice draft(s) for an order",
                "description": "Public and stateless for a shop Kaipiao does not know (seller required, shipped "
                               "default rules). For a configured shop the merchant's seller and published rules "
                               "apply when the caller may see that shop.",
                "security": [{}, {"bearer": []}, {"session": []}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["order"], "additionalProperties": False,
                    "properties": {"order": order_ref, "seller": {"type": "object"},
                                   "options": {"type": "object"}}}}}},
                "responses": {"200": {"description": "the draft",
                                      "content": {"application/json": {"schema": draft_ref}}},
                              "400": _error_response("not JSON"),
                              "403": _error_response("the caller is confined to a merchant (merchant, cs_agent) "
                                                     "and the order's shop is another merchant's"),
                              "422": _error_response("the order, seller or options are invalid")},
            }},
            "/api/v1/orders": {"post": {
                "summary": "Submit one order or a batch ({\"orders\": [...]}, at most 1000)",
                "description": "Each order is validated and upserted idempotently (platform + shop + order id); "
                               "bad orders are rejected one by one with their errors, the rest accepted. "
                               "Roles: operations, cs_agent, admin. A cs_agent writes only its own merchant's "
                               "orders: an order of any other shop refuses the whole call (403, nothing stored).",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [order_ref, {"type": "object", "required": ["orders"],
                                          "properties": {"orders": {"type": "array", "items": order_ref}}}]}}}},
                "responses": {
                    "200": {"description": "at least one order accepted", "content": {"application/json": {
                        "schema": {"type": "object", "properties": {
                            "accepted": {"type": "array"}, "rejected": {"type": "array"},
                            "counts": {"type": "object"}}}}}},
                    "401": _error_response("not authenticated"),
                    "403": _error_response("role not allowed, or an order's shop (orders[i].shop_id) is not "
                                           "one of the caller's merchant's shops"),
                    "422": _error_response("every order was rejected")},
            }},
            "/api/v1/openapi.json": {"get": {"summary": "This document", "security": [{}],
                                             "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/api/v1/schemas/{name}.json": {"get": {
                "summary": "The JSON schemas of the order and the invoice draft", "security": [{}],
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"enum": sorted(SCHEMAS)}}],
                "responses": {"200": {"description": "JSON Schema 2020-12"}, "404": _error_response("unknown")}}},
        },
    }


@bp.route("/openapi.json")
@public
def openapi_json():
    return jsonify(document())


@bp.route("/schemas/<name>.json")
@public
def schema(name: str):
    if name not in SCHEMAS:
        abort(404, description=f"no schema {name!r}; known: {', '.join(sorted(SCHEMAS))}")
    return jsonify(json.loads((CONTRACTS / SCHEMAS[name]).read_text(encoding="utf-8")))
