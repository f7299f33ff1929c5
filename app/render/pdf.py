"""Invoice faces as PDF through WeasyPrint.

Per process: one FontConfiguration and the stylesheets parsed once (stack-notes: ~30 %
faster), created lazily under a lock. Renders are serialised by a lock as well: the shared
Pango font map is not documented as thread-safe, and throughput comes from job processes,
not threads (render in jobs, never in a web request of the issue path).
"""

from __future__ import annotations

import logging
import mimetypes
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from app.render import face as face_module

log = logging.getLogger(__name__)

CJK_FAMILY = "Noto Sans CJK SC"
CJK_PACKAGE = "fonts-noto-cjk"


class CJKFontMissing(RuntimeError):
    """The CJK font the face names is not installed: every Chinese glyph would be tofu."""


class RefusedURL(ValueError):
    """The renderer asked for something outside app/render/static."""


def check_cjk_font(family: str = CJK_FAMILY) -> str:
    """Return the font file fontconfig picks for ``family``; raise ``CJKFontMissing`` if it
    would substitute another family (fontconfig never fails a match, it falls back silently)."""
    from weasyprint.text.ffi import ffi, fontconfig

    pattern = ffi.gc(fontconfig.FcPatternCreate(), fontconfig.FcPatternDestroy)
    fontconfig.FcPatternAddString(pattern, b"family", family.encode())
    fontconfig.FcConfigSubstitute(ffi.NULL, pattern, fontconfig.FcMatchPattern)
    fontconfig.FcDefaultSubstitute(pattern)
    result = ffi.new("FcResult *")
    match = fontconfig.FcFontMatch(ffi.NULL, pattern, result)
    if match == ffi.NULL:
        raise CJKFontMissing(f"fontconfig found no font at all; install the Debian package {CJK_PACKAGE}")
    match = ffi.gc(match, fontconfig.FcPatternDestroy)
    string = ffi.new("FcChar8 **")
    families = []
    index = 0
    while fontconfig.FcPatternGetString(match, b"family", index, string) == 0:  # FcResultMatch
        families.append(ffi.string(string[0]).decode("utf-8", "replace"))
        index += 1
    if family.lower() not in (name.lower() for name in families):
        raise CJKFontMissing(
            f"font {family!r} is not installed (fontconfig would use {families[:1]} instead, "
            f"printing Chinese as empty boxes); install the Debian package {CJK_PACKAGE}"
        )
    fontconfig.FcPatternGetString(match, b"file", 0, string)
    return ffi.string(string[0]).decode("utf-8", "replace")


def _static_root() -> Path:
    return face_module.STATIC_DIR.resolve()


def _make_fetcher_class():
    from weasyprint.urls import URLFetcher, URLFetcherResponse

    class StaticOnlyFetcher(URLFetcher):
        """Serves files under app/render/static and refuses every other URL.

        Draft text is escaped, but a face must never read local files or call out to the
        network whatever ends up in the markup (file:///etc/passwd, http://, data:...).
        """

        def fetch(self, url: str, headers: dict | None = None) -> URLFetcherResponse:
            parts = urlsplit(url)
            if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
                raise RefusedURL(f"refused URL outside app/render/static: {url}")
            root = _static_root()
            path = Path(url2pathname(unquote(parts.path))).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                raise RefusedURL(f"refused URL outside app/render/static: {url}")
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            headers_out = {"Content-Type": content_type}
            if content_type.startswith("text/"):
                headers_out["Content-Type"] = f"{content_type}; charset=utf-8"
            return URLFetcherResponse(path.as_uri(), path.read_bytes(), headers_out)

    return StaticOnlyFetcher


@dataclass(frozen=True)
class _Resources:
    font_config: object
    stylesheets: list
    url_fetcher: object
    base_url: str


_resources: _Resources | None = None
_init_lock = threading.Lock()
_render_lock = threading.Lock()


def make_url_fetcher():
    """A fresh restricted fetcher (WeasyPrint's fetcher API: ``fetch(url)`` / ``__call__``)."""
    return _make_fetcher_class()(fail_on_errors=False)


def resources() -> _Resources:
    """The per-process WeasyPrint state; the first call checks the CJK font."""
    global _resources
    if _resources is None:
        with _init_lock:
            if _resources is None:
                from weasyprint import CSS
                from weasyprint.text import ffi as weasy_ffi
                from weasyprint.text.fonts import FontConfiguration

                check_cjk_font(CJK_FAMILY)
                if weasy_ffi.harfbuzz_subset is None:
                    log.warning("libharfbuzz-subset0 is missing: a Chinese PDF takes seconds, not ms")
                fetcher = make_url_fetcher()
                font_config = FontConfiguration()
                base_url = _static_root().as_uri() + "/"
                stylesheets = [
                    CSS(
                        string=face_module.static_text(name),
                        base_url=base_url,
                        url_fetcher=fetcher,
                        font_config=font_config,
                    )
                    for name in ("face.css", "pdf.css")
                ]
                _resources = _Resources(font_config, stylesheets, fetcher, base_url)
    return _resources


def render_pdf(draft: dict, *, invoice_index: int | None = None) -> bytes:
    """The selected invoice(s) as one PDF; each face starts on its own page."""
    from weasyprint import HTML

    selected = face_module.select_invoices(draft, invoice_index)
    if not selected:
        from app.errors import Problem, ValidationFailed

        raise ValidationFailed(Problem("invoices", "empty", "the draft has no invoice to render"))
    res = resources()
    documents = []
    with _render_lock:
        # One WeasyPrint document per face, so page counters and the repeated preview mark
        # belong to that face alone; the pages are then joined into one PDF.
        for position, _invoice in selected:
            markup = face_module.render_faces(
                draft,
                invoice_index=position,
                standalone=True,
                locale="zh_CN",
                with_decision=False,
                inline_css=False,
            )
            html = HTML(string=str(markup), base_url=res.base_url, url_fetcher=res.url_fetcher)
            documents.append(html.render(font_config=res.font_config, stylesheets=res.stylesheets))
        if len(documents) == 1:
            return documents[0].write_pdf()
        pages = [page for document in documents for page in document.pages]
        return documents[0].copy(pages).write_pdf()
