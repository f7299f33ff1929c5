"""Invoice drafts rendered as a 数电票-like face, in HTML (preview, web pages) and PDF.

    render_html(draft, invoice_index=None, standalone=True, locale="zh_CN", inline_css=True) -> str
    render_pdf(draft, invoice_index=None) -> bytes
    FACE_CSS: the stylesheet a page must include when it embeds ``inline_css=False`` output
    STATIC_DIR: where face.css lives, for a page that links it as a file

``draft`` is an invoice draft (contracts/invoice-draft.schema.json). An invoice may also carry
``number`` (20 digits), ``issued_at`` (ISO 8601) and ``drawer`` (开票人) once issued; an
invoice without ``number`` is a preview and carries a 预览 watermark instead.
"""

from __future__ import annotations

from app.render import face as _face
from app.render.pdf import CJKFontMissing, RefusedURL, check_cjk_font, make_url_fetcher, render_pdf

__all__ = [
    "FACE_CSS",
    "STATIC_DIR",
    "TEMPLATES_DIR",
    "CJKFontMissing",
    "RefusedURL",
    "check_cjk_font",
    "make_url_fetcher",
    "render_html",
    "render_pdf",
]

TEMPLATES_DIR = _face.TEMPLATES_DIR
STATIC_DIR = _face.STATIC_DIR
FACE_CSS: str = _face.static_text("face.css")


def render_html(
    draft: dict,
    *,
    invoice_index: int | None = None,
    standalone: bool = True,
    locale: str = "zh_CN",
    inline_css: bool = True,
) -> str:
    """All invoices of ``draft`` (or the one at ``invoice_index``, 0-based) as HTML.

    ``standalone=True``: a whole UTF-8 document with the stylesheet inlined.
    ``standalone=False``: a fragment for a web page: the faces plus one ``<style>`` block; the
    result is ``markupsafe.Markup`` so a Flask template can print it without ``|safe``.
    ``inline_css=False`` leaves the ``<style>`` out: our pages link face.css as a file instead
    (their Content-Security-Policy refuses inline style).
    The decision summary (action, reasons) is shown above the faces; the PDF never has it.
    ``locale`` only changes the labels around the face (``en*`` → English, else Chinese):
    the face itself is Chinese, as the tax platform prints it.
    """
    return _face.render_faces(
        draft,
        invoice_index=invoice_index,
        standalone=standalone,
        locale=locale,
        with_decision=True,
        inline_css=inline_css,
    )
