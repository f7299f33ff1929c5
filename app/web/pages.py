"""Merchant preview page: paste or upload an order, see the invoice face, download the PDF."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, render_template, request
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from app.auth import roles_required
from app.engine.json_input import load_json
from app.errors import Forbidden, Problem, ValidationFailed
from app.services.preview import preview_order
from app.web import NAV, NavEntry

bp = Blueprint("pages", __name__)
PREVIEW_ROLES = ("merchant", "tax_specialist", "cs_agent", "operations")


def _parse(field: str, text: str | None, required: bool) -> Any:
    if not text or not text.strip():
        if required:
            raise ValidationFailed(Problem(field, "required", _("required")))
        return None
    return load_json(text, field)


def _inputs() -> tuple[str, str, str]:
    order_text = request.form.get("order", "")
    upload = request.files.get("order_file")
    if upload and upload.filename:
        raw = upload.read()
        try:
            order_text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValidationFailed(Problem("order_file", "not_utf8", _("not UTF-8 text (byte %(at)d)", at=exc.start))) from None
    return order_text, request.form.get("seller", ""), request.form.get("options", "")


def _draft(order_text: str, seller_text: str, options_text: str) -> dict[str, Any]:
    order = _parse("order", order_text, True)
    seller = _parse("seller", seller_text, False)
    options = _parse("options", options_text, False)
    return preview_order(order, seller, options, user=current_user)


@bp.route("/preview", methods=["GET", "POST"])
@roles_required(*PREVIEW_ROLES)
def preview():
    from app.render import render_html

    context: dict[str, Any] = {"order": "", "seller": "", "options": "", "face": None, "errors": [], "draft": None}
    status = 200
    if request.method == "POST":
        try:
            order_text, seller_text, options_text = _inputs()
            context.update(order=order_text, seller=seller_text, options=options_text)
            draft = _draft(order_text, seller_text, options_text)
            context["draft"] = draft
            if draft["invoices"]:
                context["face"] = render_html(draft, standalone=False, locale=str(get_locale()), inline_css=False)
        except (ValidationFailed, Forbidden) as exc:
            context["errors"] = exc.problems
            status = 403 if isinstance(exc, Forbidden) else 422
    return render_template("web/preview.html", **context), status


@bp.route("/preview/pdf", methods=["POST"])
@roles_required(*PREVIEW_ROLES)
def preview_pdf():
    from app.render import render_pdf

    try:
        draft = _draft(*_inputs())
        if not draft["invoices"]:
            raise ValidationFailed(Problem("order", "nothing_to_invoice", _("this order gives no invoice to print")))
    except (ValidationFailed, Forbidden) as exc:
        return render_template("web/preview.html", order=request.form.get("order", ""),
                               seller=request.form.get("seller", ""), options=request.form.get("options", ""),
                               face=None, draft=None, errors=exc.problems), 403 if isinstance(exc, Forbidden) else 422
    pdf = render_pdf(draft)
    name = f"preview-{draft.get('order_id', 'order')}.pdf"
    return Response(pdf, mimetype="application/pdf", headers={"Content-Disposition": f'attachment; filename="{name}"'})


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    NAV.append(NavEntry("pages.preview", _l("Invoice preview"), _l("Paste an order, see the invoice and its PDF"),
                        PREVIEW_ROLES))
